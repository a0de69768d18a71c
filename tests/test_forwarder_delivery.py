"""Delivery's parts alone: the circuit's states, how an answer is classified, where a connection goes."""

from __future__ import annotations

import base64
import http.client
import io

import pytest

from otel_metrics.backoff import Backoff
from otel_metrics.forwarder.delivery import CIRCUIT_THRESHOLD, DELIVERED, REFUSED, RETRY, Circuit, outcome_of
from otel_metrics.forwarder.http_client import Answer, read_answer, target_for

NO_JITTER = Backoff(initial=1.0, maximum=8.0, jitter=0.0)


def opened(now: float = 100.0) -> Circuit:
    circuit = Circuit(NO_JITTER)
    for _ in range(CIRCUIT_THRESHOLD - 1):
        assert circuit.failed(probe=False, now=now, retry_after=None) is None
        assert circuit.closed
    assert circuit.failed(probe=False, now=now, retry_after=None) == 1.0
    return circuit


def test_failures_in_a_row_open_the_circuit_and_an_answer_between_them_does_not() -> None:
    circuit = Circuit(NO_JITTER)
    for _ in range(CIRCUIT_THRESHOLD - 1):
        circuit.failed(probe=False, now=0.0, retry_after=None)
    assert circuit.answered() is None  # it was closed
    circuit.failed(probe=False, now=0.0, retry_after=None)
    assert circuit.closed and circuit.may_send(0.0)
    assert not opened().closed


def test_an_open_circuit_sends_one_probe_at_a_time_at_backoff_spaced_times() -> None:
    circuit = opened(now=100.0)
    assert not circuit.may_send(100.5)
    assert circuit.wait(100.5) == 0.5
    assert circuit.may_send(101.0)
    assert circuit.sent()  # the probe
    assert not circuit.may_send(200.0) and circuit.wait(200.0) is None  # until its answer
    assert circuit.failed(probe=True, now=101.0, retry_after=None) == 2.0  # the next probe waits longer
    assert circuit.failed(probe=False, now=101.5, retry_after=None) is None  # a straggler changes nothing
    assert circuit.may_send(103.0) and circuit.sent()
    assert circuit.failed(probe=True, now=103.0, retry_after=None) == 4.0
    assert circuit.may_send(107.0) and circuit.sent()
    assert circuit.failed(probe=True, now=107.0, retry_after=30.0) == 30.0  # Retry-After is a floor


def test_the_first_answer_closes_the_circuit() -> None:
    circuit = opened()
    assert circuit.sent()
    assert circuit.answered() is not None
    assert circuit.closed and circuit.failures == 0 and not circuit.sent()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, DELIVERED), (204, DELIVERED), (400, REFUSED), (404, REFUSED), (413, REFUSED), (422, REFUSED),
     (408, RETRY), (425, RETRY), (429, RETRY), (500, RETRY), (502, RETRY), (503, RETRY), (301, RETRY)],
)  # fmt: skip
def test_answers_are_delivered_refused_for_good_or_retried(status: int, kind: str) -> None:
    outcome = outcome_of(Answer(status, b'{"error": "x"}\n', "3"))
    assert (outcome.kind, outcome.status, outcome.detail) == (kind, status, '{"error": "x"}')
    assert outcome.retry_after == (3.0 if kind == RETRY else None)


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


def answer_to(raw: bytes) -> tuple:
    reader = io.BufferedReader(io.BytesIO(raw))
    answer, keep_alive = read_answer(reader)
    return answer, keep_alive, reader.read()  # and what is left for the next answer


def test_answers_delimited_by_length_chunks_or_the_end_of_the_connection() -> None:
    assert answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After: 7\r\n\r\n{}HTTP/1.1 ...") == (
        Answer(200, b"{}", "7"), True, b"HTTP/1.1 ...",
    )  # fmt: skip
    chunked = (
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbusy\r\n3\r\n!!!\r\n0\r\nT: v\r\n\r\nnext"
    )
    assert answer_to(chunked) == (Answer(503, b"busy!!!", None), True, b"next")
    assert answer_to(b"HTTP/1.1 400 Bad\r\nConnection: close\r\n\r\nno length") == (
        Answer(400, b"no length", None), False, b"",
    )  # fmt: skip
    assert answer_to(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[1] is False
    assert answer_to(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")[1] is True
    assert answer_to(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n") == (
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
def test_answers_that_are_not_http_are_errors(raw: bytes, error: type) -> None:
    with pytest.raises(error):
        answer_to(raw)
