"""The forwarder's HTTP client alone (forwarder/http_client.py): where a connection goes (proxy or not,
TLS verified), and how an answer is read as its bytes arrive, in one piece or byte by byte (delimited by
length, chunks or the connection's end; what is not HTTP is an error). Connections themselves run in
tests/test_forwarder.py, against real endpoints."""

from __future__ import annotations

import base64
import http.client
from typing import List

import pytest

from otel_metrics.forwarder.http_client import Answer, AnswerParser, target_for


def test_a_loopback_endpoint_never_goes_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    target = target_for("http://127.0.0.1:8080/upload/")
    assert (target.origin, target.host, target.port, target.base_path, target.proxy, target.tls) == (
        "http://127.0.0.1:8080", "127.0.0.1", 8080, "/upload", None, None,
    )  # fmt: skip


def test_a_remote_endpoint_goes_through_the_proxy_with_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://me:s%40cret@proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    target = target_for("http://metrics.example/upload")
    credentials = base64.b64encode(b"me:s@cret").decode()
    assert target.proxy == ("proxy.example", 3128, {"Proxy-Authorization": f"Basic {credentials}"})
    assert target.origin == "http://metrics.example"
    monkeypatch.setenv("no_proxy", "metrics.example")
    monkeypatch.setenv("NO_PROXY", "metrics.example")
    assert target_for("http://metrics.example/upload").proxy is None


def test_https_is_verified_and_other_schemes_are_refused() -> None:
    target = target_for("https://metrics.example/upload")
    assert (target.port, target.tls is not None) == (443, True)
    assert target.tls.check_hostname
    with pytest.raises(ValueError, match="http:// or https://"):
        target_for("ftp://metrics.example/upload")


def pieces(raw: bytes, whole: bool) -> List[bytes]:
    return [raw] if whole else [raw[i : i + 1] for i in range(len(raw))]


def answer_to(whole: bool, raw: bytes) -> tuple:
    """The answer, whether the connection may carry another, and what is left for the next answer;
    the connection closes after `raw` if the answer is not complete by then."""
    parser = AnswerParser()
    sent = pieces(raw, whole) or [b""]
    for index, piece in enumerate(sent):
        answered = parser.feed(piece)
        if answered is not None:
            return (*answered, bytes(parser.buffer) + b"".join(sent[index + 1 :]))
    return parser.end(), False, bytes(parser.buffer)


@pytest.mark.parametrize("whole", [True, False], ids=["in one piece", "byte by byte"])
def test_answers_delimited_by_length_chunks_or_the_end_of_the_connection(whole: bool) -> None:
    assert answer_to(whole, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 7\r\n\r\n{}HTTP/1.1 ...") == (
        Answer(200, b"{}", "7"), True, b"HTTP/1.1 ...",
    )  # fmt: skip
    chunked = (
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbusy\r\n3\r\n!!!\r\n0\r\nT: v\r\n\r\nnext"
    )
    assert answer_to(whole, chunked) == (Answer(503, b"busy!!!", None), True, b"next")
    assert answer_to(whole, b"HTTP/1.1 400 Bad\r\nConnection: close\r\n\r\nno length") == (
        Answer(400, b"no length", None), False, b"",
    )  # fmt: skip
    assert answer_to(whole, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[1] is False
    assert answer_to(whole, b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")[1] is True
    assert answer_to(whole, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n") == (
        Answer(204, b"", None), True, b"",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", http.client.RemoteDisconnected),
        (b"SMTP ready\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", http.client.HTTPException),
    ],
)
@pytest.mark.parametrize("whole", [True, False], ids=["in one piece", "byte by byte"])
def test_answers_that_are_not_http_are_errors(raw: bytes, error: type, whole: bool) -> None:
    with pytest.raises(error):
        answer_to(whole, raw)
