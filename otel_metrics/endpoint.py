"""The reference endpoint: /events and /sessions as the production endpoint should serve them.

POST validates the key set, the types and the MAC (payloads.py) and stores the
exact JSON received (store/: SQLite by default, or PostgreSQL); GET returns what was
stored, in arrival order. When the database fails, the answer is 503, which the
forwarder retries. GET /metrics gives the stored sessions' aggregates (tool calls,
tokens, errors) as Prometheus counters, for dashboards on a stock Prometheus and
Grafana. Used by the demo, the tests and docker-compose.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List
from urllib.parse import urlsplit

from .payloads import validate_event_payload, validate_session_payload
from .store import PayloadStore, StoreError, open_store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SHUTDOWN_POLL_SECONDS = 0.1  # how long stop() may wait for the accept loop to notice
VALIDATORS: Dict[str, Callable[[object], List[str]]] = {
    "/events": validate_event_payload,
    "/sessions": validate_session_payload,
}


PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
METRIC_PREFIX = "otel_metrics_endpoint_"


def exposition(store: PayloadStore) -> str:
    """Counters over every stored session, in the Prometheus text format.

    Every series is there from the first scrape, at 0 on an empty database, so that
    increase() sees the first sessions too. The database is the count: a restarted
    endpoint goes on where it was, never back to 0.
    """
    from .report import session_totals

    totals = session_totals(store)
    families = [
        ("sessions_total", "Session payloads stored.", [("", totals.sessions)]),
        ("sessions_with_errors_total", "Stored sessions with a tool error.", [("", totals.sessions_with_errors)]),
        (
            "tool_calls_total",
            "Tool calls of the stored sessions, by tool.",
            [(f'tool="{tool}"', count) for tool, count in totals.tool_mix.items()],
        ),
        ("tool_errors_total", "Tool calls that failed, in the stored sessions.", [("", totals.tool_errors)]),
        (
            "tokens_total",
            "Tokens of the stored sessions, by type.",
            [
                (f'type="{key.replace("total_", "").replace("_tokens", "")}"', total)
                for key, total in totals.tokens.items()
            ],
        ),
    ]
    lines = []
    for name, help_text, samples in families:
        lines += [f"# HELP {METRIC_PREFIX}{name} {help_text}", f"# TYPE {METRIC_PREFIX}{name} counter"]
        lines += [
            f"{METRIC_PREFIX}{name}{{{labels}}} {value}" if labels else f"{METRIC_PREFIX}{name} {value}"
            for labels, value in samples
        ]
    return "\n".join(lines) + "\n"


class EndpointServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, store: PayloadStore) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.store = store
        super().__init__((host, port), EndpointHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # without HTTPServer's getfqdn(): slow without DNS
        self.server_name, self.server_port = self.server_address[:2]


class EndpointHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the forwarder's connection reuse is real
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body
    server_version = "otel-metrics-endpoint"
    timeout = 60
    server: EndpointServer

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        validate = VALIDATORS.get(path)
        length_text = self.headers.get("Content-Length", "")
        if not (length_text.isascii() and length_text.isdigit()):
            self.close_connection = True  # the body's end is unknown
            self._reply(411, {"error": "a Content-Length is required"})
            return
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        raw = self.rfile.read(length)
        if validate is None:
            self._reply(404, {"error": f"no such endpoint {path}; use /events or /sessions"})
            return
        try:
            text = raw.decode("utf-8")
            payload = json.loads(text)
        except ValueError as error:
            self._reply(400, {"error": f"body is not UTF-8 JSON: {error}"})
            return
        problems = validate(payload)
        if problems:
            log.warning("refused a payload for %s: %s", path, "; ".join(problems))
            self._reply(400, {"error": "invalid payload", "problems": problems})
            return
        try:
            self.server.store.add(path[1:], text, payload)
        except StoreError as error:
            log.error("could not store a payload for %s: %s", path, error)
            self._reply(503, {"error": "the database is unavailable; retry later"})
            return
        self._reply(200, {"status": "stored"})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
            return
        if path not in VALIDATORS:
            self._reply(404, {"error": f"no such endpoint {path}; use /events or /sessions"})
            return
        # The stored texts verbatim: exactly what was received.
        try:
            body = "[" + ",".join(self.server.store.bodies(path[1:])) + "]"
        except StoreError as error:
            log.error("could not list %s: %s", path, error)
            self._reply(503, {"error": "the database is unavailable; retry later"})
            return
        self._send(200, body.encode("utf-8"))

    def _metrics(self) -> None:
        try:
            text = exposition(self.server.store)
        except StoreError as error:
            log.error("could not sum the stored sessions: %s", error)
            self._reply(503, {"error": "the database is unavailable; retry later"})
            return
        self._send(200, text.encode("utf-8"), PROMETHEUS_TEXT)

    def _reply(self, status_code: int, document: Any) -> None:
        self._send(status_code, json.dumps(document).encode("utf-8"))

    def _send(self, status_code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status_code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class Endpoint:
    """Server + store; start() returns once it is listening."""

    def __init__(self, host: str, port: int, db_url: str) -> None:
        self.store = open_store(db_url)
        try:
            self.server = EndpointServer(host, port, self.store)
        except OSError:
            self.store.close()
            raise
        self._serving = threading.Thread(
            target=self.server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), name="endpoint", daemon=True
        )

    @property
    def address(self) -> tuple:
        return self.server.server_address[:2]

    def start(self) -> None:
        self._serving.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()
