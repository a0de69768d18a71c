"""Fuzzing the servers as processes: the forwarder (its OTLP receiver) and the reference endpoint.

Hypothesis makes OTLP bodies (raw bytes; requests built with the protobuf classes whose
attributes, values and times are hostile; their JSON; cut or flipped copies; gzip or not) and
endpoint bodies (valid payloads with hostile values, keys and texts), and HTTP requests with
hostile heads. For every one: an answer within the timeout, never 5xx, and the server goes on;
each example sends its own valid event after its hostile body (its own connection, its own
session id), and every one of those is delivered. Afterwards: no dead letters (what the forwarder
acknowledged, the endpoint took), and everything the endpoint stored validates and is stored in
its canonical text.
"""

from __future__ import annotations

import gzip
import json
import socket
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, Sum
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_metrics import schema
from otel_metrics.model import Event
from otel_metrics.payloads import canonical_text, validate_event_payload, validate_session_payload
from support import otlp_requests as otlp
from support.legacy_payloads import EVENT, SESSION
from support.otlp_requests import post_metrics
from support.processes import EndpointProcess, ForwarderProcess, run_cli, wait_for
from support.raw_http import loopback_session, read_until_closed

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
# Strings a hostile sender would try: long, control characters, non-ASCII, markup, paths, JSON in JSON.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),
    st.sampled_from(["", " ", "<script>alert(1)</script>", "/home/alice/.ssh/id_rsa", '{"mac":"x"}', "jira:solve",
                     "a" * 129, "a:" * 70, "\u202etxt.exe", "\U0001f600" * 10, "null", "-1"]),
    st.integers(1, 100_000).map(lambda n: "s" * n),
)  # fmt: skip
OUR_KEYS = sorted(
    {*otlp.COMMAND, *otlp.session_attributes(), *otlp.RESOURCE, schema.SESSION_EXIT_REASON, schema.SESSION_SEGMENT}
)


def any_values() -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        HOSTILE_TEXT.map(lambda v: AnyValue(string_value=v)),
        INT64.map(lambda v: AnyValue(int_value=v)),
        st.floats().map(lambda v: AnyValue(double_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.binary(max_size=40).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda v: AnyValue(array_value=ArrayValue(values=v))),
            st.lists(st.tuples(HOSTILE_TEXT, inner), max_size=3).map(
                lambda v: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=x) for k, x in v]))
            ),
        ),
        max_leaves=6,
    )


@st.composite
def hostile_attributes(draw: st.DrawFn, valid: Dict[str, Any]) -> List[KeyValue]:
    """A valid attribute set, some of its values replaced by hostile ones, some keys dropped or doubled."""
    attributes = otlp.key_values(valid)
    for index in draw(st.lists(st.integers(0, len(attributes) - 1), max_size=3)):
        attributes[index] = KeyValue(key=attributes[index].key, value=draw(any_values()))
    for index in sorted(draw(st.sets(st.integers(0, len(attributes) - 1), max_size=2)), reverse=True):
        if draw(st.booleans()):
            del attributes[index]
    extra = draw(st.lists(st.tuples(st.one_of(st.sampled_from(OUR_KEYS), HOSTILE_TEXT), any_values()), max_size=2))
    return attributes + [KeyValue(key=key, value=value) for key, value in extra]


@st.composite
def hostile_metrics(draw: st.DrawFn) -> Any:
    points = []
    for _ in range(draw(st.integers(1, 3))):
        # Counts the bound lets through are few: each becomes that many deliveries.
        value = draw(st.one_of(INT64.map(lambda v: {"as_int": v}), st.floats().map(lambda v: {"as_double": v}),
                               st.sampled_from([0, 1, 2, 501]).map(lambda v: {"as_int": v}), st.just({})))  # fmt: skip
        points.append(NumberDataPoint(attributes=draw(hostile_attributes(otlp.COMMAND)),
                                      time_unix_nano=draw(UINT64), **value))  # fmt: skip
    name = draw(st.sampled_from([schema.EVENT_METRIC, schema.EVENT_METRIC, schema.EVENT_METRIC, "other"]))
    if draw(st.integers(0, 3)):  # mostly what we decode: a delta sum
        temporality = draw(st.sampled_from([2, 2, 1, 0]))
        metric = Metric(name=name, sum=Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True))
    else:
        metric = Metric(name=name, gauge=Gauge(data_points=points))
    request = otlp.metrics_request(metric)
    request.resource_metrics[0].resource.ClearField("attributes")
    request.resource_metrics[0].resource.attributes.extend(draw(hostile_attributes(otlp.RESOURCE)))
    return request


