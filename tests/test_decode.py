"""OTLP -> events and sessions -> outbox: decoding and the receiver's HTTP answers.

Requests are built with the opentelemetry-proto classes (or by the OTel SDK and
emit.py for the round trips) and sent over real loopback HTTP to an in-process
receiver; what it queued is read back from its outbox.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, Sum

from otel_metrics import limits, schema
from otel_metrics.emit import events_to_metrics, sessions_to_spans
from otel_metrics.forwarder.decode import events_from_metrics, sessions_from_traces
from otel_metrics.forwarder.outbox import Outbox
from otel_metrics.forwarder.receiver import OtlpReceiver
from otel_metrics.forwarder.wire import JSON, PROTOBUF, parse
from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.payloads import event_payload, session_payload
from support.model_strategies import events, sessions
from support.otlp_requests import (
    COMMAND,
    COMMAND_EVENT,
    CUMULATIVE,
    DELTA,
    JSON_TYPE,
    OTHER_SPAN,
    PROTOBUF_TYPE,
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
from support.raw_http import loopback_session

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


# Round trips through the real SDK (emit.py) and the wire formats.


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


# The receiver over HTTP.


class Receiver:
    def __init__(self, directory: Path, max_body_bytes: int, max_items: int) -> None:
        self.outbox = Outbox(str(directory / "outbox.sqlite"), max_items=max_items)
        self.server = OtlpReceiver("127.0.0.1", 0, self.outbox, max_body_bytes)
        self.url = f"http://127.0.0.1:{self.server.address[1]}"
        self.server.start()
        self.http = loopback_session()

    def post(self, path: str, body: Any, content_type: str, **headers: str) -> requests.Response:
        headers = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
        return self.http.post(self.url + path, data=body, headers=headers, timeout=10)

    def queued(self) -> List[Tuple[str, Dict[str, Any]]]:
        return [(item.path, json.loads(item.body)) for item in self.outbox.oldest(10_000)]

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.outbox.close()


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    started: List[Receiver] = []

    def start(max_body_bytes: int = 64 * 1024, max_items: int = 1000) -> Receiver:
        receiver = Receiver(tmp_path / str(len(started)), max_body_bytes, max_items)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def receiver(start_receiver: Callable[..., Receiver]) -> Receiver:
    return start_receiver()


EVENT_PAYLOADS = [("events", event_payload(COMMAND_EVENT))] * 2 + [("events", event_payload(SKILL_EVENT))]
METRICS = metrics_request(event_metric(point(COMMAND, 2), point(SKILL)))


def test_protobuf_metrics_are_queued_as_event_payloads(receiver: Receiver) -> None:
    response = receiver.post("/v1/metrics", METRICS.SerializeToString(), PROTOBUF_TYPE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == PROTOBUF_TYPE
    assert ExportMetricsServiceResponse.FromString(response.content) == ExportMetricsServiceResponse()
    assert receiver.queued() == EVENT_PAYLOADS


def test_protobuf_traces_are_queued_as_session_payloads(receiver: Receiver) -> None:
    request = traces_request(session_span(session_attributes()), OTHER_SPAN)
    response = receiver.post("/v1/traces", request.SerializeToString(), PROTOBUF_TYPE)
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    assert receiver.queued() == [("sessions", session_payload(SESSION))]


def test_the_same_event_sent_twice_is_queued_twice(receiver: Receiver) -> None:
    body = metrics_request(event_metric(point(SKILL))).SerializeToString()
    assert [receiver.post("/v1/metrics", body, PROTOBUF_TYPE).status_code for _ in range(2)] == [200, 200]
    assert receiver.queued() == [("events", event_payload(SKILL_EVENT))] * 2


# OTLP/JSON as the specification writes it: lowerCamelCase, hex ids, int64 as strings, enums as numbers.
OTLP_JSON_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "claude-plugin-metrics"}},
            {"key": "service.version", "value": {"stringValue": "2.0.1"}},
            {"key": "os.type", "value": {"stringValue": "darwin"}},
        ]},
        "scopeSpans": [{
            "scope": {"name": "otel_metrics"},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "parentSpanId": "",
                "name": "plugin_usage.session",
                "kind": 1,
                "startTimeUnixNano": "1761827000999999999",
                "endTimeUnixNano": "1761827062000000000",
                "attributes": [
                    {"key": "session.id", "value": {"stringValue": "f3b1"}},
                    {"key": "plugin_usage.session.exit_reason", "value": {"stringValue": "Exit Now!"}},
                    {"key": "plugin_usage.session.total_tool_calls", "value": {"intValue": "9"}},
                    *[{"key": f"plugin_usage.session.{key}", "value": {"intValue": "1"}} for key in (
                        "turn_count", "user_message_count", "assistant_message_count",
                        "tool_error_count", "bash_call_count", "file_read_count", "file_edit_count",
                        "file_write_count", "grep_call_count", "glob_call_count", "web_fetch_call_count",
                        "web_search_call_count")],
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12345678901"}},
                    {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": 0}},
                ],
                "status": {},
                "someFutureField": True,  # receivers ignore unknown fields
            }],
        }],
    }]
}  # fmt: skip
OTLP_JSON_SESSION_PAYLOAD = {
    "session_id": "f3b1",
    "user_id": None,
    "os": "darwin",
    "engine": "claude",
    "start_timestamp": "2025-10-30T12:23:20Z",
    "end_timestamp": "2025-10-30T12:24:22Z",
    "session_duration": 61,
    "exit_reason": "other",
    "mac": "40dc2a9cd2a602cb54230b8e08fe1d19f9ac285579d23f49096029dff3d30813",
    "turn_count": 1,
    "user_message_count": 1,
    "assistant_message_count": 1,
    "total_tool_calls": 9,
    "tool_error_count": 1,
    "bash_call_count": 1,
    "file_read_count": 1,
    "file_edit_count": 1,
    "file_write_count": 1,
    "grep_call_count": 1,
    "glob_call_count": 1,
    "web_fetch_call_count": 1,
    "web_search_call_count": 1,
    "had_errors": True,
    "total_input_tokens": 12345678901,
}


def test_otlp_json_traces_as_the_spec_writes_them(receiver: Receiver) -> None:
    response = receiver.post("/v1/traces", json.dumps(OTLP_JSON_TRACES), JSON_TYPE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSON_TYPE
    assert response.json() == {}
    assert receiver.queued() == [("sessions", OTLP_JSON_SESSION_PAYLOAD)]


def test_otlp_json_metrics(receiver: Receiver) -> None:
    response = receiver.post("/v1/metrics", json_format.MessageToJson(METRICS), "application/json; charset=utf-8")
    assert (response.status_code, response.json()) == (200, {})
    assert receiver.queued() == EVENT_PAYLOADS


@pytest.mark.parametrize("content_type", [PROTOBUF_TYPE, JSON_TYPE])
def test_gzip_bodies(receiver: Receiver, content_type: str) -> None:
    raw = METRICS.SerializeToString() if content_type == PROTOBUF_TYPE else json_format.MessageToJson(METRICS).encode()
    response = receiver.post("/v1/metrics", gzip.compress(raw), content_type, Content_Encoding="gzip")
    assert response.status_code == 200
    assert receiver.queued() == EVENT_PAYLOADS


def test_a_gzip_body_of_several_members(receiver: Receiver) -> None:
    raw = METRICS.SerializeToString()
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert receiver.post("/v1/metrics", body, PROTOBUF_TYPE, Content_Encoding="gzip").status_code == 200
    assert receiver.queued() == EVENT_PAYLOADS


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_chunked_bodies(receiver: Receiver, encoding: Optional[str]) -> None:
    raw = METRICS.SerializeToString()
    body = gzip.compress(raw) if encoding else raw
    chunks = iter([body[:7], body[7:20], body[20:]])  # a generator: requests sends it chunked
    headers = {"Content_Encoding": encoding} if encoding else {}
    response = receiver.post("/v1/metrics", chunks, PROTOBUF_TYPE, **headers)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200
    assert receiver.queued() == EVENT_PAYLOADS


def test_partial_success_names_what_was_rejected(receiver: Receiver) -> None:
    request = metrics_request(
        event_metric(point(SKILL), point(without(COMMAND, schema.SESSION_ID)), point(COMMAND, -2))
    )
    response = receiver.post("/v1/metrics", request.SerializeToString(), PROTOBUF_TYPE)
    assert response.status_code == 200
    expected = ExportMetricsServiceResponse()
    expected.partial_success.rejected_data_points = 2
    expected.partial_success.error_message = (
        "plugin_usage.events data point 1: missing attribute session.id; "
        "plugin_usage.events data point 2: the value must not be negative"
    )
    assert ExportMetricsServiceResponse.FromString(response.content) == expected
    assert receiver.queued() == [("events", event_payload(SKILL_EVENT))]


def test_partial_success_in_json(receiver: Receiver) -> None:
    request = traces_request(session_span(without(session_attributes(), schema.SESSION_EXIT_REASON)))
    response = receiver.post("/v1/traces", json_format.MessageToJson(request), JSON_TYPE)
    assert response.status_code == 200
    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "plugin_usage.session span: missing attribute plugin_usage.session.exit_reason",
        }
    }
    assert receiver.queued() == []


def status_of(response: requests.Response) -> Status:
    if response.headers["Content-Type"] == PROTOBUF_TYPE:
        return Status.FromString(response.content)
    return json_format.Parse(response.text, Status())


@pytest.mark.parametrize(
    "content_type, body, encoding, message",
    [
        (PROTOBUF_TYPE, b"\xff\xff\xff\xff", None,
         "not an OTLP/protobuf ExportMetricsServiceRequest: Error parsing message"),
        (JSON_TYPE, b"{not json", None, "not an OTLP/json ExportMetricsServiceRequest: Expecting property name"),
        (JSON_TYPE, b"[]", None,
         "not an OTLP/json ExportMetricsServiceRequest: the JSON body must be an object"),
        (JSON_TYPE, b'{"resourceMetrics": 3}', None,
         "not an OTLP/json ExportMetricsServiceRequest: Failed to parse resourceMetrics field"),
        (JSON_TYPE, b"\xff\xfe", None, "not an OTLP/json ExportMetricsServiceRequest: 'utf-8' codec"),
        (PROTOBUF_TYPE, b"not gzip at all", "gzip", "the body is not valid gzip: "),
        (PROTOBUF_TYPE, gzip.compress(b"x" * 100)[:-12], "gzip", "the gzip body is truncated"),
    ],
)  # fmt: skip
def test_garbage_is_answered_400_with_a_status_message(
    receiver: Receiver, content_type: str, body: bytes, encoding: Optional[str], message: str
) -> None:
    headers = {"Content_Encoding": encoding} if encoding else {}
    response = receiver.post("/v1/metrics", body, content_type, **headers)
    assert response.status_code == 400
    status = status_of(response)
    assert status.code == 3  # INVALID_ARGUMENT
    assert status.message.startswith(message), status.message
    assert receiver.queued() == []


def test_unknown_media_type_encoding_and_path(receiver: Receiver) -> None:
    body = METRICS.SerializeToString()
    response = receiver.post("/v1/metrics", body, "text/plain")
    assert (response.status_code, response.text) == (
        415,
        "Content-Type must be application/x-protobuf or application/json\n",
    )
    response = receiver.post("/v1/metrics", body, PROTOBUF_TYPE, Content_Encoding="br")
    assert response.status_code == 415
    assert status_of(response).message == "unsupported Content-Encoding 'br'; use gzip or none"
    response = receiver.post("/v1/logs", body, PROTOBUF_TYPE)
    assert (response.status_code, response.text) == (404, "no OTLP signal at /v1/logs; use /v1/metrics or /v1/traces\n")
    # The connection survived all three: the next request on it is served.
    assert receiver.post("/v1/metrics", body, PROTOBUF_TYPE).status_code == 200
    assert receiver.queued() == EVENT_PAYLOADS


def test_bodies_over_the_limit_are_answered_413(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver(max_body_bytes=1000)
    big = metrics_request(event_metric(*[point(with_(COMMAND, schema.SESSION_ID, f"s{i}")) for i in range(30)]))
    body = big.SerializeToString()
    assert len(body) > 1000
    response = receiver.post("/v1/metrics", body, PROTOBUF_TYPE)
    assert response.status_code == 413
    assert status_of(response).message == f"body of {len(body)} bytes is over the limit of 1000"
    response = receiver.post("/v1/metrics", iter([body[:500], body[500:]]), PROTOBUF_TYPE)
    assert (response.status_code, status_of(response).message) == (413, "chunked body is over the limit of 1000 bytes")
    bomb = gzip.compress(b"\0" * 100_000)
    response = receiver.post("/v1/metrics", bomb, PROTOBUF_TYPE, Content_Encoding="gzip")
    assert (response.status_code, status_of(response).message) == (
        413,
        "the decompressed body is over the limit of 1000 bytes",
    )
    assert receiver.queued() == []


def test_a_full_outbox_is_answered_503_with_retry_after(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver(max_items=3)
    assert receiver.post("/v1/metrics", METRICS.SerializeToString(), PROTOBUF_TYPE).status_code == 200
    one_more = metrics_request(event_metric(point(SKILL))).SerializeToString()
    response = receiver.post("/v1/metrics", one_more, PROTOBUF_TYPE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert status_of(response) == Status(code=14, message="the outbox is full (3 payloads waiting)")
    assert receiver.queued() == EVENT_PAYLOADS
    # A request with nothing of ours needs no room: still accepted.
    empty = traces_request(OTHER_SPAN).SerializeToString()
    assert receiver.post("/v1/traces", empty, PROTOBUF_TYPE).status_code == 200


def test_a_request_larger_than_the_bound_is_taken_into_an_empty_outbox(
    start_receiver: Callable[..., Receiver],
) -> None:
    """Refusing it would have the collector retry it forever."""
    receiver = start_receiver(max_items=2)
    assert receiver.post("/v1/metrics", METRICS.SerializeToString(), PROTOBUF_TYPE).status_code == 200
    assert receiver.queued() == EVENT_PAYLOADS


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


def test_a_request_is_bounded_before_its_points_become_payloads(receiver: Receiver) -> None:
    points = [point(with_(COMMAND, schema.SESSION_ID, f"s{n}"), 500) for n in range(201)]
    response = receiver.post("/v1/metrics", metrics_request(event_metric(*points)).SerializeToString(), PROTOBUF_TYPE)
    assert (response.status_code, status_of(response)) == (
        413,
        Status(code=8, message="the request holds 100500 payloads, more than 100000; send smaller batches"),
    )
    assert receiver.queued() == []


def test_identical_payloads_are_queued_as_many_rows(receiver: Receiver) -> None:
    body = metrics_request(event_metric(point(COMMAND, 300), point(SKILL, 2))).SerializeToString()
    assert receiver.post("/v1/metrics", body, PROTOBUF_TYPE).status_code == 200
    queued = receiver.queued()
    assert queued == [("events", event_payload(COMMAND_EVENT))] * 300 + [("events", event_payload(SKILL_EVENT))] * 2
    assert len({item.id for item in receiver.outbox.oldest(1000)}) == 302


def test_gzip_members_are_bounded(receiver: Receiver) -> None:
    raw = METRICS.SerializeToString()
    within = gzip.compress(raw[:10]) + gzip.compress(raw[10:]) + gzip.compress(b"") * 62
    assert receiver.post("/v1/metrics", within, PROTOBUF_TYPE, Content_Encoding="gzip").status_code == 200
    beyond = within + gzip.compress(b"")
    response = receiver.post("/v1/metrics", beyond, PROTOBUF_TYPE, Content_Encoding="gzip")
    assert (response.status_code, status_of(response).message) == (400, "the gzip body has more than 64 members")
    assert receiver.queued() == EVENT_PAYLOADS


@pytest.mark.parametrize(
    "body, problem",
    [
        ('{"resourceMetrics": [], "resourceMetrics": []}', "duplicate key 'resourceMetrics'"),
        ('{"resourceMetrics": [{"scopeMetrics": NaN}]}', "NaN is not JSON"),
        ('{"resourceMetrics": ' + "[" * 5000 + "]" * 5000 + "}", "the JSON is nested too deeply"),
        ('{"x": ' + "1" * 50_000 + "}", "a number of more than 40 digits"),
    ],
)
def test_otlp_json_is_parsed_strictly(receiver: Receiver, body: str, problem: str) -> None:
    response = receiver.post("/v1/metrics", body, JSON_TYPE)
    assert response.status_code == 400
    assert status_of(response).message == f"not an OTLP/json ExportMetricsServiceRequest: {problem}"


def test_a_payload_larger_than_the_endpoint_takes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field is bounded, so no payload comes near the limit; were a bound raised, the door still holds."""
    monkeypatch.setattr(limits, "PAYLOAD_MAX_BYTES", 300)
    decoded = events_from_metrics(metrics_request(event_metric(point(COMMAND), point(SKILL))))
    assert decoded.events == [SKILL_EVENT]  # 258 bytes
    assert decoded.errors == [
        "plugin_usage.events data point 0: the payload would be 308 bytes, more than the endpoint takes (300)"
    ]
