"""The HTTP server both servers stand on, alone: framing, keep-alive, its bounds and its errors, over real sockets."""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

from otel_metrics.http_server import ConnectionBounds, HttpServer, Request, Response, text_response
from support.processes import wait_for
from support.raw_http import raw_exchange, read_until_closed


def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("a bug")
    if request.path == "/slow":
        time.sleep(0.3)  # a slow handler: what the tests of slow answers need
    return text_response(200, f"{request.method} {request.target} {len(request.body)} {request.body[:20]!r}")


@pytest.fixture
def start_server() -> Iterator[Callable[..., HttpServer]]:
    started: List[HttpServer] = []

    def start(**options: Any) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, options.pop("handle", echo), "test-server", **{"max_body_bytes": 1000,
                                                                                            **options})  # fmt: skip
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., HttpServer]) -> HttpServer:
    return start_server()


def connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(server.address, timeout=10)


def read_answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length, from a connection that stays open; never a byte of the next
    (pipelined answers may arrive in one segment): the head a byte at a time, then the body exactly."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {head!r}")
        head += byte
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError(f"closed after {head + body!r}")
        body += chunk
    return head + body


def status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        first, second = read_answer(sock), read_answer(sock)
        assert (status_line(first), body_of(first)) == (b"HTTP/1.1 200 OK", b"GET /a 0 b''\n")
        assert body_of(second) == b"POST /b 3 b'abc'\n"
        assert b"Date: " in first and b"Server: test-server" in first and b"Connection: close" not in first
        sock.sendall(b"\r\nGET /c?q=1 HTTP/1.1\r\n\r\n")  # a stray blank line between requests is skipped
        assert body_of(read_answer(sock)) == b"GET /c?q=1 0 b''\n"