@st.composite
def hostile_traces(draw: st.DrawFn) -> Any:
    spans = [
        Span(
            trace_id=draw(st.binary(max_size=20)),
            span_id=draw(st.binary(max_size=10)),
            name=draw(st.sampled_from([schema.SESSION_SPAN, schema.SESSION_SPAN, schema.SESSION_SPAN, "other"])),
            start_time_unix_nano=draw(st.one_of(UINT64, st.just(otlp.SESSION.start_ns))),
            end_time_unix_nano=draw(st.one_of(UINT64, st.just(otlp.SESSION.end_ns))),
            attributes=draw(hostile_attributes(otlp.session_attributes())),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    return otlp.traces_request(*spans)


@st.composite
def otlp_bodies(draw: st.DrawFn) -> Tuple[str, bytes, Dict[str, str]]:
    """(path, body, headers)."""
    path, request = draw(st.one_of(st.tuples(st.just("/v1/metrics"), hostile_metrics()),
                                   st.tuples(st.just("/v1/traces"), hostile_traces())))  # fmt: skip
    encoding = draw(st.sampled_from(["application/x-protobuf", "application/json"]))
    as_json = encoding == "application/json"
    body = json_format.MessageToJson(request).encode() if as_json else request.SerializeToString()
    mangling = draw(st.sampled_from(["none", "none", "none", "cut", "flip", "raw"]))
    if mangling == "cut" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif mangling == "flip" and body:
        index = draw(st.integers(0, len(body) - 1))
        body = body[:index] + bytes([body[index] ^ (1 << draw(st.integers(0, 7)))]) + body[index + 1 :]
    elif mangling == "raw":
        body = draw(st.binary(max_size=300))
    headers = {"Content-Type": encoding}
    compression = draw(st.sampled_from(["identity", "gzip", "gzip", "gzip-garbage"]))
    if compression == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif compression == "gzip-garbage":
        body = b"\x1f\x8b\x08\x00" + body
        headers["Content-Encoding"] = "gzip"
    return path, body, headers


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                        HOSTILE_TEXT)  # fmt: skip
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(HOSTILE_TEXT, inner, max_size=3)),
                        max_leaves=8)  # fmt: skip


@st.composite
def endpoint_bodies(draw: st.DrawFn) -> Tuple[str, bytes]:
    """(path, body): a valid payload made hostile in its values, its keys or its text."""
    path, valid = draw(st.sampled_from([("/events", EVENT), ("/sessions", SESSION)]))
    payload = dict(valid)
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=3)):
        payload[key] = draw(json_values())
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=2)):
        payload.pop(key, None)
    payload.update(draw(st.dictionaries(HOSTILE_TEXT, json_values(), max_size=2)))
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    mangling = draw(st.sampled_from(["none", "none", "duplicate", "cut", "surrogate", "nest", "raw"]))
    if mangling == "duplicate":
        text = '{"session_id": "dup", ' + text[1:] if len(text) > 2 else text
    elif mangling == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangling == "surrogate":
        text = text.replace('"abc123"', '"abc\\udc00"')
    elif mangling == "nest":
        depth = draw(st.integers(1, 3000))
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    body = text.encode("utf-8", "surrogatepass")
    if mangling == "raw":
        body = draw(st.binary(max_size=300))
    return path, body


