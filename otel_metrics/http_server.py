"""One HTTP/1.1 server for the forwarder's OTLP receiver and the reference endpoint.

An asyncio loop on one thread reads the requests of every connection, so a slow,
idle or hostile connection costs a little memory, never a thread. Each complete
request goes either to the server's `handle` on a small pool of threads (for
handlers that block: storing), or to its `respond` on the loop itself, which
answers at once or later (for handlers that hand the blocking part to a thread
of their own: no hand-off per request); its answer is written back. Keep-alive,
pipelining, Content-Length and chunked bodies, `Expect: 100-continue`.

Bounds, each sized for a gateway with many exporters:
- LISTEN_BACKLOG connections may wait to be accepted (socketserver's default is 5);
- at most `max_connections` (ConnectionBounds) are open: at the bound a new connection closes the one
  that has been idle, else reading its request, the longest (never one being
  answered), so connections held open never starve new senders;
- a request, head and body, must arrive within `request_seconds` of its first byte,
  in total however slowly it trickles (408 otherwise); an idle keep-alive
  connection is closed after IDLE_SECONDS;
- a head is at most HEAD_MAX_BYTES (431), a body at most `max_body_bytes` (413),
  and the bytes buffered for all connections at most `buffer_bytes` (503, retry).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from http import HTTPStatus
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, cast
from urllib.parse import urlsplit

from .deadline import Deadline
from .event_loop import AUTO, new_event_loop

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 on current Linux)
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_REQUEST_SECONDS = 30.0  # from a request's first byte to its last
IDLE_SECONDS = 60.0  # a keep-alive connection between requests
HEAD_MAX_BYTES = 64 * 1024  # request line and header fields
HEADERS_MAX = 100  # header fields in one head
CHUNK_LINE_MAX = 1024  # a chunk-size line, or a trailer field
HANDLER_THREADS = 16  # requests answered at once (the outbox's group commit takes them together)
FD_RESERVE = 64  # descriptors kept for everything but connections (databases, logs, delivery)
TEXT = "text/plain; charset=utf-8"

Headers = Mapping[str, str]  # names in lower case


class ConnectionBounds(NamedTuple):
    """What a server's connections may hold of it (`--max-connections`, `--request-timeout`)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_seconds: float = DEFAULT_REQUEST_SECONDS


DEFAULT_BOUNDS = ConnectionBounds()


class Request(NamedTuple):
    method: str
    target: str
    path: str
    headers: Headers
    body: bytes


class Response(NamedTuple):
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: Tuple[Tuple[str, str], ...] = ()
    close: bool = False  # close the connection once it is written


