"""The forwarder's OTLP/HTTP receiver (forwarder/receiver.py) in process, over real loopback HTTP:
what it answers (statuses, partial success, OTLP's Status), what it queues in its outbox, what it refuses.

Requests are built with the opentelemetry-proto classes (support.otlp_requests); what the
receiver queued is read back from its outbox.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_metrics import schema
from otel_metrics.forwarder.outbox import Outbox
from otel_metrics.forwarder.receiver import OtlpReceiver
from otel_metrics.payloads import event_payload, session_payload
from support.otlp_requests import (
    COMMAND,
    COMMAND_EVENT,
    JSON_TYPE,
    OTHER_SPAN,
    PROTOBUF_TYPE,
    SESSION,
    SKILL,
    SKILL_EVENT,
    event_metric,
    metrics_request,
    point,
    session_attributes,
    session_span,
    traces_request,
    with_,
    without,
)
from support.raw_http import loopback_session


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
