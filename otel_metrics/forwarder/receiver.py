"""The OTLP/HTTP receiver: POST /v1/metrics and /v1/traces -> outbox, answered as OTLP receivers answer.

200 with an empty Export*ServiceResponse once the payloads are committed to the
outbox, or a partial success naming each point or span refused (malformed, or
beyond limits.py: the endpoint would refuse it); 400 for bodies that are not
OTLP (or gzip of too many members); 413 above the size limit, before or after
gunzip, or for a request expanding to too many payloads; 415 for unknown media
types or encodings; 503 with Retry-After when the outbox cannot take them, or
once the forwarder is shutting down (the collector retries only
429/502/503/504). Connections, their bounds and framing: http_server.py.

Requests are answered on the server's event loop: a body of up to
ON_LOOP_BYTES (a hook's request, a small batch) is decoded there at once, a
larger one on a thread of DECODE_THREADS (the loop must not stall on it); the
payloads then go to the outbox's writer, and the answer is written when their
transaction is on disk, while the loop reads other requests meanwhile. The
delivery hears of them from here (`on_queued`), in memory.

On the same port, as collectors and load balancers expect: GET /healthz (200
while the process serves), GET /readyz (200 when the outbox is writable and
below its bound and the endpoint answers; 503 otherwise, with the failing
checks), and GET /metrics (the forwarder's own metrics, with --prometheus).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..event_loop import AUTO
from ..http_server import (
    DEFAULT_BOUNDS,
    ConnectionBounds,
    HttpError,
    HttpServer,
    Reply,
    Request,
    Response,
    text_response,
)
from .decode import EVENTS, SESSIONS, Decoded
from .outbox import Commit, Outbox, OutboxUnavailable
from .routes import ROUTES, Route
from .telemetry import KINDS, Telemetry, disabled, prometheus_text
from .wire import CONTENT_TYPES, BadRequest, encoding_of, parse, serialize, status

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024  # as the collector's OTLP receiver; applies before and after gunzip
RETRY_AFTER_SECONDS = 5
# Payloads one request may expand to: far above any exporter's batch or the collector's, far below
# what would swamp the outbox and the endpoint (each point is at most limits.EVENTS_PER_EXPORT events).
MAX_PAYLOADS_PER_REQUEST = 100_000
# Gzip members in one body: exporters send one; each costs a decompressor, so they are bounded.
GZIP_MAX_MEMBERS = 64
GZIP_FEED_BYTES = 64 * 1024  # compressed bytes given to a decompressor at a time
# Bodies up to this size, before and after gunzip, are decoded on the event loop (some 150 events:
# a few ms); larger ones on a thread, so that the loop never stalls on one.
ON_LOOP_BYTES = 64 * 1024
DECODE_THREADS = 2
Checks = Dict[str, str]  # readiness check -> "ok" or what is wrong


class OtlpReceiver:
    """The forwarder's HTTP side: OTLP requests into the outbox, health checks, and when it is quiet."""

    def __init__(
        self,
        host: str,
        port: int,
        outbox: Outbox,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        telemetry: Optional[Telemetry] = None,
        readiness: Callable[[], Checks] = dict,
        prometheus: bool = False,
        bounds: ConnectionBounds = DEFAULT_BOUNDS,
        event_loop: str = AUTO,
    ) -> None:
        self.outbox = outbox
        self.max_body_bytes = max_body_bytes
        self.telemetry = telemetry or disabled()
        self.readiness = readiness
        self.prometheus = prometheus
        self.accepting = True  # False once shutting down: OTLP requests are answered 503
        self.last_request = time.monotonic()  # when the last OTLP request arrived
        self._active = 0  # OTLP requests being answered
        self._idle = threading.Condition()
        self.on_queued: Callable[[Commit], None] = lambda commit: None  # payloads committed (on the loop)
        self.http = HttpServer(
            host,
            port,
            None,
            name="otel-metrics-forwarder",
            max_body_bytes=max_body_bytes,
            error_page=self.error_page,
            bounds=bounds,
            respond=self.respond,
            event_loop=event_loop,
        )
        self.loop = self.http.loop
        self.address = self.http.address
        self._decoding = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="otel-metrics-forwarder-decode")
        self._calls: List[Tuple[Callable[..., None], Tuple[Any, ...]]] = []  # for the loop, from other threads
        self._calls_lock = threading.Lock()

    def start(self) -> None:
        self.http.start()

    def stop(self) -> None:
        self.http.stop()
        self._decoding.shutdown(wait=False)

    def request_started(self) -> None:
        with self._idle:
            self._active += 1
            self.last_request = time.monotonic()

    def request_finished(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_quiet(self, deadline: float) -> bool:
        """Wait until no OTLP request is being answered (or the monotonic deadline); True if none is."""
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def readiness_checks(self) -> Checks:
        checks = {"accepting": "ok" if self.accepting else "shutting down"}
        checks.update(self.readiness())
        return checks

    # Answers (on the server's event loop).

    def respond(self, request: Request, reply: Reply) -> None:
        if request.method == "GET":
            reply(self._get(request))
            return
        if request.method != "POST":
            reply(text_response(405, f"{request.method} is not served here", (("Allow", "GET, POST"),)))
            return
        self.request_started()

        def answer(response: Response) -> None:
            self.request_finished()
            reply(response)

        try:
            self._post(request, answer)
        except BaseException:
            self.request_finished()  # (the server answers 500)
            raise

    def _get(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            return text_response(200, "ok")
        if path == "/readyz":
            checks = self.readiness_checks()
            ready = all(value == "ok" for value in checks.values())
            body = json.dumps({"ready": ready, "checks": checks}, sort_keys=True).encode("utf-8")
            return Response(200 if ready else 503, body + b"\n", "application/json")
        if path == "/metrics" and self.prometheus:
            body, content_type = prometheus_text(request.headers.get("accept", ""))
            return Response(200, body, content_type)
        return text_response(404, f"nothing at {path}; OTLP is POST /v1/metrics and /v1/traces")

    def _post(self, request: Request, answer: Reply) -> None:
        route = ROUTES.get(request.path)
        encoding = _encoding(request)
        if route is None:
            answer(text_response(404, f"no OTLP signal at {request.path}; use /v1/metrics or /v1/traces"))
            return
        if encoding is None:
            answer(text_response(415, "Content-Type must be application/x-protobuf or application/json"))
            return
        if not self.accepting:
            answer(self._refusal(request, HttpError(503, "the forwarder is shutting down", close=True), encoding))
            return
        if len(request.body) <= ON_LOOP_BYTES:
            limit = min(ON_LOOP_BYTES, self.max_body_bytes)
            try:
                decoded = _decode(route, request, encoding, limit)
            except HttpError as error:
                if not (error.status == 413 and limit < self.max_body_bytes):
                    answer(self._refusal(request, error, encoding))
                    return
                # gzip expanding past what the loop decodes: on a thread, as a large body
            else:
                self._queue(request, route, decoded, encoding, answer)
                return
        try:
            decoding = self._decoding.submit(_decode, route, request, encoding, self.max_body_bytes)
        except RuntimeError:  # the pool is shut down: the forwarder is stopping
            answer(self._refusal(request, HttpError(503, "the forwarder is shutting down", close=True), encoding))
            return
        decoding.add_done_callback(lambda done: self._on_loop(self._decoded, request, route, encoding, answer, done))

    def _decoded(self, request: Request, route: Route, encoding: str, answer: Reply, decoding: Future[Decoded]) -> None:
        try:
            decoded = decoding.result()
        except HttpError as error:
            answer(self._refusal(request, error, encoding))
            return
        except Exception:
            log.exception("error while decoding %s", request.path)
            answer(_status_response(HttpError(500, "internal error", close=True), encoding))
            return
        self._queue(request, route, decoded, encoding, answer)

    def _queue(self, request: Request, route: Route, decoded: Decoded, encoding: str, answer: Reply) -> None:
        """Into the outbox; answered once it is on disk."""
        count = decoded.payload_count()
        if count > MAX_PAYLOADS_PER_REQUEST:  # checked before any payload is made
            error = HttpError(
                413, f"the request holds {count} payloads, more than {MAX_PAYLOADS_PER_REQUEST}; send smaller batches"
            )
            answer(self._refusal(request, error, encoding))
            return
        if not count:
            self._accepted(route, decoded, encoding, answer)
            return
        try:
            self.outbox.submit(
                decoded.payloads(),
                lambda commit: self._on_loop(self._committed, route, decoded, encoding, answer, commit),
            )
        except OutboxUnavailable as error:
            log.error("answering 503 to %s: %s", route.path, error)
            answer(self._refusal(request, HttpError(503, str(error)), encoding))

    def _committed(self, route: Route, decoded: Decoded, encoding: str, answer: Reply, commit: Commit) -> None:
        if commit.error is not None:  # disk full, read-only, locked by another process...
            message = f"the outbox cannot be written: {commit.error}"
            log.error("answering 503 to %s: %s", route.path, message)
            answer(_status_response(HttpError(503, message), encoding))
            return
        self._accepted(route, decoded, encoding, answer)
        self.on_queued(commit)

    def _accepted(self, route: Route, decoded: Decoded, encoding: str, answer: Reply) -> None:
        for path, received in ((EVENTS, decoded.event_count), (SESSIONS, len(decoded.session_payloads))):
            if received:
                self.telemetry.received.add(received, KINDS[path])
        if decoded.errors:
            log.warning("%s: rejected %d: %s", route.path, decoded.rejected, decoded.error_message())
        log.debug("%s: queued %d payloads, ignored %d other items", route.path, decoded.payload_count(),
                  decoded.ignored)  # fmt: skip
        answer(_otlp_response(200, serialize(route.response_for(decoded), encoding), encoding))

    def _refusal(self, request: Request, error: HttpError, encoding: str) -> Response:
        if error.status >= 500:
            log.debug("HTTP %d: %s", error.status, error)
        else:
            log.warning("HTTP %d for %s: %s", error.status, request.path, error)
        return _status_response(error, encoding)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run callback(*args) on the loop (from the outbox's writer or a decoding thread). Calls
        made before the loop gets to them go together: one wake-up of the loop for a commit's
        requests, not one each."""
        with self._calls_lock:
            self._calls.append((callback, args))
            if len(self._calls) > 1:
                return  # the loop is woken already
        try:
            self.loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:
            pass  # the loop is closed: the forwarder stopped, nobody waits for these answers

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for callback, args in calls:
            callback(*args)

    def error_page(self, request: Request, error: HttpError) -> Response:
        """The server's own errors: an OTLP Status when the request named an OTLP media type, else text."""
        encoding = _encoding(request)
        if encoding is None:
            headers = (("Retry-After", str(RETRY_AFTER_SECONDS)),) if error.status == 503 else ()
            return text_response(error.status, str(error), headers)._replace(close=error.close)
        return _status_response(error, encoding)


def _decode(route: Route, request: Request, encoding: str, limit: int) -> Decoded:
    """The request's body decoded (on the loop or a thread); raises HttpError for what is not OTLP."""
    body = _decompress(request.body, request.headers.get("content-encoding"), limit)
    try:
        return route.decode(parse(route.request, body, encoding))
    except BadRequest as error:
        raise HttpError(400, str(error)) from error


def _encoding(request: Request) -> Optional[str]:
    return encoding_of(request.headers.get("content-type", ""))


def _status_response(error: HttpError, encoding: str) -> Response:
    body = serialize(status(error.status, str(error)), encoding)
    headers = (("Retry-After", str(RETRY_AFTER_SECONDS)),) if error.status == 503 else ()
    return _otlp_response(error.status, body, encoding, headers, error.close)


def _otlp_response(
    status_code: int, body: bytes, encoding: str, headers: Tuple[Tuple[str, str], ...] = (), close: bool = False
) -> Response:
    return Response(status_code, body, CONTENT_TYPES[encoding], headers, close)


def _decompress(body: bytes, content_encoding: Optional[str], limit: int) -> bytes:
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise HttpError(415, f"unsupported Content-Encoding {coding[:40]!r}; use gzip or none")
    try:
        return _gunzip(body, limit)
    except zlib.error as error:
        raise HttpError(400, f"the body is not valid gzip: {error}") from error


def _gunzip(body: bytes, limit: int) -> bytes:
    """One gzip member after another (RFC 1952 allows several), in time linear in the body.

    Each decompressor is fed a bounded slice, so what it leaves over at a member's end
    (copied by zlib) is small, and the members are bounded in number.
    """
    out = bytearray()
    view = memoryview(body)
    position = members = 0
    while position < len(body):
        members += 1
        if members > GZIP_MAX_MEMBERS:
            raise HttpError(400, f"the gzip body has more than {GZIP_MAX_MEMBERS} members")
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not member.eof:
            if position >= len(body):
                raise HttpError(400, "the gzip body is truncated")
            piece = view[position : position + GZIP_FEED_BYTES]
            out += member.decompress(piece, limit + 1 - len(out))
            if len(out) > limit or member.unconsumed_tail:
                raise HttpError(413, f"the decompressed body is over the limit of {limit} bytes")
            position += len(piece) - len(member.unused_data)
    return bytes(out)