class Pipeline:
    """An endpoint and a forwarder posting to it, as processes, for a whole module of examples."""

    def __init__(self, directory: Path) -> None:
        self.endpoint = EndpointProcess(directory / "endpoint.sqlite").start()
        self.forwarder = ForwarderProcess(self.endpoint.url, directory / "outbox.sqlite",
                                          ["--retry-initial", "0.05", "--retry-max", "0.5"], None).start()  # fmt: skip
        self.valid_sent: List[Event] = []

    def send_own_valid_event(self) -> None:
        """The example's own event, on its own connection: traffic flows between hostile bodies."""
        event = Event("skill", "fuzz:valid", 0, f"fuzz-{uuid.uuid4().hex}", otlp.COMMAND_EVENT.timestamp, None,
                      "1.0", "linux")  # fmt: skip
        assert post_metrics(self.forwarder.url, event).status_code == 200
        self.valid_sent.append(event)

    def assert_still_whole(self) -> None:
        """Both alive; every valid event delivered; nothing acknowledged then refused; only valid payloads stored."""
        for server in (self.forwarder, self.endpoint):
            assert server.proc is not None and server.proc.poll() is None, server.log()
        wanted = {event.session_id for event in self.valid_sent}
        wait_for(lambda: wanted <= {p["session_id"] for p in self.endpoint.events()}, timeout=60)
        wait_for(lambda: run_cli("forwarder", "dead-letters", "--outbox", str(self.forwarder.outbox)).stdout.startswith(
            "0 dead letters"))  # fmt: skip
        with loopback_session() as http:
            for kind, validate in (("events", validate_event_payload), ("sessions", validate_session_payload)):
                text = http.get(f"{self.endpoint.url}/{kind}", timeout=30).text
                stored = json.loads(text)
                assert text == "[" + ",".join(canonical_text(payload) for payload in stored) + "]"
                assert [problem for payload in stored for problem in validate(payload)] == []
        assert "Traceback" not in self.forwarder.log() + self.endpoint.log()

    def stop(self) -> None:
        self.forwarder.stop()
        self.endpoint.stop()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    started = Pipeline(tmp_path_factory.mktemp("fuzz"))
    yield started
    started.stop()


def test_otlp_bodies_through_the_real_receiver(pipeline: Pipeline) -> None:
    @FUZZ
    @given(otlp_bodies())
    def example(case: Tuple[str, bytes, Dict[str, str]]) -> None:
        path, body, headers = case
        with loopback_session() as http:
            response = http.post(f"{pipeline.forwarder.url}{path}", data=body, headers=headers, timeout=30)
        assert response.status_code in (200, 400, 413), (response.status_code, response.content[:300])
        json_answer = headers["Content-Type"] == "application/json"
        if response.status_code == 200:
            answer = ExportMetricsServiceResponse() if path == "/v1/metrics" else ExportTraceServiceResponse()
            if json_answer:
                json_format.Parse(response.text, answer)
            else:
                answer.ParseFromString(response.content)
        else:
            status = json_format.Parse(response.text, Status()) if json_answer else Status.FromString(response.content)
            assert status.message
        pipeline.send_own_valid_event()

    example()
    pipeline.assert_still_whole()


def test_endpoint_bodies(pipeline: Pipeline) -> None:
    @FUZZ
    @given(endpoint_bodies())
    def example(case: Tuple[str, bytes]) -> None:
        path, body = case
        with loopback_session() as http:
            response = http.post(f"{pipeline.endpoint.url}{path}", data=body, timeout=30)
            assert response.status_code in (200, 400, 413), (response.status_code, response.text[:300])
            answer = response.json()
            assert answer == {"status": "stored"} if response.status_code == 200 else answer["error"]
        pipeline.send_own_valid_event()

    example()
    pipeline.assert_still_whole()


HEAD_TOKENS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "", " ", "/v1/metrics", "/events", "HTTP/1.1",
                               "HTTP/1.0", "HTTP/9", "Content-Length: 5", "Content-Length: -1",
                               "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked",
                               "Transfer-Encoding: gzip", "Expect: 100-continue", "Connection: close",
                               "Content-Type: application/json", "\x00", "\xff", ":", "X:" + "y" * 5000])  # fmt: skip


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    lines = [" ".join(draw(st.lists(HEAD_TOKENS, min_size=1, max_size=3)))]
    lines += draw(st.lists(st.one_of(HEAD_TOKENS, st.text(max_size=30)), max_size=6))
    separator = draw(st.sampled_from(["\r\n", "\n"]))
    head = separator.join(lines) + separator * draw(st.integers(0, 2))
    return head.encode("utf-8", "surrogatepass") + draw(st.binary(max_size=100))


def test_hostile_request_heads(pipeline: Pipeline) -> None:
    @FUZZ
    @given(raw_requests(), st.booleans())
    def example(data: bytes, to_forwarder: bool) -> None:
        server = pipeline.forwarder if to_forwarder else pipeline.endpoint
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)  # all there is: the server answers or closes, never waits
            except OSError:
                pass  # it closed first: refused early
            answer = read_until_closed(sock, timeout=30)
        statuses = [line.split(b" ")[1] for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
        assert all(not status.startswith(b"5") or status in (b"501", b"505") for status in statuses), answer[:300]
        pipeline.send_own_valid_event()

    example()
    pipeline.assert_still_whole()
    with loopback_session() as http:
        assert http.get(f"{pipeline.forwarder.url}/healthz", timeout=10).status_code == 200
