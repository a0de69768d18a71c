"""Keep-alive HTTP/1.1 connections to the metrics endpoint, pooled for the delivery workers.

Not requests: posting is the forwarder's hot loop, and a POST through requests
costs some twenty times the CPU of one here (docs/scaling.md). What requests gave
us is kept: a remote endpoint is reached through HTTP(S)_PROXY unless NO_PROXY
names it, a loopback one never is, and TLS is verified against certifi's CA
bundle (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace it, as for requests).
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ..config import is_loopback_url

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


class Connection:
    """POSTs over one connection, opened when first needed and again after any failure.

    http.client opens it (the proxy's CONNECT tunnel and TLS included); the requests and
    answers on it are read and written here. http.client's own reading parses each
    answer's headers with the email package, which cost the forwarder nearly half of its
    CPU per delivered payload; an answer of the endpoint needs a status line, a few
    headers and a body delimited as HTTP/1.1 delimits them.
    """

    def __init__(self, target: Target, connect_timeout: float, timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._sock: Optional[socket.socket] = None
        self._reader: Optional[BinaryIO] = None
        self.opened = 0  # connections opened so far (keep-alive keeps this at 1)
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

    def post(self, path: str, body: bytes) -> Answer:
        """POST body to <metrics URL>/<path>; raises OSError or http.client.HTTPException when no answer came."""
        reused = self._sock is not None
        try:
            return self._post(path, body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # The endpoint closed the idle kept-alive connection as we reused it: once more, on a new one.
            return self._post(path, body)

    def _post(self, path: str, body: bytes) -> Answer:
        if self._sock is None:
            self._open()
        assert self._sock is not None and self._reader is not None
        request_line = f"POST {self._url_prefix}{path} HTTP/1.1\r\n".encode("ascii")
        try:
            self._sock.sendall(request_line + self._headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            answer, keep_alive = read_answer(self._reader)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return answer

    def _open(self) -> None:
        target = self.target
        host, port = (target.proxy[0], target.proxy[1]) if target.proxy else (target.host, target.port)
        if target.tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=target.tls
            )
            if target.proxy is not None:
                conn.set_tunnel(target.host, target.port, headers=target.proxy[2])
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        conn.connect()  # (http.client sets TCP_NODELAY: no delayed-ACK stall)
        sock, conn.sock = conn.sock, None  # ours from now on
        sock.settimeout(self.timeout)  # for every read and write
        self._sock = sock
        self._reader = sock.makefile("rb")
        self.opened += 1

    def close(self) -> None:
        if self._sock is not None:
            assert self._reader is not None
            self._reader.close()
            self._sock.close()
            self._sock = self._reader = None


def read_answer(reader: BinaryIO) -> Tuple[Answer, bool]:
    """One HTTP/1.x response: (the answer, whether the connection may carry another request)."""
    while True:
        status_line = reader.readline(MAX_LINE + 1)
        if not status_line:
            raise http.client.RemoteDisconnected("the endpoint closed the connection without an answer")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not (version.startswith(b"HTTP/1.") and code.isdigit() and len(status_line) <= MAX_LINE):
            raise http.client.BadStatusLine(status_line.decode("latin-1", "replace").strip())
        headers = _read_headers(reader)
        status = int(code)
        if not 100 <= status < 200:
            break  # (an interim 1xx answer is followed by the real one)
    connection = headers.get(b"connection", b"").lower()
    keep_alive = connection != b"close" and (version != b"HTTP/1.0" or connection == b"keep-alive")
    if status in (204, 304):
        body = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = _read_chunked(reader)
    elif b"content-length" in headers:
        length_text = headers[b"content-length"]
        if not length_text.isdigit():
            raise http.client.HTTPException(f"bad Content-Length {length_text!r}")
        body = reader.read(int(length_text))
        if len(body) != int(length_text):
            raise http.client.IncompleteRead(body, int(length_text) - len(body))
    else:  # the body runs to the end of the connection
        body = reader.read(RESPONSE_READ_LIMIT)
        keep_alive = False
    retry_after = headers.get(b"retry-after")
    answer = Answer(status, body[:RESPONSE_READ_LIMIT], retry_after.decode("latin-1") if retry_after else None)
    return answer, keep_alive


def _read_headers(reader: BinaryIO) -> Dict[bytes, bytes]:
    headers: Dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS + 1):
        line = reader.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n", b""):
            return headers
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    raise http.client.HTTPException(f"more than {MAX_HEADERS} header fields")


def _read_chunked(reader: BinaryIO) -> bytes:
    body = bytearray()
    while True:
        size_text = reader.readline(MAX_LINE + 1).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size_text!r}") from None
        if size == 0:
            _read_headers(reader)  # trailer fields, up to the blank line
            return bytes(body)
        chunk = reader.read(size)
        if len(chunk) != size:
            raise http.client.IncompleteRead(bytes(body) + chunk)
        if len(body) < RESPONSE_READ_LIMIT:
            body += chunk
        reader.readline(MAX_LINE + 1)  # the CRLF after the chunk


class Pool:
    """Idle connections, most recently used first: sequential traffic reuses one, bursts open more.

    Never more connections than threads using them at once (each takes one, posts, gives it back).
    """

    def __init__(self, target: Target, connect_timeout: float, timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: List[Connection] = []
        self._lock = threading.Lock()

    def take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Connection(self.target, self.connect_timeout, self.timeout)

    def give_back(self, connection: Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
