"""The OTLP/HTTP receiver: POST /v1/metrics and /v1/traces -> outbox, answered as OTLP receivers answer.

200 with an empty (or partial-success) Export*ServiceResponse once the payloads
are committed to the outbox; 400 for bodies that are not OTLP; 413 above the
size limit; 415 for unknown media types or encodings; 503 with Retry-After when
the outbox cannot take them, or once the forwarder is shutting down (the
collector retries only 429/502/503/504).

On the same port, as collectors and load balancers expect: GET /healthz (200
while the process serves), GET /readyz (200 when the outbox is writable and
below its bound and the endpoint answers; 503 otherwise, with the failing
checks), and GET /metrics (the forwarder's own metrics, with --prometheus).
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from google.protobuf.message import Message

from .decode import JSON, PROTOBUF, SIGNALS, BadRequest, Signal, parse, serialize, status
from .outbox import Outbox, OutboxUnavailable
from .telemetry import KINDS, Telemetry, disabled, prometheus_text

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024  # as the collector's OTLP receiver; applies before and after gunzip
RETRY_AFTER_SECONDS = 5
MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
# google.rpc.Code for the Status body of each error status.
RPC_CODES = {400: 3, 413: 8, 415: 12, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNAVAILABLE


class HttpError(Exception):
    def __init__(self, status_code: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.close = close  # the rest of the body was not read: the connection cannot be reused


Checks = Dict[str, str]  # readiness check -> "ok" or what is wrong


class OtlpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: many exporters may connect at once (socketserver's is 5)

    def __init__(
        self,
        host: str,
        port: int,
        outbox: Outbox,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        telemetry: Optional[Telemetry] = None,
        readiness: Callable[[], Checks] = dict,
        prometheus: bool = False,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.outbox = outbox
        self.max_body_bytes = max_body_bytes
        self.telemetry = telemetry or disabled()
        self.readiness = readiness
        self.prometheus = prometheus
        self.accepting = True  # False once shutting down: OTLP requests are answered 503
        self.last_request = time.monotonic()  # when the last OTLP request arrived
        self._active = 0  # OTLP requests being answered
        self._idle = threading.Condition()
        super().__init__((host, port), OtlpHandler)

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

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our own name (getfqdn): slow without DNS, and unused.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        # Nothing was acknowledged to this client, so nothing is lost: it will send again.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s failed", client_address, exc_info=True)
        else:
            log.exception("error while serving %s", client_address)


class OtlpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body
    server_version = "otel-metrics-forwarder"
    timeout = 60  # seconds a connection may sit idle or stall mid-body
    server: OtlpServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._reply_text(200, "ok")
        elif path == "/readyz":
            checks = self.server.readiness_checks()
            ready = all(value == "ok" for value in checks.values())
            body = json.dumps({"ready": ready, "checks": checks}, sort_keys=True).encode("utf-8")
            self._send(200 if ready else 503, body + b"\n", "application/json", ())
        elif path == "/metrics" and self.server.prometheus:
            body, content_type = prometheus_text(self.headers.get("Accept", ""))
            self._send(200, body, content_type, ())
        else:
            self._reply_text(404, f"nothing at {path}; OTLP is POST /v1/metrics and /v1/traces")

    def do_POST(self) -> None:
        self.server.request_started()
        try:
            self._post()
        finally:
            self.server.request_finished()

    def _post(self) -> None:
        signal = SIGNALS.get(urlsplit(self.path).path)
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        encoding = MEDIA_TYPES.get(media_type)
        if signal is None or encoding is None:
            self._discard_body()
            if signal is None:
                self._reply_text(404, f"no OTLP signal at {self.path}; use /v1/metrics or /v1/traces")
            else:
                self._reply_text(415, "Content-Type must be application/x-protobuf or application/json")
            return
        if not self.server.accepting:
            self._discard_body()
            self.close_connection = True
            self._reply_error(HttpError(503, "the forwarder is shutting down"), encoding)
            return
        try:
            body = _decompress(self._read_body(), self.headers.get("Content-Encoding"), self.server.max_body_bytes)
            response = self._accept(signal, body, encoding)
        except HttpError as error:
            self._reply_error(error, encoding)
            return
        self._reply(200, serialize(response, encoding), encoding)

    def _accept(self, signal: Signal, body: bytes, encoding: str) -> Message:
        try:
            decoded = signal.decode(parse(signal.request, body, encoding))
        except BadRequest as error:
            raise HttpError(400, str(error)) from error
        payloads = decoded.payloads()
        try:
            texts: Dict[int, str] = {}  # n identical events share one payload: one JSON text
            self.server.outbox.add(
                [(path, texts.get(id(p)) or texts.setdefault(id(p), json.dumps(p))) for path, p in payloads]
            )
        except OutboxUnavailable as error:
            log.error("answering 503 to %s: %s", signal.path, error)
            raise HttpError(503, str(error)) from error
        for path, count in (("events", len(decoded.events)), ("sessions", len(decoded.sessions))):
            if count:
                self.server.telemetry.received.add(count, KINDS[path])
        if decoded.errors:
            log.warning("%s: rejected %d: %s", signal.path, decoded.rejected, decoded.error_message())
        log.debug("%s: queued %d payloads, ignored %d other items", signal.path, len(payloads), decoded.ignored)
        return signal.response_for(decoded)

    # Bodies: Content-Length or chunked, never more than max_body_bytes.

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        transfer_encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if transfer_encoding == "chunked":
            return self._read_chunked(limit)
        if transfer_encoding:
            raise HttpError(400, f"unsupported Transfer-Encoding {transfer_encoding!r}", close=True)
        length_text = self.headers.get("Content-Length", "0").strip()
        if not (length_text.isascii() and length_text.isdigit()):
            raise HttpError(400, f"bad Content-Length {length_text!r}", close=True)
        length = int(length_text)
        if length > limit:
            raise HttpError(413, f"body of {length} bytes is over the limit of {limit}", close=True)
        return self._read_exactly(length)

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            size_text = size_line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not size_line.endswith(b"\n") or not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise HttpError(400, "malformed chunked body", close=True)
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > limit:
                raise HttpError(413, f"chunked body is over the limit of {limit} bytes", close=True)
            body += self._read_exactly(size)
            if self.rfile.readline(3).strip():
                raise HttpError(400, "malformed chunked body", close=True)
        while self.rfile.readline(8192).strip():
            pass  # trailer fields, up to the blank line
        return bytes(body)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise HttpError(400, "the body ended early", close=True)
        return data

    def _discard_body(self) -> None:
        """Consume a body we will not use, so the connection stays usable; close it if that fails."""
        try:
            self._read_body()
        except HttpError:
            self.close_connection = True

    # Replies.

    def _reply_error(self, error: HttpError, encoding: str) -> None:
        if error.status_code >= 500:
            log.debug("HTTP %d: %s", error.status_code, error)
        else:
            log.warning("HTTP %d for %s: %s", error.status_code, self.path, error)
        if error.close:
            self.close_connection = True
        headers = (("Retry-After", str(RETRY_AFTER_SECONDS)),) if error.status_code == 503 else ()
        body = serialize(status(RPC_CODES[error.status_code], str(error)), encoding)
        self._reply(error.status_code, body, encoding, headers)

    def _reply_text(self, status_code: int, text: str) -> None:
        self._send(status_code, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8", ())

    def _reply(self, status_code: int, body: bytes, encoding: str, headers: Tuple[Tuple[str, str], ...] = ()) -> None:
        content_type = "application/x-protobuf" if encoding == PROTOBUF else "application/json"
        self._send(status_code, body, content_type, headers)

    def _send(self, status_code: int, body: bytes, content_type: str, headers: Tuple[Tuple[str, str], ...]) -> None:
        self.send_response(status_code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)  # the access log, only when verbose


def _decompress(body: bytes, content_encoding: Optional[str], limit: int) -> bytes:
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise HttpError(415, f"unsupported Content-Encoding {coding!r}; use gzip or none")
    out = bytearray()
    rest = body
    try:
        while rest:  # one gzip member after another (RFC 1952 allows several)
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += member.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or member.unconsumed_tail:
                raise HttpError(413, f"the decompressed body is over the limit of {limit} bytes")
            if not member.eof:
                raise HttpError(400, "the gzip body is truncated")
            rest = member.unused_data
    except zlib.error as error:
        raise HttpError(400, f"the body is not valid gzip: {error}") from error
    return bytes(out)
