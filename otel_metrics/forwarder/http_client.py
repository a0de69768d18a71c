"""Keep-alive HTTP/1.1 connections to the metrics endpoint, pooled for the delivery workers.

The standard library's http.client, not requests: posting is the forwarder's hot
loop, and requests costs about four times the CPU per POST (measured in
docs/scaling.md). What requests gave us is kept: a remote endpoint is reached
through HTTP(S)_PROXY unless NO_PROXY names it, a loopback one never is, and TLS
is verified against certifi's CA bundle (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
replace it, as for requests).
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import threading
import urllib.request
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ..config import is_loopback_url

RESPONSE_READ_LIMIT = 64 * 1024  # bytes of an answer's body kept (the rest is read and dropped)
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
        import certifi  # requests' own CA bundle, installed with it

        bundle = certifi.where()
    return ssl.create_default_context(cafile=bundle)


class Connection:
    """POSTs over one connection, opened when first needed and again after any failure."""

    def __init__(self, target: Target, connect_timeout: float, timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None
        self.opened = 0  # connections opened so far (keep-alive keeps this at 1)

    def post(self, path: str, body: bytes) -> Answer:
        """POST body to <metrics URL>/<path>; raises OSError or http.client.HTTPException when no answer came."""
        reused = self._conn is not None
        try:
            return self._post(path, body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # The endpoint closed the idle kept-alive connection as we reused it: once more, on a new one.
            return self._post(path, body)

    def _post(self, path: str, body: bytes) -> Answer:
        conn = self._conn or self._open()
        target = self.target
        url = f"{target.base_path}/{path}"
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if target.proxy is not None and target.tls is None:
            url = target.origin + url  # a forward proxy wants the absolute form
            headers.update(target.proxy[2])
        try:
            conn.request("POST", url, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(RESPONSE_READ_LIMIT)
            answer = Answer(response.status, data, response.getheader("Retry-After"))
        except BaseException:
            self.close()
            raise
        if response.will_close or not response.isclosed():  # closing, or an answer too long to read
            self.close()
        return answer

    def _open(self) -> http.client.HTTPConnection:
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
        conn.sock.settimeout(self.timeout)  # from now on, for every read and write
        self._conn = conn
        self.opened += 1
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
