"""Events and sessions -> OTel signals (opentelemetry-sdk) -> OTLP/HTTP (the OTLP exporter).

Events become points of a delta counter, sessions become spans; the names and
attribute keys come from schema.py, which the forwarder decodes with.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue

from . import schema
from .config import is_loopback_url
from .model import ENGINE, Event, Session

ResourceKey = Tuple[str, str]  # (version, os)
Item = TypeVar("Item", Event, Session)


def build_resource(version: str, os_name: str) -> Resource:
    """Exactly our attributes: Resource() directly, never Resource.create(), which
    would merge detectors and OTEL_RESOURCE_ATTRIBUTES (host, process, user)."""
    return Resource(
        {
            schema.RESOURCE_SERVICE_NAME: schema.SERVICE_NAME,
            schema.RESOURCE_SERVICE_VERSION: version,
            schema.RESOURCE_OS_TYPE: os_name,
            schema.RESOURCE_ENGINE: ENGINE,
        }
    )


def event_attributes(event: Event) -> Dict[str, AttributeValue]:
    attributes: Dict[str, AttributeValue] = {
        schema.EVENT_TYPE: event.kind,
        schema.EVENT_NAME: event.name,
        schema.EVENT_PROMPT_LENGTH: event.prompt_length,
        schema.EVENT_TIMESTAMP: event.timestamp,
        schema.SESSION_ID: event.session_id,
    }
    if event.user_id is not None:
        attributes[schema.USER_ID] = event.user_id
    return attributes


def session_attributes(session: Session) -> Dict[str, AttributeValue]:
    attributes: Dict[str, AttributeValue] = {
        schema.SESSION_ID: session.session_id,
        schema.SESSION_EXIT_REASON: session.exit_reason,
        schema.SESSION_SEGMENT: session.segment,
    }
    if session.user_id is not None:
        attributes[schema.USER_ID] = session.user_id
    for key, value in session.aggregates.as_dict().items():
        attributes[schema.SESSION_AGGREGATE_ATTRIBUTES[key]] = value
    return attributes


def _by_resource(items: Iterable[Item]) -> Dict[ResourceKey, List[Item]]:
    groups: Dict[ResourceKey, List[Item]] = defaultdict(list)
    for item in items:
        groups[(item.version, item.os)].append(item)
    return groups


def events_to_metrics(events: Sequence[Event]) -> List[MetricsData]:
    """One MetricsData per resource; identical events add up to one point of value n."""
    batches = []
    for (version, os_name), group in _by_resource(events).items():
        reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
        provider = MeterProvider(
            resource=build_resource(version, os_name), metric_readers=[reader], shutdown_on_exit=False
        )
        counter = provider.get_meter(schema.SCOPE_NAME).create_counter(
            schema.EVENT_METRIC, unit=schema.EVENT_UNIT, description=schema.EVENT_DESCRIPTION
        )
        for event in group:
            counter.add(1, event_attributes(event))
        data = reader.get_metrics_data()
        provider.shutdown()
        if data is not None:
            batches.append(data)
    return batches


def sessions_to_spans(sessions: Sequence[Session]) -> List[ReadableSpan]:
    spans: List[ReadableSpan] = []
    for (version, os_name), group in _by_resource(sessions).items():
        collected = InMemorySpanExporter()
        provider = TracerProvider(resource=build_resource(version, os_name), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(collected))
        tracer = provider.get_tracer(schema.SCOPE_NAME)
        for session in group:
            span = tracer.start_span(
                schema.SESSION_SPAN, start_time=session.start_ns, attributes=session_attributes(session)
            )
            span.end(end_time=session.end_ns)
        spans.extend(collected.get_finished_spans())
        provider.shutdown()
    return spans


# The collector refusing the content itself: the same records will never be accepted. Other
# client errors (401, 403, 404, ...) say the collector is misconfigured or misnamed: the records
# are kept for when that is fixed.
REFUSED_CONTENT = (400, 413, 422)


@dataclass(frozen=True)
class Answer:
    """What the collector made of one export."""

    accepted: bool
    refused: bool = False  # the content, for good: sending the same again is pointless
    detail: str = ""  # the HTTP status and the start of the collector's message


ACCEPTED = Answer(accepted=True)


class _AnswerKeeper(requests.Session):
    """A requests session that keeps the last HTTP answer: the SDK's exporters report only success or failure."""

    last: Optional[Tuple[int, str]] = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.last = None
        response = super().send(request, **kwargs)
        self.last = (response.status_code, response.text[:200].strip())
        return response


class OtlpSender:
    """The OTLP/HTTP exporters of the SDK, aimed at one collector base URL."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._session = _AnswerKeeper()
        # A company HTTP(S)_PROXY without NO_PROXY would swallow loopback traffic.
        self._session.trust_env = not is_loopback_url(base_url)
        self.base_url = base_url.rstrip("/")
        self._metrics = OTLPMetricExporter(
            endpoint=self.base_url + "/v1/metrics", timeout=timeout, session=self._session
        )
        self._traces = OTLPSpanExporter(endpoint=self.base_url + "/v1/traces", timeout=timeout, session=self._session)

    def send_events(self, events: Sequence[Event]) -> Answer:
        for data in events_to_metrics(events):
            self._session.last = None
            if self._metrics.export(data) != MetricExportResult.SUCCESS:
                return self._failure()
        return ACCEPTED

    def send_sessions(self, sessions: Sequence[Session]) -> Answer:
        spans = sessions_to_spans(sessions)
        self._session.last = None
        if spans and self._traces.export(spans) != SpanExportResult.SUCCESS:
            return self._failure()
        return ACCEPTED

    def _failure(self) -> Answer:
        if self._session.last is None:
            return Answer(accepted=False, detail="no answer")
        status, text = self._session.last
        return Answer(accepted=False, refused=status in REFUSED_CONTENT, detail=f"HTTP {status}: {text}".rstrip(": "))

    def close(self) -> None:
        self._metrics.shutdown()
        self._traces.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
