"""The forwarder and the reference endpoint as processes on loopback: OTLP in, whole legacy payloads out.

Between them, where a test needs the endpoint to fail, stands a Gate: a real
HTTP server that answers as scripted or passes requests on to the endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
import requests
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from servers import EndpointProcess, wait_for

from otel_metrics.emit import OtlpSender, events_to_metrics
from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.payloads import event_payload, session_payload

USER = "550e8400-e29b-41d4-a716-446655440000"
COMMAND = Event("slash_command", "jira:solve", 17, "sess-1", 1761827696, USER, "1.0", "linux")
SKILL = Event("skill", "prow-job:analyze", 0, "sess-1", 1761827696, USER, "1.0", "linux")
POISON = Event("skill", "poison", 0, "sess-1", 1761827697, USER, "1.0", "linux")
SESSION = Session(
    "sess-1", USER, "prompt_input_exit", 1761827000_250000000, 1761827699_000000000, "1.0", "linux",
    SessionAggregates(turn_count=1, user_message_count=1, assistant_message_count=2, total_tool_calls=3,
                      bash_call_count=2, grep_call_count=1, total_input_tokens=40, cache_read_tokens=900),
)  # fmt: skip
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def otlp_metrics(*events: Event) -> bytes:
    [data] = events_to_metrics(events)  # one resource: one request
    return encode_metrics(data).SerializeToString()


def loopback_http() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


def post_metrics(url: str, *events: Event) -> requests.Response:
    with loopback_http() as http:
        return http.post(f"{url}/v1/metrics", data=otlp_metrics(*events), headers=PROTOBUF, timeout=10)


def send(url: str, events: List[Event] = (), sessions: List[Session] = ()) -> None:
    """Through the OTel SDK's own OTLP/HTTP exporters, as the hooks' exporter sends."""
    sender = OtlpSender(url)
    try:
        assert sender.send_events(list(events))
        assert sender.send_sessions(list(sessions))
    finally:
        sender.close()


def by_text(payloads: List[Dict[str, Any]]) -> List[str]:
    return sorted(json.dumps(p, sort_keys=True) for p in payloads)


class Gate:
    """Answers `answer(request target, payload)` when that is a status; passes the request on when None."""

    def __init__(self, upstream: str = "") -> None:
        self.upstream = upstream
        self.answer: Callable[[str, Dict[str, Any]], Optional[int]] = lambda target, payload: None
        self.seen: List[Tuple[str, Dict[str, Any], int]] = []  # (request target, payload, status answered)
        self.connections = 0
        self._lock = threading.Lock()
        self._http = loopback_http()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with gate._lock:
                    gate.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, reply = gate._handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handle(self, target: str, body: bytes) -> Tuple[int, bytes]:
        with self._lock:
            payload = json.loads(body)
            status = self.answer(target, payload)
            if status is None:
                passed = self._http.post(self.upstream + urlsplit(target).path, data=body, timeout=10)
                status, reply = passed.status_code, passed.content
            else:
                reply = json.dumps({"error": f"the gate says {status}"}).encode()
            self.seen.append((target, payload, status))
        return status, reply

    def statuses(self) -> List[int]:
        with self._lock:
            return [status for _, _, status in self.seen]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@pytest.fixture
def gate(endpoint_server: EndpointProcess) -> Iterator[Gate]:
    gate = Gate(endpoint_server.url)
    yield gate
    gate.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_otlp_in_whole_legacy_payloads_out(endpoint_server: EndpointProcess, forwarder_server) -> None:
    forwarder = forwarder_server(endpoint_server.url)
    send(forwarder.otlp_url, events=[COMMAND, SKILL, COMMAND], sessions=[SESSION])
    wait_for(lambda: len(endpoint_server.events()) == 3 and len(endpoint_server.sessions()) == 1)
    expected_events = [event_payload(COMMAND), event_payload(COMMAND), event_payload(SKILL)]
    assert by_text(endpoint_server.events()) == by_text(expected_events)  # the same event twice stays two
    assert endpoint_server.sessions() == [session_payload(SESSION)]
    assert forwarder.stop() == 0  # SIGTERM: a clean exit


def test_endpoint_errors_are_retried_until_it_recovers(gate: Gate, endpoint_server, forwarder_server) -> None:
    failures = iter(range(3))
    gate.answer = lambda target, payload: 500 if next(failures, None) is not None else None
    forwarder = forwarder_server(gate.url)
    send(forwarder.otlp_url, events=[COMMAND], sessions=[SESSION])
    wait_for(lambda: len(endpoint_server.events()) == 1 and len(endpoint_server.sessions()) == 1)
    assert endpoint_server.events() == [event_payload(COMMAND)]
    assert endpoint_server.sessions() == [session_payload(SESSION)]
    assert gate.statuses() == [500, 500, 500, 200, 200]  # each retried until accepted, none twice
    assert "answered HTTP 500" in forwarder.log()


def test_a_payload_the_endpoint_refuses_is_dropped_and_logged(gate: Gate, endpoint_server, forwarder_server) -> None:
    gate.answer = lambda target, payload: 400 if payload["name"] == "poison" else None
    forwarder = forwarder_server(gate.url)
    assert post_metrics(forwarder.url, POISON).status_code == 200
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]
    assert gate.statuses() == [400, 200]  # never retried: it would never be accepted
    wait_for(lambda: "refused it for good (HTTP 400" in forwarder.log())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_the_outbox_survives_a_restart(gate: Gate, endpoint_server, forwarder_server, stop_signal: int) -> None:
    gate.answer = lambda target, payload: 503  # the endpoint is down
    forwarder = forwarder_server(gate.url)
    assert post_metrics(forwarder.url, COMMAND, SKILL).status_code == 200
    wait_for(lambda: len(gate.seen) >= 2)  # retried: still in the outbox
    exit_status = forwarder.stop(stop_signal)
    assert exit_status == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    gate.answer = lambda target, payload: None  # the endpoint is back
    forwarder.restart()
    wait_for(lambda: len(endpoint_server.events()) == 2)
    assert by_text(endpoint_server.events()) == by_text([event_payload(COMMAND), event_payload(SKILL)])


def test_503_with_retry_after_while_the_outbox_is_full(gate: Gate, endpoint_server, forwarder_server) -> None:
    gate.answer = lambda target, payload: 503
    forwarder = forwarder_server(gate.url, args=["--max-outbox-items", "2"])
    assert post_metrics(forwarder.url, COMMAND, SKILL).status_code == 200
    refused = post_metrics(forwarder.url, POISON)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert Status.FromString(refused.content) == Status(code=14, message="the outbox is full (2 payloads waiting)")
    gate.answer = lambda target, payload: None
    wait_for(lambda: len(endpoint_server.events()) == 2)
    assert post_metrics(forwarder.url, POISON).status_code == 200  # room again: the sender's retry lands
    wait_for(lambda: len(endpoint_server.events()) == 3)
    expected = [event_payload(COMMAND), event_payload(SKILL), event_payload(POISON)]
    assert by_text(endpoint_server.events()) == by_text(expected)


def test_413_above_the_size_limit(endpoint_server: EndpointProcess, forwarder_server) -> None:
    forwarder = forwarder_server(endpoint_server.url, args=["--max-body-bytes", "2000"])
    many = [Event("skill", f"skill-{i}", 0, "sess-1", 1761827696, USER, "1.0", "linux") for i in range(20)]
    body = otlp_metrics(*many)  # about 5 kB
    with loopback_http() as http:
        response = http.post(f"{forwarder.url}/v1/metrics", data=body, headers=PROTOBUF, timeout=10)
    assert response.status_code == 413
    assert Status.FromString(response.content).message == f"body of {len(body)} bytes is over the limit of 2000"
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_one_connection_to_the_endpoint_carries_every_payload(gate: Gate, endpoint_server, forwarder_server) -> None:
    forwarder = forwarder_server(gate.url)
    for index in range(5):
        assert post_metrics(forwarder.url, Event("skill", f"s{index}", 0, "x", 1761827696, None, "1.0", "linux")).ok
    wait_for(lambda: len(endpoint_server.events()) == 5)
    assert gate.connections == 1


def proxy_env(proxy: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(HTTP_PROXY=proxy, http_proxy=proxy, HTTPS_PROXY=proxy, https_proxy=proxy)
    return env


def test_a_loopback_endpoint_is_reached_without_the_proxy(endpoint_server: EndpointProcess, forwarder_server) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    forwarder = forwarder_server(endpoint_server.url, env=proxy_env(dead_proxy))
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_a_remote_endpoint_is_reached_through_the_proxy(forwarder_server) -> None:
    proxy = Gate()
    try:
        proxy.answer = lambda target, payload: 200  # a forward proxy: it sees the absolute URL
        forwarder = forwarder_server("http://metrics.example.invalid/upload", env=proxy_env(proxy.url))
        assert post_metrics(forwarder.url, SKILL).status_code == 200
        wait_for(lambda: proxy.seen)
        assert proxy.seen == [("http://metrics.example.invalid/upload/events", event_payload(SKILL), 200)]
    finally:
        proxy.close()