def text_response(status: int, text: str, headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    return Response(status, (text + "\n").encode("utf-8"), TEXT, headers)


class HttpError(Exception):
    """A request the server answers itself with an error status."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # the rest of the request was not read: the connection cannot be reused


Handler = Callable[[Request], Response]  # called on a pool thread
Reply = Callable[[Response], None]
Responder = Callable[[Request, Reply], None]  # called on the loop; reply() on the loop, at once or later
ErrorPage = Callable[[Request, HttpError], Response]  # how a server words the errors it answers itself


def plain_error(request: Request, error: HttpError) -> Response:
    return text_response(error.status, str(error))._replace(close=error.close)


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = b"0123456789abcdefABCDEF"
_IDLE, _HEAD, _BODY, _BUSY, _CLOSED = "idle", "head", "body", "busy", "closed"


class HttpServer:
    """Binds and listens at once (OSError if it cannot); start() serves, stop() ends every connection."""

    def __init__(
        self,
        host: str,
        port: int,
        handle: Optional[Handler],
        name: str,
        max_body_bytes: int,
        error_page: ErrorPage = plain_error,
        bounds: ConnectionBounds = DEFAULT_BOUNDS,
        lengths_only: bool = False,
        respond: Optional[Responder] = None,
        event_loop: str = AUTO,
    ) -> None:
        """One of handle and respond answers; lengths_only: a body must come with a Content-Length
        (411 for chunked or none); event_loop: see event_loop.py (EventLoopUnavailable)."""
        if (handle is None) == (respond is None):
            raise ValueError("an HttpServer needs one of handle and respond")
        self.handle = handle
        self.respond = respond
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.error_page = error_page
        self.max_connections = _fit_descriptors(bounds.max_connections)
        self.request_seconds = bounds.request_seconds
        self.lengths_only = lengths_only
        # Bodies of every connection in memory at once: a few of the largest, however many connect.
        self.buffer_bytes = max(64 * 1024 * 1024, 4 * max_body_bytes)
        self.buffered = 0
        self.loop = new_event_loop(event_loop)  # the server's thread runs it: others may use it too
        try:
            self._socket = _listening_socket(host, port)
        except BaseException:
            self.loop.close()
            raise
        self.address: Tuple[str, int] = self._socket.getsockname()[:2]
        self._connections: Dict[_Connection, None] = {}  # in the order they opened
        self._pool = (
            ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix=f"{name}-handler") if handle is not None else None
        )
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._date = (0, "")

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self) -> None:
        """Stop listening, close every connection; requests being answered finish on their own."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join()
        else:
            self._socket.close()
            self.loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # The loop's side.

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Connection(self), sock=self._socket, backlog=LISTEN_BACKLOG)
            )
        finally:
            self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(asyncio.sleep(0))  # the connections' last callbacks
        self.loop.close()

    def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        self.loop.stop()

    def opened(self, connection: _Connection) -> bool:
        """Count a new connection; at the bound, make room by closing another. False: refused."""
        if len(self._connections) >= self.max_connections:
            victim = self._victim()
            if victim is None:
                return False
            log.debug("%d connections open: closing one %s since %.1f s", len(self._connections), victim.state,
                      self.loop.time() - victim.since)  # fmt: skip
            victim.abort()
        self._connections[connection] = None
        return True

    def closed(self, connection: _Connection) -> None:
        self._connections.pop(connection, None)

    def _victim(self) -> Optional[_Connection]:
        """The connection idle the longest, else the one reading its request the longest."""
        for states in ((_IDLE,), (_HEAD, _BODY)):
            waiting = [c for c in self._connections if c.state in states]
            if waiting:
                return min(waiting, key=lambda c: c.since)
        return None

    def dispatch(self, request: Request, done: Reply) -> None:
        """Have the request answered (on the loop, or on the pool); `done(response)` runs on the loop."""
        if self.respond is not None:
            try:
                self.respond(request, done)
            except Exception:
                log.exception("error while answering %s %s", request.method, request.path)
                done(self.error_page(request, HttpError(500, "internal error", close=True)))
            return
        assert self._pool is not None
        self._pool.submit(self._answer, request).add_done_callback(lambda answered: self._deliver(done, answered))

    def _deliver(self, done: Callable[[Response], None], answered: Future[Response]) -> None:
        try:
            self.loop.call_soon_threadsafe(done, answered.result())
        except RuntimeError:
            pass  # the loop is closed: the server stopped, nobody waits for this answer

    def _answer(self, request: Request) -> Response:
        assert self.handle is not None
        try:
            return self.handle(request)
        except Exception:
            log.exception("error while answering %s %s", request.method, request.path)
            return self.error_page(request, HttpError(500, "internal error", close=True))

    def date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]


class _Body:
    def feed(self, buffer: bytearray) -> Optional[bytes]:
        """Take what belongs to the body from the front of the buffer; the body once it is complete."""
        raise NotImplementedError


