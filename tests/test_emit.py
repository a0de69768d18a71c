"""Events and sessions -> the real OTel SDK (emit.py) -> OTLP, protobuf or JSON -> the forwarder's decoder:
the identity, on any valid event or session (hypothesis), whatever the SDK adds up on the way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, List

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_metrics.emit import events_to_metrics, sessions_to_spans
from otel_metrics.forwarder.decode import events_from_metrics, sessions_from_traces
from otel_metrics.forwarder.wire import JSON, PROTOBUF, parse
from otel_metrics.model import Event, Session
from support.model_strategies import events, sessions


def through_the_wire(request: Any, encoding: str) -> Any:
    body = request.SerializeToString() if encoding == PROTOBUF else json_format.MessageToJson(request).encode()
    return parse(type(request), body, encoding)


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=1, max_size=6), st.sampled_from([PROTOBUF, JSON]))
def test_event_to_otlp_to_event_is_the_identity(sent: List[Event], encoding: str) -> None:
    received: List[Event] = []
    for data in events_to_metrics(sent):
        decoded = events_from_metrics(through_the_wire(encode_metrics(data), encoding))
        assert (decoded.rejected, decoded.errors) == (0, [])
        received.extend(decoded.events)
    assert Counter(received) == Counter(sent)


@settings(max_examples=30, deadline=None)
@given(events(), st.integers(2, 5))
def test_identical_events_stay_distinct_events(event: Event, copies: int) -> None:
    """The SDK adds identical points up; the decoder turns a value of n back into n events."""
    [data] = events_to_metrics([event] * copies)
    assert events_from_metrics(through_the_wire(encode_metrics(data), PROTOBUF)).events == [event] * copies


@settings(max_examples=60, deadline=None)
@given(st.lists(sessions(), min_size=1, max_size=4), st.sampled_from([PROTOBUF, JSON]))
def test_session_to_otlp_to_session_is_the_identity(sent: List[Session], encoding: str) -> None:
    decoded = sessions_from_traces(through_the_wire(encode_spans(sessions_to_spans(sent)), encoding))
    assert (decoded.rejected, decoded.errors) == (0, [])
    assert Counter(decoded.sessions) == Counter(sent)
