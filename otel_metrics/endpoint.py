"""The reference endpoint: /events and /sessions as the production endpoint should serve them.

POST parses the body strictly (strict_json: no duplicate keys, no lone surrogates,
bounded nesting), validates the key set, the types, the MAC and plausibility
(payloads.py), and stores exactly the payload it validated, in its canonical text
(store/: SQLite by default, or PostgreSQL); anything else is answered 400 with
what is wrong. GET returns what was stored, in arrival order. When the database
fails, the answer is 503, which the forwarder retries. GET /metrics gives the
stored sessions' aggregates (tool calls, tokens, errors) as Prometheus counters,
for dashboards on a stock Prometheus and Grafana. Served by http_server.py, as
the forwarder is. Used by the demo, the tests and docker-compose.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Tuple

from . import limits, strict_json
from .http_server import DEFAULT_BOUNDS, ConnectionBounds, HttpError, HttpServer, Request, Response
from .payloads import canonical_text, validate_event_payload, validate_session_payload
from .store import PayloadStore, StoreError, open_store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = limits.PAYLOAD_MAX_BYTES
VALIDATORS: Dict[str, Callable[[object], List[str]]] = {
    "/events": validate_event_payload,
    "/sessions": validate_session_payload,
}
# The endpoint's words for the errors the HTTP server answers itself.
SERVER_ERRORS = {411: "a Content-Length is required", 413: f"body over {MAX_BODY_BYTES} bytes"}


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


class Endpoint:
    """Server + store; start() returns once it is listening."""

    def __init__(
        self,
        host: str,
        port: int,
        db_url: str,
        bounds: ConnectionBounds = DEFAULT_BOUNDS,
    ) -> None:
        self.store = open_store(db_url)
        try:
            self.server = HttpServer(
                host,
                port,
                self.handle,
                name="otel-metrics-endpoint",
                max_body_bytes=MAX_BODY_BYTES,
                error_page=error_page,
                bounds=bounds,
                lengths_only=True,
            )
        except OSError:
            self.store.close()
            raise

    @property
    def address(self) -> Tuple[str, int]:
        return self.server.address

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.store.close()

    # Answers (on the server's handler threads).

    def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return self._post(request)
        if request.method == "GET":
            return self._get(request.path)
        return _reply(405, {"error": f"{request.method} is not served here; use GET or POST"})

    def _post(self, request: Request) -> Response:
        path = request.path
        validate = VALIDATORS.get(path)
        if validate is None:
            return _reply(404, {"error": f"no such endpoint {path}; use /events or /sessions"})
        try:
            payload = strict_json.loads(request.body)
        except ValueError as error:
            return _reply(400, {"error": f"body is not UTF-8 JSON: {error}"})
        problems = validate(payload)
        if problems:
            log.warning("refused a payload for %s: %s", path, "; ".join(problems))
            return _reply(400, {"error": "invalid payload", "problems": problems})
        try:
            # What was validated, not the text received: a reader of the text sees what was checked.
            self.store.add(path[1:], canonical_text(payload), payload)
        except StoreError as error:
            log.error("could not store a payload for %s: %s", path, error)
            return _reply(503, {"error": "the database is unavailable; retry later"})
        return _reply(200, {"status": "stored"})

    def _get(self, path: str) -> Response:
        if path == "/metrics":
            try:
                text = exposition(self.store)
            except StoreError as error:
                log.error("could not sum the stored sessions: %s", error)
                return _reply(503, {"error": "the database is unavailable; retry later"})
            return Response(200, text.encode("utf-8"), PROMETHEUS_TEXT)
        if path not in VALIDATORS:
            return _reply(404, {"error": f"no such endpoint {path}; use /events or /sessions"})
        try:
            body = "[" + ",".join(self.store.bodies(path[1:])) + "]"
        except StoreError as error:
            log.error("could not list %s: %s", path, error)
            return _reply(503, {"error": "the database is unavailable; retry later"})
        return Response(200, body.encode("utf-8"), "application/json")


def error_page(request: Request, error: HttpError) -> Response:
    return _reply(error.status, {"error": SERVER_ERRORS.get(error.status, str(error))}, error.close)


def _reply(status: int, document: Any, close: bool = False) -> Response:
    return Response(status, json.dumps(document).encode("utf-8"), "application/json", close=close)
