"""Delivery's parts alone (forwarder/delivery.py): the circuit's states, and how an endpoint's answer is
classified (delivered, refused for good, retried). The whole delivery runs in tests/test_forwarder.py."""

from __future__ import annotations

import pytest

from otel_metrics.backoff import Backoff
from otel_metrics.forwarder.delivery import CIRCUIT_THRESHOLD, DELIVERED, REFUSED, RETRY, Circuit, outcome_of
from otel_metrics.forwarder.http_client import Answer

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