def test_a_responder_on_the_loop_answers_at_once_or_later_in_order(
    start_server: Callable[..., HttpServer],
) -> None:
    """`respond` runs on the loop: answered at once (even thousands of pipelined requests: no
    recursion), or later from another callback, each connection's answers in order."""
    servers: List[HttpServer] = []

    def respond(request: Request, reply: Callable[[Response], None]) -> None:
        answer = text_response(200, request.path)
        if request.path.startswith("/later"):
            servers[0].loop.call_later(0.01, reply, answer)
        else:
            reply(answer)

    servers.append(start_server(handle=None, respond=respond))
    requests = [b"GET /later HTTP/1.1\r\n\r\n", b"GET /now HTTP/1.1\r\n\r\n"] + [b"GET /many HTTP/1.1\r\n\r\n"] * 3000
    answered = raw_exchange(
        servers[0].address[1], b"".join(requests) + b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert re.findall(rb"\r\n\r\n(/[a-z]+)\n", answered) == [b"/later", b"/now"] + [b"/many"] * 3000 + [b"/last"]


def test_chunked_bodies_with_extensions_and_trailers(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n")
        time.sleep(0.05)  # in pieces, as they come
        sock.sendall(b"A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
        assert body_of(read_answer(sock)) == b"POST /c 13 b'abc0123456789'\n"


def test_expect_100_continue(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert body_of(read_answer(sock)) == b"POST /e 2 b'ok'\n"


def test_a_head_request_is_answered_without_a_body(server: HttpServer) -> None:
    answer = raw_exchange(server.address[1], b"HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 14\r\n" in answer
    assert answer.endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /x HTTP/1.0\r\n\r\n", b"200 OK"),  # HTTP/1.0: one request per connection
        (b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", b"200 OK"),
        (b"NOT A REQUEST\r\n\r\n", b"400 Bad Request"),
        (b"GET /x HTTP/2.0\r\n\r\n", b"505 HTTP Version Not Supported"),
        (b"GET /x HTTP/1.1\r\nno colon\r\n\r\n", b"400 Bad Request"),
        (b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", b"400 Bad Request"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", b"400 Bad Request"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1a\r\n\r\n", b"400 Bad Request"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", b"413 Request Entity Too Large"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501 Not Implemented"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400 Bad Request"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", b"400 Bad Request"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", b"413 Request Entity Too Large"),
        (b"GET /x HTTP/1.1\r\nExpect: a miracle\r\n\r\n", b"417 Expectation Failed"),
        (b"GET /x HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", b"431 Request Header Fields Too Large"),
        (b"GET /x HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"431 Request Header Fields Too Large"),
        (b"GET /boom HTTP/1.1\r\n\r\n", b"500 Internal Server Error"),
    ],
)
def test_one_answer_then_the_connection_closes(server: HttpServer, request_bytes: bytes, status: bytes) -> None:
    answer = raw_exchange(server.address[1], request_bytes)
    assert status_line(answer) == b"HTTP/1.1 " + status
    assert b"\r\nConnection: close\r\n" in answer


def test_a_request_with_both_framings_is_read_chunked_and_the_connection_closed(server: HttpServer) -> None:
    answer = raw_exchange(
        server.address[1], b"POST /x HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert body_of(answer) == b"POST /x 0 b''\n" and b"Connection: close" in answer


def test_a_server_that_wants_lengths_refuses_chunked_bodies(start_server: Callable[..., HttpServer]) -> None:
    server = start_server(lengths_only=True)
    port = server.address[1]
    assert status_line(raw_exchange(port, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")) == (
        b"HTTP/1.1 411 Length Required"
    )
    assert status_line(raw_exchange(port, b"POST /x HTTP/1.1\r\n\r\n")) == b"HTTP/1.1 411 Length Required"
    assert body_of(raw_exchange(port, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")) == b"GET /x 0 b''\n"


def test_a_client_that_stops_sending_still_gets_its_answer(server: HttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    assert body_of(answer) == b"GET /slow 0 b''\n"


def test_a_request_must_arrive_within_its_deadline_however_it_trickles(
    start_server: Callable[..., HttpServer],
) -> None:
    server = start_server(bounds=ConnectionBounds(request_seconds=0.5))
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        for _ in range(20):  # a byte every 0.1 s: each read is quick, the request never ends
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        answer = read_until_closed(sock)
    assert status_line(answer) == b"HTTP/1.1 408 Request Timeout"
    assert body_of(answer) == b"the request did not arrive within 0.5 s\n"
    assert time.monotonic() - started < 2.0  # not the 2 s of trickling


def test_at_the_bound_a_new_connection_closes_the_idlest(start_server: Callable[..., HttpServer]) -> None:
    server = start_server(bounds=ConnectionBounds(max_connections=3))
    idle = connect(server)
    idle.sendall(b"GET / HTTP/1.1\r\n\r\n")
    read_answer(idle)  # answered, now idle between requests
    reading = [connect(server), connect(server)]
    for sock in reading:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # part of a head: reading its request
    wait_for(lambda: server.open_connections == 3)
    newest = connect(server)
    assert read_until_closed(idle) == b""  # the idle one made room
    newest.sendall(b"GET /new HTTP/1.1\r\n\r\n")
    assert body_of(read_answer(newest)) == b"GET /new 0 b''\n"
    newest.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.1)  # the server reads these bytes: it is then reading a request, for less time than the others
    later = connect(server)  # none idle now: the one reading its request the longest goes
    assert read_until_closed(reading[0]) == b""
    later.sendall(b"GET /later HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert body_of(read_until_closed(later)) == b"GET /later 0 b''\n"
    for sock in (newest, reading[1]):
        sock.sendall(b"\r\n")
        assert body_of(read_answer(sock)) == b"GET / 0 b''\n"  # never starved: still served
        sock.close()


def test_connections_being_answered_are_never_closed_to_make_room(start_server: Callable[..., HttpServer]) -> None:
    handling, release = threading.Event(), threading.Event()

    def held(request: Request) -> Response:
        handling.set()
        release.wait(10)
        return text_response(200, "done")

    server = start_server(bounds=ConnectionBounds(max_connections=1), handle=held)
    busy = connect(server)
    busy.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert handling.wait(10)  # its request is with the handler
    answer = raw_exchange(server.address[1], b"GET / HTTP/1.1\r\n\r\n")
    assert status_line(answer) == b"HTTP/1.1 503 Service Unavailable"
    release.set()
    assert body_of(read_answer(busy)) == b"done\n"
    busy.close()


def test_stop_closes_every_connection_and_the_port(start_server: Callable[..., HttpServer]) -> None:
    server = start_server()
    sock = connect(server)
    sock.sendall(b"GET / HTTP/1.1\r\n")
    server.stop()
    assert read_until_closed(sock) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5)


def test_an_address_in_use_is_an_error_at_once(server: HttpServer) -> None:
    with pytest.raises(OSError):
        HttpServer("127.0.0.1", server.address[1], echo, "second", max_body_bytes=10)
