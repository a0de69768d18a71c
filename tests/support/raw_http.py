"""What tests do to servers from outside, over raw sockets: a request as bytes, connections that are
not well-behaved clients (simultaneous ones, slow ones), and a `requests` session for loopback.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Dict, List, Set

import requests


def loopback_session() -> requests.Session:
    """A `requests` session that ignores the environment's proxies: tests talk to loopback."""
    http = requests.Session()
    http.trust_env = False
    return http


def raw_post(path: str, body: bytes, content_type: str = "application/x-protobuf") -> bytes:
    """A whole POST request with a Content-Length, closing the connection after its answer."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode("ascii") + body


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    except ConnectionResetError:
        return received


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a new connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def connect_all_while_stopped(
    proc: subprocess.Popen, port: int, count: int, seconds: float = 2.0
) -> List[socket.socket]:
    """Open `count` connections while the server process is stopped (SIGSTOP), so that none is
    accepted and each must wait in its listen backlog; the connections whose handshake completed.

    Beyond the backlog the kernel drops the SYNs (the client retries after 1 s, 3 s...), so those
    stay unconnected for `seconds`. The process is resumed before returning; the caller closes them.
    """
    sockets = []
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
        connected: List[socket.socket] = []
        pending = list(sockets)
        deadline = time.monotonic() + seconds
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
            for sock in writable:
                pending.remove(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(sock)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    for sock in sockets:
        if sock not in connected:
            sock.close()
    return connected


def answers_on(sockets: List[socket.socket], requests: List[bytes], timeout: float = 30.0) -> List[bytes]:
    """Send each connection its request (with `Connection: close`), all at once; each one's answer."""
    for sock, request in zip(sockets, requests):
        sock.setblocking(True)
        sock.sendall(request)
    results: List[bytes] = [b""] * len(sockets)

    def read(index: int) -> None:
        results[index] = read_until_closed(sockets[index], timeout)

    readers = [threading.Thread(target=read, args=(index,)) for index in range(len(sockets))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return results


class Tricklers:
    """Connections that send a request head one byte at a time, every `interval` seconds, forever:
    each read arrives well within any per-read timeout. .open() says how many the server has not
    closed; .answers holds what the server sent on each before closing it."""

    HEAD = b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nX-Slow: "

    def __init__(self, port: int, count: int, interval: float = 0.3) -> None:
        self.interval = interval
        self.sockets: List[socket.socket] = []
        self.answers: Dict[socket.socket, bytes] = {}
        self.closed: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(self.HEAD)
            self.sockets.append(sock)
            self._check(sock)
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def open(self) -> int:
        with self._lock:
            for sock in self.sockets:
                self._check(sock)
            return len(self.sockets) - len(self.closed)

    def _check(self, sock: socket.socket) -> None:
        if sock in self.closed:
            return
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        self.answers[sock] = self.answers.get(sock, b"") + data
        if not data:
            self.closed.add(sock)

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for sock in self.sockets:
                    if sock in self.closed:
                        continue
                    try:
                        sock.send(b"x")
                    except OSError:
                        self.closed.add(sock)
                    self._check(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()
