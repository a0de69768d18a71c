"""OTLP export requests -> events and sessions: the exact inverse of emit.py.

A point or span that names our metric or span but is malformed, or whose legacy
payload the endpoint would refuse, is rejected alone (OTLP partial success); the
rest of the request stands. Each item's payload text is rendered here, once
(payloads.py), and is what the outbox keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, NumberDataPoint
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .. import limits, schema
from ..model import AGGREGATE_KEYS, ENGINE, TOKEN_KEYS, Event, Session, SessionAggregates
from ..payloads import Refused, event_text, session_text

MAX_ERRORS_REPORTED = 10  # in one partial-success message
EVENTS = "events"  # the endpoint's paths, as the outbox keeps them
SESSIONS = "sessions"


class Malformed(ValueError):
    """One point or span names our metric or span but does not carry what it must."""


@dataclass
class Decoded:
    """What a request holds for us: payloads to deliver, and what was left out.

    A data point of value n stands for n identical events: it is kept once, with its
    count, and becomes n payloads only as the outbox writes them.
    """

    event_points: List[Tuple[Event, int, str]] = field(default_factory=list)  # (event, count, payload text)
    session_payloads: List[Tuple[Session, str]] = field(default_factory=list)  # (session, payload text)
    rejected: int = 0  # data points or spans that named ours but were malformed
    errors: List[str] = field(default_factory=list)
    ignored: int = 0  # other metrics and spans (not ours): accepted and dropped

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

    @property
    def sessions(self) -> List[Session]:
        return [session for session, _ in self.session_payloads]

    def payloads(self) -> List[Tuple[str, str, int]]:
        """(endpoint path, payload text, copies) in request order, events first: what the outbox adds."""
        return [(EVENTS, text, count) for _, count, text in self.event_points if count] + [
            (SESSIONS, text, 1) for _, text in self.session_payloads
        ]

    def payload_count(self) -> int:
        return self.event_count + len(self.session_payloads)

    def error_message(self) -> str:
        shown = "; ".join(self.errors[:MAX_ERRORS_REPORTED])
        more = len(self.errors) - MAX_ERRORS_REPORTED
        return shown + (f"; and {more} more" if more > 0 else "")


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


def _decode_event_metric(decoded: Decoded, resource: Resource, metric: Metric) -> None:
    kind = metric.WhichOneof("data")
    if kind != "sum" or metric.sum.aggregation_temporality != AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA:
        points = getattr(metric, kind).data_points if kind else []
        for _ in points:
            # A cumulative or gauge value is not a count of new events: counting it would invent some.
            decoded.reject(schema.EVENT_METRIC, "must be a Sum with delta temporality")
        return
    for index, point in enumerate(metric.sum.data_points):
        try:
            event = _event_from_point(resource, point)
            text = event_text(event)
            count = _event_count(point)
        except (Malformed, Refused) as problem:
            decoded.reject(f"{schema.EVENT_METRIC} data point {index}", str(problem))
            continue
        decoded.event_points.append((event, count, text))  # n identical events stay n events


def _event_from_point(resource: Resource, point: NumberDataPoint) -> Event:
    version, os_name = _resource_identity(resource)
    attributes = _attribute_map(point.attributes)
    return Event(
        kind=_string(attributes, schema.EVENT_TYPE),
        name=_string(attributes, schema.EVENT_NAME),
        prompt_length=_int(attributes, schema.EVENT_PROMPT_LENGTH),
        session_id=_string(attributes, schema.SESSION_ID),
        timestamp=_int(attributes, schema.EVENT_TIMESTAMP),
        user_id=_optional_string(attributes, schema.USER_ID),
        version=version,
        os=os_name,
    )


def _event_count(point: NumberDataPoint) -> int:
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
                    session = _session_from_span(resource_spans.resource, span)
                    text = session_text(session)
                except (Malformed, Refused) as problem:
                    decoded.reject(f"{schema.SESSION_SPAN} span", str(problem))
                    continue
                decoded.session_payloads.append((session, text))
    return decoded


def _session_from_span(resource: Resource, span: Span) -> Session:
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
    return Session(
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


def _attribute_map(key_values: Iterable[KeyValue]) -> Dict[str, AnyValue]:
    return {kv.key: kv.value for kv in key_values}


def _string(attributes: Dict[str, AnyValue], key: str, what: str = "attribute") -> str:
    value = attributes.get(key)
    if value is None:
        raise Malformed(f"missing {what} {key}")
    if value.WhichOneof("value") != "string_value":
        raise Malformed(f"{what} {key} must be a string")
    return value.string_value


def _optional_string(attributes: Dict[str, AnyValue], key: str) -> Optional[str]:
    return _string(attributes, key) if key in attributes else None


def _int(attributes: Dict[str, AnyValue], key: str, default: Optional[int] = None) -> int:
    value = attributes.get(key)
    if value is None:
        if default is None:
            raise Malformed(f"missing attribute {key}")
        return default
    if value.WhichOneof("value") != "int_value":
        raise Malformed(f"attribute {key} must be an integer")
    return value.int_value