class _Length(_Body):
    """A body of a known length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def feed(self, buffer: bytearray) -> Optional[bytes]:
        if len(buffer) < self.size:
            return None
        body = bytes(memoryview(buffer)[: self.size])
        del buffer[: self.size]
        return body


class _Chunked(_Body):
    """A chunked body, decoded as it arrives."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: List[bytes] = []
        self.size = 0
        self.chunk: Optional[int] = None  # the size of the chunk whose data comes next
        self.trailers = 0  # bytes of trailer fields read; > 0 once the last chunk was seen

    def feed(self, buffer: bytearray) -> Optional[bytes]:
        while True:
            if self.chunk is not None:
                if len(buffer) < self.chunk + 2:
                    return None
                if buffer[self.chunk : self.chunk + 2] != b"\r\n":
                    raise HttpError(400, "malformed chunked body", close=True)
                self.parts.append(bytes(memoryview(buffer)[: self.chunk]))
                del buffer[: self.chunk + 2]
                self.chunk = None
                continue
            end = buffer.find(b"\n", 0, CHUNK_LINE_MAX)
            if end < 0:
                if len(buffer) >= CHUNK_LINE_MAX:
                    raise HttpError(400, "malformed chunked body", close=True)
                return None
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            if self.trailers:
                self.trailers += len(line)
                if self.trailers > HEAD_MAX_BYTES:
                    raise HttpError(431, "the trailer fields are too large", close=True)
                if not line.strip():
                    return b"".join(self.parts)
                continue  # a trailer field: ignored
            size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not size_text or size_text.strip(_HEX) or len(size_text) > 16:
                raise HttpError(400, "malformed chunked body", close=True)
            size = int(size_text, 16)
            if size == 0:
                self.trailers = 1
                continue
            if self.size + size > self.limit:
                raise HttpError(413, f"chunked body is over the limit of {self.limit} bytes", close=True)
            self.size += size
            self.chunk = size


