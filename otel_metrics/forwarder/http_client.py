"""Keep-alive HTTP/1.1 connections to the metrics endpoint, on the forwarder's event loop.

Each connection is an asyncio protocol: a POST is written in one piece and its
answer parsed as its bytes arrive (AnswerParser), so a POST in flight costs no
thread, and a hanging one nothing but its connection. Not requests, nor
http.client's reading: posting is the forwarder's hot loop, and a POST through
requests costs some twenty times the CPU of one here (docs/scaling.md); an answer
of the endpoint needs a status line, a few headers and a body delimited as
HTTP/1.1 delimits them. What requests gave us is kept: a remote endpoint is reached
through HTTP(S)_PROXY unless NO_PROXY names it (http.client opens the connection
and the proxy's CONNECT tunnel, on a thread: opening is rare), a loopback one never
is, and TLS is verified against certifi's CA bundle (REQUESTS_CA_BUNDLE or
CURL_CA_BUNDLE replace it, as for requests).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import ssl
import urllib.request
from typing import Dict, List, NamedTuple, Optional, Tuple, Union, cast
from urllib.parse import unquote, urlsplit

from ..config import is_loopback_url
from ..deadline import Deadline

RESPONSE_READ_LIMIT = 64 * 1024  # bytes of an answer's body kept (the rest is read and dropped)
MAX_LINE = 65536  # bytes of a status or header line, as http.client allows
MAX_HEADERS = 100
USER_AGENT = "otel-metrics-forwarder"


class Answer(NamedTuple):
    status: int
    body: bytes
    retry_after: Optional[str]  # the Retry-After header, as sent


class Target(NamedTuple):
    """Where a connection goes: the endpoint itself, or a proxy in front of it."""

    origin: str  # scheme://host[:port] of the endpoint, as its URL writes it
    host: str
    port: int
    base_path: str  # the endpoint URL's path, without a trailing slash
    proxy: Optional[Tuple[str, int, Dict[str, str]]]  # proxy host, port, headers (Proxy-Authorization)
    tls: Optional[ssl.SSLContext]


def target_for(metrics_url: str) -> Target:
    url = urlsplit(metrics_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"the metrics URL must be http:// or https://, got {metrics_url!r}")
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    proxy = None if is_loopback_url(metrics_url) else _proxy_for(url.scheme, url.hostname)
    tls = _tls_context() if https else None
    origin = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
    return Target(origin, url.hostname, port, url.path.rstrip("/"), proxy, tls)


def _proxy_for(scheme: str, host: str) -> Optional[Tuple[str, int, Dict[str, str]]]:
    """The proxy the environment names for this host (as requests and curl read it), if any."""
    if urllib.request.proxy_bypass(host):
        return None
    proxy_url = urllib.request.getproxies().get(scheme)
    if not proxy_url:
        return None
    if "://" not in proxy_url:
        proxy_url = "http://" + proxy_url
    proxy = urlsplit(proxy_url)
    headers = {}
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    return proxy.hostname or "", proxy.port or 80, headers


def _tls_context() -> ssl.SSLContext:
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not bundle:
        import certifi  # the CA bundle requests uses too

        bundle = certifi.where()
    return ssl.create_default_context(cafile=bundle)


class AnswerParser:
    """One HTTP/1.x answer, from the bytes of a connection as they arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.received = False  # any byte of the answer came
        self._head: Optional[Tuple[int, Dict[bytes, bytes], bool]] = None  # status, headers, keep-alive
        self._length: Optional[int] = None  # body bytes still to come (a Content-Length)
        self._chunked = False
        self._chunk_end = False  # the CRLF after a chunk's data comes next
        self._body = bytearray()
        self._trailers = False  # the last chunk was read; trailer fields up to a blank line follow

    def feed(self, data: bytes) -> Optional[Tuple[Answer, bool]]:
        """The answer once it is complete, with whether the connection may carry another request;
        raises http.client.HTTPException for what is not HTTP. What follows it stays in `buffer`."""
        self.received = True
        self.buffer += data
        if self._head is None and not self._read_head():
            return None
        assert self._head is not None
        status, headers, keep_alive = self._head
        if self._chunked:
            done = self._read_chunks()
        elif self._length is not None:
            taken = min(self._length, len(self.buffer))
            self._keep(self.buffer[:taken])
            del self.buffer[:taken]
            self._length -= taken
            done = self._length == 0
        else:  # the body runs to the end of the connection
            self._keep(self.buffer)
            self.buffer.clear()
            done = False
        return (self._answer(), keep_alive) if done else None

    def end(self) -> Answer:
        """The connection closed: the answer, if its body was to run to its end; raises otherwise."""
        if not self.received or (self._head is None and not self.buffer):
            raise http.client.RemoteDisconnected("the endpoint closed the connection without an answer")
        if self._head is None:
            self._check_status_line(bytes(self.buffer.split(b"\n", 1)[0]))
            raise http.client.IncompleteRead(bytes(self.buffer))
        if self._chunked:
            raise http.client.IncompleteRead(bytes(self._body))
        if self._length is not None:
            raise http.client.IncompleteRead(bytes(self._body), self._length)
        return self._answer()

    def _answer(self) -> Answer:
        assert self._head is not None
        status, headers, _ = self._head
        retry_after = headers.get(b"retry-after")
        return Answer(status, bytes(self._body), retry_after.decode("latin-1") if retry_after else None)

    def _keep(self, data: Union[bytes, bytearray]) -> None:
        room = RESPONSE_READ_LIMIT - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _read_head(self) -> bool:
        """Parse the status line and header fields once they are all here (an interim 1xx
        answer is dropped: the real one follows); True when they were."""
        while True:
            end = _head_end(self.buffer)
            if end is None:
                if len(self.buffer) > MAX_LINE * 2:
                    self._check_status_line(bytes(self.buffer.split(b"\n", 1)[0]))
                    raise http.client.LineTooLong("header line")
                return False
            head, size = end
            del self.buffer[:size]
            lines = head.split(b"\n")
            version, code = self._check_status_line(lines[0])
            if len(lines) - 1 > MAX_HEADERS:
                raise http.client.HTTPException(f"more than {MAX_HEADERS} header fields")
            headers: Dict[bytes, bytes] = {}
            for line in lines[1:]:
                if len(line) > MAX_LINE:
                    raise http.client.LineTooLong("header line")
                name, colon, value = line.partition(b":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            status = int(code)
            if not 100 <= status < 200:
                break
        connection = headers.get(b"connection", b"").lower()
        keep_alive = connection != b"close" and (version != b"HTTP/1.0" or connection == b"keep-alive")
        if status in (204, 304):
            self._length = 0
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._chunked = True
        elif b"content-length" in headers:
            length_text = headers[b"content-length"]
            if not length_text.isdigit():
                raise http.client.HTTPException(f"bad Content-Length {length_text!r}")
            self._length = int(length_text)
        else:
            keep_alive = False
        self._head = (status, headers, keep_alive)
        return True

    @staticmethod
    def _check_status_line(line: bytes) -> Tuple[bytes, bytes]:
        version, _, rest = line.rstrip(b"\r").partition(b" ")
        code = rest[:3]
        if not (version.startswith(b"HTTP/1.") and code.isdigit() and len(line) <= MAX_LINE):
            raise http.client.BadStatusLine(line.decode("latin-1", "replace").strip())
        return version, code

    def _read_chunks(self) -> bool:
        """Take what is here of a chunked body; True once it ended (last chunk and trailer fields)."""
        buffer = self.buffer
        while True:
            if self._length:  # a chunk's data
                taken = min(self._length, len(buffer))
                self._keep(buffer[:taken])
                del buffer[:taken]
                self._length -= taken
                if self._length:
                    return False
                self._chunk_end = True
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_LINE:
                    raise http.client.LineTooLong("chunk size line")
                return False
            line = bytes(buffer[:newline]).strip()
            del buffer[: newline + 1]
            if self._chunk_end:
                self._chunk_end = False
            elif self._trailers:
                if not line:
                    return True
                # (a trailer field: ignored)
            else:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise http.client.HTTPException(f"bad chunk size {size_text!r}") from None
                self._trailers = size == 0
                self._length = size


def _head_end(buffer: bytearray) -> Optional[Tuple[bytes, int]]:
    """(the head without its blank line and carriage returns, its size) once the blank line is here."""
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    ends = [(i, n) for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    if not ends:
        return None
    index, blank = min(ends)
    return bytes(buffer[:index]).replace(b"\r\n", b"\n"), index + blank


class Connection(asyncio.Protocol):
    """POSTs, one at a time, over one connection, opened when first needed and again after any failure."""

    def __init__(self, target: Target, connect_timeout: float, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout  # seconds the answer may go without a byte arriving
        self.loop = loop
        self.opened = 0  # connections opened so far (keep-alive keeps this at 1)
        self._transport: Optional[asyncio.Transport] = None
        self._opening: Optional[asyncio.Task[None]] = None
        self._waiter: Optional[asyncio.Future[Answer]] = None
        self._parser = AnswerParser()
        self._request = b""
        self._reused = False
        self._deadline = Deadline(loop)
        # A forward proxy (plain http through a proxy) wants the absolute form and its own headers.
        forward_headers = target.proxy[2] if target.proxy is not None and target.tls is None else None
        self._url_prefix = (target.origin if forward_headers is not None else "") + target.base_path + "/"
        headers = [
            f"Host: {target.origin.split('://', 1)[1]}",
            "Content-Type: application/json",
            f"User-Agent: {USER_AGENT}",
        ]
        if forward_headers is not None:
            headers += [f"{name}: {value}" for name, value in forward_headers.items()]
        self._headers = "".join(f"{line}\r\n" for line in headers).encode("latin-1")

    def post(self, path: str, body: bytes) -> asyncio.Future[Answer]:
        """POST body to <metrics URL>/<path> (on the loop); the future fails with OSError or
        http.client.HTTPException when no answer came."""
        assert self._waiter is None, "one POST at a time on a connection"
        waiter: asyncio.Future[Answer] = self.loop.create_future()
        self._waiter = waiter
        request_line = f"POST {self._url_prefix}{path} HTTP/1.1\r\n".encode("ascii")
        self._request = request_line + self._headers + b"Content-Length: %d\r\n\r\n" % len(body) + body
        self._send(reused=True)
        return waiter

    def close(self) -> None:
        """Close it; a POST on it fails (ConnectionAbortedError)."""
        self._finish(error=ConnectionAbortedError("the connection was closed"))
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        self._drop()
        self._deadline.cancel()

    def _send(self, reused: bool) -> None:
        if self._transport is None:
            self._opening = self.loop.create_task(self._open())
            return
        self._reused = reused
        self._parser = AnswerParser()
        self._transport.write(self._request)
        self._wait()

    async def _open(self) -> None:
        target = self.target
        try:
            sock = await self.loop.run_in_executor(None, self._connect)
            tls = target.tls
            await self.loop.create_connection(
                lambda: self,
                sock=sock,
                ssl=tls,
                server_hostname=target.host if tls is not None else None,
                ssl_handshake_timeout=self.connect_timeout if tls is not None else None,
            )
        except Exception as error:  # OSError (refused, TLS...), HTTPException (the tunnel): no answer
            self._finish(error=error)
            return
        finally:
            self._opening = None
        self.opened += 1
        if self._waiter is not None:
            self._send(reused=False)

    def _connect(self) -> socket.socket:
        """A connected socket to the endpoint, or to it through the proxy's tunnel (blocking: on a thread)."""
        target = self.target
        host, port = (target.proxy[0], target.proxy[1]) if target.proxy else (target.host, target.port)
        conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        if target.proxy is not None and target.tls is not None:
            conn.set_tunnel(target.host, target.port, headers=target.proxy[2])
        conn.connect()  # (http.client sets TCP_NODELAY: no delayed-ACK stall)
        sock, conn.sock = conn.sock, None  # ours from now on
        sock.setblocking(False)
        return sock

    # asyncio's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio.Transport subclasses)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self._drop()  # nothing was asked: the connection is not to be trusted
            return
        try:
            answered = self._parser.feed(data)
        except http.client.HTTPException as error:
            self._finish(error=error)
            self._drop()
            return
        if answered is None:
            self._wait()
            return
        answer, keep_alive = answered
        if not keep_alive or self._parser.buffer:
            self._drop()
        self._finish(answer=answer)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport = None
        self._deadline.clear()
        if self._waiter is None:
            return
        if self._reused and not self._parser.received:
            # The endpoint closed the idle kept-alive connection as we reused it: once more, on a new one.
            self._send(reused=False)
            return
        try:
            answer = self._parser.end()
        except http.client.HTTPException as error:
            self._finish(error=exc if isinstance(exc, OSError) else error)
            return
        self._finish(answer=answer)

    # Its state.

    def _finish(self, answer: Optional[Answer] = None, error: Optional[BaseException] = None) -> None:
        self._deadline.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            assert answer is not None
            waiter.set_result(answer)

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()

    def _wait(self) -> None:
        self._deadline.set(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._finish(error=TimeoutError("timed out"))
        self._drop()


class Pool:
    """Idle connections, most recently used first: sequential traffic reuses one, bursts open more.

    Never more connections than POSTs in flight at once (each takes one, posts, gives it back).
    """

    def __init__(self, target: Target, connect_timeout: float, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.loop = loop
        self._idle: List[Connection] = []
        self._all: List[Connection] = []

    def take(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        connection = Connection(self.target, self.connect_timeout, self.timeout, self.loop)
        self._all.append(connection)
        return connection

    def give_back(self, connection: Connection) -> None:
        self._idle.append(connection)

    def close(self) -> None:
        """Close every connection, those with a POST in flight too."""
        for connection in self._all:
            connection.close()
        self._idle, self._all = [], []
