"""emit.py and the forwarder's decoder share schema.py: event -> OTLP -> event and
session -> OTLP -> session must be identities, through the SDK and the exporter's encoder."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_metrics.emit import events_to_metrics, sessions_to_spans
from otel_metrics.forwarder.decode import events_from_metrics, sessions_from_traces
from otel_metrics.model import EVENT_KINDS, OS_NAMES, Event, Session, SessionAggregates

SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)
NAMES = st.lists(SEGMENT, min_size=1, max_size=3).map(":".join)
IDS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
USER_IDS = st.none() | st.uuids().map(str)
VERSIONS = st.from_regex(r"[0-9]+\.[0-9]+\.[0-9]+", fullmatch=True)
SECONDS = st.integers(min_value=0, max_value=4102444800)  # up to 2100
COUNTS = st.integers(min_value=0, max_value=2**31 - 1)

EVENTS = st.builds(
    Event,
    kind=st.sampled_from(EVENT_KINDS),
    name=NAMES,
    prompt_length=COUNTS,
    session_id=IDS,
    timestamp=SECONDS,
    user_id=USER_IDS,
    version=VERSIONS,
    os=st.sampled_from(OS_NAMES),
)


@st.composite
def sessions(draw) -> Session:
    start = draw(SECONDS) * 10**9 + draw(st.integers(0, 10**9 - 1))
    return Session(
        session_id=draw(IDS),
        user_id=draw(USER_IDS),
        exit_reason=draw(st.sampled_from(["clear", "logout", "prompt_input_exit", "other"])),
        start_ns=start,
        end_ns=start + draw(st.integers(0, 10**14)),
        version=draw(VERSIONS),
        os=draw(st.sampled_from(OS_NAMES)),
        aggregates=draw(st.builds(SessionAggregates, **{k: COUNTS for k in SessionAggregates.__dataclass_fields__})),
    )


def through_otlp_metrics(events: list) -> list:
    decoded = []
    for data in events_to_metrics(events):
        wire = encode_metrics(data).SerializeToString()
        result = events_from_metrics(ExportMetricsServiceRequest.FromString(wire))
        assert result.rejected == 0, result.errors
        decoded.extend(result.events)
    return decoded


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENTS, max_size=8))
def test_events_survive_otlp(events: list) -> None:
    assert Counter(through_otlp_metrics(events)) == Counter(events)


@settings(max_examples=50, deadline=None)
@given(EVENTS, st.integers(2, 5))
def test_identical_events_stay_distinct_events(event: Event, copies: int) -> None:
    assert through_otlp_metrics([event] * copies) == [event] * copies


@settings(max_examples=150, deadline=None)
@given(st.lists(sessions(), max_size=5))
def test_sessions_survive_otlp(sessions_in: list) -> None:
    spans = sessions_to_spans(sessions_in)
    wire = encode_spans(spans).SerializeToString() if spans else b""
    result = sessions_from_traces(ExportTraceServiceRequest.FromString(wire))
    assert result.rejected == 0, result.errors
    assert Counter(result.sessions) == Counter(sessions_in)