class _Head(NamedTuple):
    method: str
    target: str
    headers: Dict[str, str]
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One client connection: reads a request, has it answered, writes the answer, again."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.held = 0  # bytes of this connection counted in server.buffered
        self.state = _IDLE
        self.since = self.loop.time()
        self.deadline = Deadline(self.loop)  # for the request being read, or of the idle connection
        self.scanned = 0  # how far the head's end was looked for
        self.head: Optional[_Head] = None
        self.body: Optional[_Body] = None
        self.consumed = 0  # bytes of the request being read, so far
        self.writing_paused = False
        self.dispatching = False  # the request is being handed over: an answer now is not written from here
        self.eof = False  # the client sent all it will send

    # asyncio's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio.Transport subclasses)
        if not self.server.opened(self):
            self.state = _CLOSED
            self.transport.write(self._render(text_response(503, "too many connections; retry later"), close=True))
            self.transport.close()
            return
        self._wait(IDLE_SECONDS, self._idle_expired)

    def data_received(self, data: bytes) -> None:
        if self.state == _CLOSED:
            return
        self.buffer += data
        self.held += len(data)
        self.server.buffered += len(data)
        if self.server.buffered > self.server.buffer_bytes:
            self._fail(HttpError(503, "the server is reading too many large requests at once; retry later", True))
            return
        if self.state == _BUSY:
            assert self.transport is not None
            self.transport.pause_reading()  # one request at a time; pipelined ones wait in the socket
            return
        self._advance()

    def eof_received(self) -> Optional[bool]:
        self.eof = True
        return self.state == _BUSY  # keep the connection to write the answer being made, then close

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.deadline.cancel()
        self.state = _CLOSED
        self.server.buffered -= self.held
        self.held = 0
        self.buffer = bytearray()
        self.server.closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True  # the client does not read its answers: read no more requests

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.state == _IDLE:
            self._read_next()

    def abort(self) -> None:
        self.state = _CLOSED
        self.deadline.cancel()
        if self.transport is not None:
            self.transport.abort()
        self.server.closed(self)

    # Reading a request.

    def _advance(self) -> None:
        try:
            while self.state in (_IDLE, _HEAD, _BODY) and not self.writing_paused:
                if self.state == _IDLE:
                    stripped = len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))  # blank lines between requests
                    if stripped:
                        self._consume(stripped)
                    if not self.buffer:
                        return
                    self.state, self.since = _HEAD, self.loop.time()
                    self._wait(self.server.request_seconds, self._request_expired)
                if self.state == _HEAD and not self._read_head():
                    return
                if self.state == _BODY:
                    assert self.body is not None and self.head is not None
                    before = len(self.buffer)
                    body = self.body.feed(self.buffer)
                    self.consumed += before - len(self.buffer)
                    if body is None:
                        return
                    self._dispatch(Request(self.head.method, self.head.target, _path(self.head.target),
                                           self.head.headers, body))  # fmt: skip
        except HttpError as error:
            self._fail(error)

    def _read_head(self) -> bool:
        """Parse the head once it is all here; True when it was."""
        start = max(0, self.scanned - 3)
        ends = [i for i in (self.buffer.find(b"\n\r\n", start), self.buffer.find(b"\n\n", start)) if i >= 0]
        if not ends:
            self.scanned = len(self.buffer)
            if len(self.buffer) > HEAD_MAX_BYTES:
                raise HttpError(431, f"the request head is over {HEAD_MAX_BYTES} bytes", close=True)
            return False
        end = min(ends)
        size = end + (3 if self.buffer[end + 1 : end + 2] == b"\r" else 2)
        if size > HEAD_MAX_BYTES:
            raise HttpError(431, f"the request head is over {HEAD_MAX_BYTES} bytes", close=True)
        text = self.buffer[:size].decode("latin-1")
        self._consume(size)
        self.scanned = 0
        self.head = _parse_head(text)
        self.body = self._framing(self.head)
        self.state = _BODY
        expect = self.head.headers.get("expect", "").lower()
        if expect == "100-continue" and not self.buffer and not _empty(self.body):
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif expect and expect != "100-continue":
            raise HttpError(417, f"cannot meet the expectation {expect[:40]!r}")
        return True

    def _framing(self, head: _Head) -> _Body:
        headers = head.headers
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if coding is not None:
            if self.server.lengths_only:
                raise HttpError(411, "a Content-Length is required", close=True)
            if coding.strip().lower() != "chunked":
                raise HttpError(501, f"unsupported Transfer-Encoding {coding[:40]!r}", close=True)
            if length is not None:  # both: the length is not to be trusted, nor the connection
                self.head = head._replace(keep_alive=False)
            return _Chunked(self.server.max_body_bytes)
        if length is None:
            if self.server.lengths_only and head.method in ("POST", "PUT", "PATCH"):
                raise HttpError(411, "a Content-Length is required", close=True)
            return _Length(0)
        length = length.strip()
        if not (length.isascii() and length.isdigit()) or len(length) > 18:
            raise HttpError(400, f"bad Content-Length {length[:40]!r}", close=True)
        size = int(length)
        limit = self.server.max_body_bytes
        if size > limit:
            raise HttpError(413, f"body of {size} bytes is over the limit of {limit}", close=True)
        return _Length(size)

    def _consume(self, size: int) -> None:
        del self.buffer[:size]
        self.consumed += size

    # Answering.

    def _dispatch(self, request: Request) -> None:
        assert self.transport is not None
        self.deadline.clear()  # answering takes what it takes: the handler bounds it
        self.state = _BUSY
        self.dispatching = True
        try:
            self.server.dispatch(request, lambda response: self._answered(request, response))
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.abort()
        finally:
            self.dispatching = False

    def _answered(self, request: Request, response: Response) -> None:
        if self.state == _CLOSED:
            return  # the client left, or the server stopped: nobody to tell
        assert self.head is not None and self.transport is not None
        self._release()
        close = response.close or not self.head.keep_alive or (self.eof and not self.buffer)
        self.transport.write(self._render(response, close, head_only=request.method == "HEAD"))
        if close:
            self._close()
            return
        self.state, self.since = _IDLE, self.loop.time()
        self.head = self.body = None
        self._wait(IDLE_SECONDS, self._idle_expired)
        if not self.writing_paused and not self.dispatching:  # (answered at once: _advance reads on)
            self._read_next()

    def _read_next(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()
        self._advance()  # a pipelined request may be here already
        if self.eof and self.state in (_IDLE, _HEAD, _BODY):
            self._close()  # the client sent all it will: nothing more can complete

    def _fail(self, error: HttpError) -> None:
        """Answer an error the server found itself (the handler never saw this request)."""
        if self.state == _CLOSED or self.transport is None:
            return
        if error.status >= 500:
            log.debug("HTTP %d: %s", error.status, error)
        else:
            log.info("HTTP %d: %s", error.status, error)
        head = self.head or _Head("", "", {}, False)
        request = Request(head.method, head.target, _path(head.target), head.headers, b"")
        self.transport.write(self._render(self.server.error_page(request, error), close=True))
        self._close()

    def _render(self, response: Response, close: bool, head_only: bool = False) -> bytes:
        lines = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
            f"Server: {self.server.name}",
            f"Date: {self.server.date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + response.body

    def _release(self) -> None:
        """The request answered gives back what it held of the buffer budget."""
        self.held -= self.consumed
        self.server.buffered -= self.consumed
        self.consumed = 0

    def _close(self) -> None:
        self.state = _CLOSED
        self.deadline.cancel()
        assert self.transport is not None
        self.transport.close()  # after what was written
        self.server.closed(self)

    # Time.

    def _wait(self, seconds: float, expired: Callable[[], None]) -> None:
        self.deadline.set(seconds, expired)

    def _idle_expired(self) -> None:
        if self.state == _IDLE:
            self._close()

    def _request_expired(self) -> None:
        if self.state in (_HEAD, _BODY):
            seconds = self.server.request_seconds
            self._fail(HttpError(408, f"the request did not arrive within {seconds:g} s", close=True))


def _parse_head(text: str) -> _Head:
    lines = text.split("\n")
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or not _TOKEN.issuperset(parts[0]) or not parts[1]:
        raise HttpError(400, f"malformed request line {request_line[:100]!r}", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise HttpError(505, f"{version[:20]} is not supported; use HTTP/1.1", close=True)
        raise HttpError(400, f"malformed request line {request_line[:100]!r}", close=True)
    headers: Dict[str, str] = {}
    fields = [line.rstrip("\r") for line in lines[1:]]
    fields = [line for line in fields if line]
    if len(fields) > HEADERS_MAX:
        raise HttpError(431, f"more than {HEADERS_MAX} header fields", close=True)
    for line in fields:
        name, colon, value = line.partition(":")
        if not colon or not name or not _TOKEN.issuperset(name):  # also a folded line, which starts with a space
            raise HttpError(400, f"malformed header field {line[:100]!r}", close=True)
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name == "content-length" and headers[name].strip() != value:
                raise HttpError(400, "conflicting Content-Length fields", close=True)
            if name not in ("content-length", "host"):
                headers[name] += ", " + value
            continue
        headers[name] = value
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    return _Head(method, target, headers, keep_alive)


def _path(target: str) -> str:
    return urlsplit(target).path if "?" in target or "://" in target else target


def _empty(body: object) -> bool:
    return isinstance(body, _Length) and body.size == 0


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # on Windows it would let another process take the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _fit_descriptors(wanted: int) -> int:
    """The connections this process may keep open: raises its descriptor limit if it must and can."""
    try:
        import resource
    except ImportError:  # Windows: no such limit on sockets
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
        if soft < needed:
            log.warning("at most %d open connections: the descriptor limit is %d", soft - FD_RESERVE, soft)
            return max(1, soft - FD_RESERVE)
    return wanted
