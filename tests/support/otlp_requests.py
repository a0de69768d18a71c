"""OTLP requests as tests build them, and their attributes both ways.

Built from the opentelemetry-proto classes, field by field (`metrics_request`, `traces_request` and
their parts), so that a test can send what no SDK would; or made by the OTel SDK from model objects,
as the hooks' exporter makes them (`otlp_metrics`, `post_metrics`). The samples (COMMAND, SKILL and
SESSION, as attributes and as the model objects they decode to) are what the decoder tests start from.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import requests
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_metrics import schema
from otel_metrics.emit import events_to_metrics
from otel_metrics.model import Event, Session, SessionAggregates
from support.raw_http import loopback_session

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
USER = "550e8400-e29b-41d4-a716-446655440000"
RESOURCE = {
    schema.RESOURCE_SERVICE_NAME: schema.SERVICE_NAME,
    schema.RESOURCE_SERVICE_VERSION: "1.0",
    schema.RESOURCE_OS_TYPE: "linux",
    schema.RESOURCE_ENGINE: "claude",
}
COMMAND = {
    schema.EVENT_TYPE: "slash_command",
    schema.EVENT_NAME: "jira:solve",
    schema.EVENT_PROMPT_LENGTH: 42,
    schema.EVENT_TIMESTAMP: 1761827696,
    schema.SESSION_ID: "abc123",
    schema.USER_ID: USER,
}
SKILL = {
    schema.EVENT_TYPE: "skill",
    schema.EVENT_NAME: "pdf",
    schema.EVENT_PROMPT_LENGTH: 0,
    schema.EVENT_TIMESTAMP: 1761827697,
    schema.SESSION_ID: "abc123",
}
COMMAND_EVENT = Event("slash_command", "jira:solve", 42, "abc123", 1761827696, USER, "1.0", "linux")
SKILL_EVENT = Event("skill", "pdf", 0, "abc123", 1761827697, None, "1.0", "linux")
SESSION = Session(
    "abc123", USER, "prompt_input_exit", 1761827000_500000000, 1761827696_100000000, "1.0", "linux",
    SessionAggregates(turn_count=2, user_message_count=2, assistant_message_count=3, total_tool_calls=4,
                      tool_error_count=1, bash_call_count=2, file_read_count=1, grep_call_count=1,
                      total_output_tokens=120, cache_creation_tokens=7),
)  # fmt: skip
OTHER_SPAN = Span(name="claude_code.tool", start_time_unix_nano=1, end_time_unix_nano=2)


# Attributes, both ways.


def key_values(values: Dict[str, Any]) -> List[KeyValue]:
    """A dict as OTLP attributes (bool, int, float or string values)."""

    def any_value(value: Any) -> AnyValue:
        if isinstance(value, bool):
            return AnyValue(bool_value=value)
        if isinstance(value, int):
            return AnyValue(int_value=value)
        if isinstance(value, float):
            return AnyValue(double_value=value)
        return AnyValue(string_value=value)

    return [KeyValue(key=key, value=any_value(value)) for key, value in values.items()]


def attribute_values(pairs: List[KeyValue]) -> Dict[str, Any]:
    """OTLP attributes as a dict (a value that is not set: None)."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out


def without(values: Dict[str, Any], key: str) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if k != key}


def with_(values: Dict[str, Any], key: str, value: Any) -> Dict[str, Any]:
    return {**values, key: value}


# Requests from the proto classes.


def point(values: Dict[str, Any], count: Any = 1) -> NumberDataPoint:
    value = {"as_double": count} if isinstance(count, float) else {"as_int": count}
    return NumberDataPoint(attributes=key_values(values), time_unix_nano=1761827700_000000000, **value)


def event_metric(*points: NumberDataPoint, temporality: int = DELTA) -> Metric:
    data = Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True)
    return Metric(name=schema.EVENT_METRIC, unit=schema.EVENT_UNIT, sum=data)


def metrics_request(*metrics: Metric, resource: Optional[Dict[str, Any]] = None) -> ExportMetricsServiceRequest:
    resource_attributes = key_values(RESOURCE if resource is None else resource)
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=resource_attributes), scope_metrics=[ScopeMetrics(metrics=metrics)]
            )
        ]
    )


def session_attributes(session: Session = SESSION) -> Dict[str, Any]:
    values: Dict[str, Any] = {
        schema.SESSION_ID: session.session_id,
        schema.SESSION_EXIT_REASON: session.exit_reason,
        schema.SESSION_SEGMENT: session.segment,
    }
    if session.user_id is not None:
        values[schema.USER_ID] = session.user_id
    for key, value in session.aggregates.as_dict().items():
        values[schema.SESSION_AGGREGATE_ATTRIBUTES[key]] = value
    return values


def session_span(values: Dict[str, Any], start: int = SESSION.start_ns, end: int = SESSION.end_ns) -> Span:
    return Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name=schema.SESSION_SPAN,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=key_values(values),
    )


def traces_request(*spans: Span, resource: Optional[Dict[str, Any]] = None) -> ExportTraceServiceRequest:
    resource_attributes = key_values(RESOURCE if resource is None else resource)
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=Resource(attributes=resource_attributes), scope_spans=[ScopeSpans(spans=spans)])
        ]
    )


# Requests made by the OTel SDK, as the hooks' exporter makes them.


def otlp_metrics(*events: Event) -> bytes:
    """The events as one OTLP/protobuf metrics request, the SDK's own encoding."""
    [data] = events_to_metrics(events)  # one resource: one request
    return encode_metrics(data).SerializeToString()


def post_metrics(url: str, *events: Event) -> requests.Response:
    """POST the events to an OTLP/HTTP receiver's /v1/metrics (url: its base URL)."""
    with loopback_session() as http:
        return http.post(
            f"{url}/v1/metrics", data=otlp_metrics(*events), headers={"Content-Type": PROTOBUF_TYPE}, timeout=10
        )
