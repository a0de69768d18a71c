"""OTLP -> events and sessions: the forwarder's decoder on its own (forwarder/decode.py).

Requests are built field by field with the opentelemetry-proto classes (support.otlp_requests),
so that every malformed point, span and resource can be sent; each is rejected alone, with what is wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, Sum

from otel_metrics import limits, schema
from otel_metrics.forwarder.decode import events_from_metrics, sessions_from_traces
from otel_metrics.model import SessionAggregates
from otel_metrics.payloads import session_payload
from support.otlp_requests import (
    COMMAND,
    COMMAND_EVENT,
    CUMULATIVE,
    DELTA,
    OTHER_SPAN,
    RESOURCE,
    SESSION,
    SKILL,
    SKILL_EVENT,
    event_metric,
    key_values,
    metrics_request,
    point,
    session_attributes,
    session_span,
    traces_request,
    with_,
    without,
)

# The decoder on its own.


def test_a_point_of_value_n_is_n_events_never_deduplicated() -> None:
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND, 2), point(SKILL))))
    assert decoded.events == [COMMAND_EVENT, COMMAND_EVENT, SKILL_EVENT]
    assert (decoded.rejected, decoded.errors, decoded.ignored) == (0, [], 0)


def test_a_double_value_counts_when_whole() -> None:
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND, 2.0), point(SKILL, 0))))
    assert decoded.events == [COMMAND_EVENT, COMMAND_EVENT]
    assert decoded.rejected == 0


def test_a_span_is_a_session_with_full_precision_times() -> None:
    decoded = sessions_from_traces(traces_request(session_span(session_attributes())))
    assert decoded.sessions == [SESSION]


def test_the_segment_says_which_run_of_the_session_a_span_covers() -> None:
    """Absent (senders before segments) it is the first run; the legacy payload never carries it."""
    resumed = dataclasses.replace(SESSION, segment=3)
    older_sender = session_span(without(session_attributes(), schema.SESSION_SEGMENT))
    decoded = sessions_from_traces(traces_request(session_span(session_attributes(resumed)), older_sender))
    assert decoded.sessions == [resumed, SESSION]
    assert session_payload(resumed) == session_payload(SESSION)


def test_missing_token_attributes_are_zero() -> None:
    values = session_attributes()
    for key in ("total_output_tokens", "cache_creation_tokens", "total_input_tokens", "cache_read_tokens"):
        values = without(values, schema.SESSION_AGGREGATE_ATTRIBUTES[key])
    [session] = sessions_from_traces(traces_request(session_span(values))).sessions
    assert session.aggregates == SessionAggregates(
        **{**SESSION.aggregates.as_dict(), "total_output_tokens": 0, "cache_creation_tokens": 0}
    )


def test_other_metrics_and_spans_are_ignored() -> None:
    other = Metric(name="claude_code.cost.usage", sum=Sum(data_points=[point(COMMAND)], aggregation_temporality=DELTA))
    decoded = events_from_metrics(metrics_request(other, event_metric(point(SKILL))))
    assert (decoded.events, decoded.rejected, decoded.ignored) == ([SKILL_EVENT], 0, 1)
    decoded = sessions_from_traces(traces_request(OTHER_SPAN))
    assert (decoded.sessions, decoded.rejected, decoded.ignored) == ([], 0, 1)


NOT_AN_INT = "attribute plugin_usage.event.prompt_length must be an integer"
NOT_A_NAME = "name must be a command or skill name like 'jira:solve'"
REJECTED_POINTS = [
    (point(without(COMMAND, schema.SESSION_ID)), "missing attribute session.id"),
    (point(with_(COMMAND, schema.EVENT_PROMPT_LENGTH, "42")), NOT_AN_INT),
    (point(with_(COMMAND, schema.EVENT_PROMPT_LENGTH, True)), NOT_AN_INT),
    (point(with_(COMMAND, schema.EVENT_NAME, 7)), "attribute plugin_usage.event.name must be a string"),
    (point(with_(COMMAND, schema.EVENT_TYPE, "prompt")), "type must be one of: slash_command, skill"),
    (point(with_(COMMAND, schema.EVENT_NAME, "/usr/bin/tool")), NOT_A_NAME),
    (point(with_(COMMAND, schema.EVENT_TIMESTAMP, 10**12)), "unix time 1000000000000 is outside the years 1000..9999"),
    (point(COMMAND, 1.5), "the value must be a whole number of events"),
    (point(COMMAND, -1), "the value must not be negative"),
    (NumberDataPoint(attributes=key_values(COMMAND)), "the value must be a whole number of events"),
]  # fmt: skip


@pytest.mark.parametrize("bad_point, problem", REJECTED_POINTS)
def test_a_malformed_point_is_rejected_alone(bad_point: NumberDataPoint, problem: str) -> None:
    decoded = events_from_metrics(metrics_request(event_metric(point(SKILL), bad_point)))
    assert decoded.events == [SKILL_EVENT]
    assert (decoded.rejected, decoded.errors) == (1, [f"plugin_usage.events data point 1: {problem}"])


@pytest.mark.parametrize(
    "resource, problem",
    [
        (without(RESOURCE, schema.RESOURCE_SERVICE_VERSION), "missing resource attribute service.version"),
        (with_(RESOURCE, schema.RESOURCE_OS_TYPE, "freebsd"), "os must be one of: darwin, linux, windows"),
        (with_(RESOURCE, schema.RESOURCE_ENGINE, "cursor"), "resource attribute plugin_usage.engine must be 'claude'"),
    ],
)
def test_the_resource_must_say_version_and_os(resource: Dict[str, Any], problem: str) -> None:
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND)), resource=resource))
    assert (decoded.events, decoded.errors) == ([], [f"plugin_usage.events data point 0: {problem}"])


def test_only_delta_sums_are_counts_of_events() -> None:
    gauge = Metric(name=schema.EVENT_METRIC, gauge=Gauge(data_points=[point(COMMAND), point(SKILL)]))
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND), temporality=CUMULATIVE), gauge))
    assert decoded.events == []
    assert decoded.rejected == 3
    assert set(decoded.errors) == {"plugin_usage.events: must be a Sum with delta temporality"}


@pytest.mark.parametrize(
    "values, times, problem",
    [
        (without(session_attributes(), schema.SESSION_ID), None, "missing attribute session.id"),
        (without(session_attributes(), "plugin_usage.session.turn_count"), None,
         "missing attribute plugin_usage.session.turn_count"),
        (with_(session_attributes(), "plugin_usage.session.had_errors", True), None, None),  # unknown: ignored
        (with_(session_attributes(), "gen_ai.usage.input_tokens", -3), None,
         "attribute gen_ai.usage.input_tokens must not be negative"),
        (with_(session_attributes(), "plugin_usage.session.turn_count", 2.0), None,
         "attribute plugin_usage.session.turn_count must be an integer"),
        (session_attributes(), (20, 10), "the span ends before it starts"),
        (with_(session_attributes(), schema.SESSION_SEGMENT, -1), None,
         "attribute plugin_usage.session.segment must not be negative"),
        (with_(session_attributes(), schema.SESSION_SEGMENT, "1"), None,
         "attribute plugin_usage.session.segment must be an integer"),
    ],
)  # fmt: skip
def test_a_malformed_span_is_rejected_alone(
    values: Dict[str, Any], times: Optional[Tuple[int, int]], problem: Optional[str]
) -> None:
    span = session_span(values) if times is None else session_span(values, *times)
    decoded = sessions_from_traces(traces_request(session_span(session_attributes()), span))
    if problem is None:
        assert decoded.sessions == [SESSION, SESSION]
    else:
        assert decoded.sessions == [SESSION]
        assert (decoded.rejected, decoded.errors) == (1, [f"plugin_usage.session span: {problem}"])


# Bounds: what one request may cost.


def test_a_point_stands_for_at_most_the_events_of_one_export() -> None:
    """A hook fires once per event, and an exporter sends at most limits.EVENTS_PER_EXPORT at a time."""
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND, 500), point(SKILL, 501),
                                                               point(SKILL, 2**62))))  # fmt: skip
    assert decoded.event_count == 500
    assert decoded.events == [COMMAND_EVENT] * 500
    assert decoded.errors == [
        "plugin_usage.events data point 1: the value 501 is more events than one export holds (500)",
        "plugin_usage.events data point 2: the value 4611686018427387904 is more events than one export holds (500)",
    ]


def test_a_payload_larger_than_the_endpoint_takes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field is bounded, so no payload comes near the limit; were a bound raised, the door still holds."""
    monkeypatch.setattr(limits, "PAYLOAD_MAX_BYTES", 300)
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND), point(SKILL))))
    assert decoded.events == [SKILL_EVENT]  # 258 bytes
    assert decoded.errors == [
        "plugin_usage.events data point 0: the payload would be 308 bytes, more than the endpoint takes (300)"
    ]
