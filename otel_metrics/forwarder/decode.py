"""OTLP export requests -> events and sessions: the exact inverse of emit.py.

Messages are parsed by opentelemetry-proto (protobuf) and protobuf's json_format
(OTLP/JSON), never by hand. A point or span that names our metric or span but is
malformed is rejected alone (OTLP partial success); the rest of the request stands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import limits, schema, strict_json
from ..model import AGGREGATE_KEYS, ENGINE, TOKEN_KEYS, Event, Session, SessionAggregates
from ..payloads import (
    event_payload,
    payload_text,
    session_payload,
    validate_event_payload,
    validate_session_payload,
)

PROTOBUF = "protobuf"
JSON = "json"
MAX_ERRORS_REPORTED = 10  # in one partial-success message


class BadRequest(ValueError):
    """The body is not an OTLP export request at all (the whole request fails)."""


class Malformed(ValueError):
    """One point or span names our metric or span but does not carry what it must."""


@dataclass
class Decoded:
    """What a request holds for us: payloads to deliver, and what was left out.

    A data point of value n stands for n identical events: it is kept once, with its
    count, and becomes n payloads only as the outbox writes them.
    """

    event_points: List[Tuple[Event, int, Dict[str, Any]]] = field(default_factory=list)  # (event, count, payload)
    sessions: List[Session] = field(default_factory=list)
    rejected: int = 0  # data points or spans that named ours but were malformed
    errors: List[str] = field(default_factory=list)
    ignored: int = 0  # other metrics and spans (not ours): accepted and dropped
    # The legacy payload of each session, built once (when it was checked).
    session_payloads: List[Dict[str, Any]] = field(default_factory=list)

    def reject(self, where: str, problem: str) -> None:
        self.rejected += 1
        self.errors.append(f"{where}: {problem}")

    @property
    def events(self) -> List[Event]:
        """Every event, n identical ones for a point of value n."""
        return [event for event, count, _ in self.event_points for _ in range(count)]

    @property
    def event_count(self) -> int:
        return sum(count for _, count, _ in self.event_points)

    def payloads(self) -> List[Tuple[str, Dict[str, Any], int]]:
        """(endpoint name, legacy payload, copies) in request order, events first."""
        return [("events", p, count) for _, count, p in self.event_points if count] + [
            ("sessions", p, 1) for p in self.session_payloads
        ]

    def payload_count(self) -> int:
        return self.event_count + len(self.session_payloads)

    def error_message(self) -> str:
        shown = "; ".join(self.errors[:MAX_ERRORS_REPORTED])
        more = len(self.errors) - MAX_ERRORS_REPORTED
        return shown + (f"; and {more} more" if more > 0 else "")


def parse(message_class: Type[Message], body: bytes, encoding: str) -> Message:
    message = message_class()
    try:
        if encoding == PROTOBUF:
            message.ParseFromString(body)
        else:
            document = strict_json.loads(body)
            if not isinstance(document, dict):  # json_format would take `[]` for an empty message
                raise ValueError("the JSON body must be an object")
            # OTLP/JSON writes trace and span ids in hex where proto3 JSON wants
            # base64; both are valid base64 text, and the ids are not used here.
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, RecursionError) as error:
        raise BadRequest(f"not an OTLP/{encoding} {message_class.__name__}: {error}") from error
    return message


def serialize(message: Message, encoding: str) -> bytes:
    if encoding == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode("utf-8")


def status(code: int, text: str) -> status_pb2.Status:
    """The body of an OTLP/HTTP error response (google.rpc.Status)."""
    return status_pb2.Status(code=code, message=text)


# Metrics -> events.


def events_from_metrics(request: ExportMetricsServiceRequest) -> Decoded:
    decoded = Decoded()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == schema.EVENT_METRIC:
                    _decode_event_metric(decoded, resource_metrics.resource, metric)
                else:
                    decoded.ignored += 1
    return decoded


def _decode_event_metric(decoded: Decoded, resource: Resource, metric: Any) -> None:
    kind = metric.WhichOneof("data")
    if kind != "sum" or metric.sum.aggregation_temporality != AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA:
        points = getattr(metric, kind).data_points if kind else []
        for _ in points:
            # A cumulative or gauge value is not a count of new events: counting it would invent some.
            decoded.reject(schema.EVENT_METRIC, "must be a Sum with delta temporality")
        return
    for index, point in enumerate(metric.sum.data_points):
        try:
            event, count, payload = _event_from_point(resource, point)
        except Malformed as problem:
            decoded.reject(f"{schema.EVENT_METRIC} data point {index}", str(problem))
            continue
        decoded.event_points.append((event, count, payload))  # n identical events stay n events


def _event_from_point(resource: Resource, point: Any) -> Tuple[Event, int, Dict[str, Any]]:
    version, os_name = _resource_identity(resource)
    attributes = _attribute_map(point.attributes)
    event = Event(
        kind=_string(attributes, schema.EVENT_TYPE),
        name=_string(attributes, schema.EVENT_NAME),
        prompt_length=_int(attributes, schema.EVENT_PROMPT_LENGTH),
        session_id=_string(attributes, schema.SESSION_ID),
        timestamp=_int(attributes, schema.EVENT_TIMESTAMP),
        user_id=_optional_string(attributes, schema.USER_ID),
        version=version,
        os=os_name,
    )
    payload = _checked_payload(event_payload, validate_event_payload, event)
    return event, _event_count(point), payload


def _event_count(point: Any) -> int:
    which = point.WhichOneof("value")
    if which == "as_int":
        value = point.as_int
    elif which == "as_double" and math.isfinite(point.as_double) and point.as_double.is_integer():
        value = int(point.as_double)
    else:
        raise Malformed("the value must be a whole number of events")
    if value < 0:
        raise Malformed("the value must not be negative")
    if value > limits.EVENTS_PER_EXPORT:
        # A hook fires once per event and an exporter sends at most this many records at a time.
        raise Malformed(f"the value {value} is more events than one export holds ({limits.EVENTS_PER_EXPORT})")
    return value


# Traces -> sessions.


def sessions_from_traces(request: ExportTraceServiceRequest) -> Decoded:
    decoded = Decoded()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.name != schema.SESSION_SPAN:
                    decoded.ignored += 1
                    continue
                try:
                    session, payload = _session_from_span(resource_spans.resource, span)
                except Malformed as problem:
                    decoded.reject(f"{schema.SESSION_SPAN} span", str(problem))
                    continue
                decoded.sessions.append(session)
                decoded.session_payloads.append(payload)
    return decoded


def _session_from_span(resource: Resource, span: Any) -> Tuple[Session, Dict[str, Any]]:
    version, os_name = _resource_identity(resource)
    attributes = _attribute_map(span.attributes)
    counts = {}
    for key in AGGREGATE_KEYS:
        attribute = schema.SESSION_AGGREGATE_ATTRIBUTES[key]
        value = _int(attributes, attribute, default=0 if key in TOKEN_KEYS else None)
        if value < 0:
            raise Malformed(f"attribute {attribute} must not be negative")
        counts[key] = value
    if span.end_time_unix_nano < span.start_time_unix_nano:
        raise Malformed("the span ends before it starts")
    segment = _int(attributes, schema.SESSION_SEGMENT, default=0)  # senders before segments: a first run
    if segment < 0:
        raise Malformed(f"attribute {schema.SESSION_SEGMENT} must not be negative")
    session = Session(
        session_id=_string(attributes, schema.SESSION_ID),
        user_id=_optional_string(attributes, schema.USER_ID),
        exit_reason=_string(attributes, schema.SESSION_EXIT_REASON),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        version=version,
        os=os_name,
        aggregates=SessionAggregates(**counts),
        segment=segment,
    )
    return session, _checked_payload(session_payload, validate_session_payload, session)


# Attributes.


def _resource_identity(resource: Resource) -> Tuple[str, str]:
    """(plugin version, os) from the resource, which emit.py builds explicitly."""
    attributes = _attribute_map(resource.attributes)
    engine = _optional_string(attributes, schema.RESOURCE_ENGINE)
    if engine not in (None, ENGINE):
        raise Malformed(f"resource attribute {schema.RESOURCE_ENGINE} must be {ENGINE!r}")
    return (
        _string(attributes, schema.RESOURCE_SERVICE_VERSION, "resource attribute"),
        _string(attributes, schema.RESOURCE_OS_TYPE, "resource attribute"),
    )


def _attribute_map(key_values: List[KeyValue]) -> Dict[str, Any]:
    return {kv.key: kv.value for kv in key_values}


def _string(attributes: Dict[str, Any], key: str, what: str = "attribute") -> str:
    value = attributes.get(key)
    if value is None:
        raise Malformed(f"missing {what} {key}")
    if value.WhichOneof("value") != "string_value":
        raise Malformed(f"{what} {key} must be a string")
    return value.string_value


def _optional_string(attributes: Dict[str, Any], key: str) -> Optional[str]:
    return _string(attributes, key) if key in attributes else None


def _int(attributes: Dict[str, Any], key: str, default: Optional[int] = None) -> int:
    value = attributes.get(key)
    if value is None:
        if default is None:
            raise Malformed(f"missing attribute {key}")
        return default
    if value.WhichOneof("value") != "int_value":
        raise Malformed(f"attribute {key} must be an integer")
    return value.int_value


def _checked_payload(
    build: Callable[[Any], Dict[str, Any]], validate: Callable[[Any], List[str]], item: Any
) -> Dict[str, Any]:
    """The item's payload; refuse here what the endpoint would refuse later, so the sender hears about it."""
    try:
        payload = build(item)
        problems = validate(payload)
    except ValueError as error:  # e.g. a timestamp outside the years 1000..9999
        raise Malformed(str(error)) from error
    if problems:
        raise Malformed("; ".join(problems))
    size = len(payload_text(payload))  # ASCII: characters are bytes
    if size > limits.PAYLOAD_MAX_BYTES:
        raise Malformed(f"the payload would be {size} bytes, more than the endpoint takes ({limits.PAYLOAD_MAX_BYTES})")
    return payload


# The OTLP/HTTP paths we serve.


@dataclass(frozen=True)
class Signal:
    path: str
    request: Type[Message]
    response: Type[Message]
    rejected_field: str  # of the response's partial_success
    decode: Callable[[Any], Decoded]

    def response_for(self, decoded: Decoded) -> Message:
        """Empty on full success; partial_success filled when something was rejected."""
        response = self.response()
        if decoded.errors:
            setattr(response.partial_success, self.rejected_field, decoded.rejected)
            response.partial_success.error_message = decoded.error_message()
        return response


METRICS = Signal(
    "/v1/metrics",
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    "rejected_data_points",
    events_from_metrics,
)
TRACES = Signal(
    "/v1/traces", ExportTraceServiceRequest, ExportTraceServiceResponse, "rejected_spans", sessions_from_traces
)
SIGNALS = {signal.path: signal for signal in (METRICS, TRACES)}
