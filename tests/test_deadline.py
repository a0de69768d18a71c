"""A deadline alone (deadline.py), on a real event loop: it fires once, when it is due, whatever moves
it had; moving it later arms no timer; cleared, it never fires."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator, List

import pytest

from otel_metrics.deadline import Deadline


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the timers armed on it."""

    armed = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        self.armed += 1
        return super().call_at(when, callback, *args, context=context)


@pytest.fixture
def loop() -> Iterator[CountingLoop]:
    loop = CountingLoop()
    yield loop
    loop.close()


def run_until(loop: CountingLoop, fired: List[float], count: int) -> None:
    async def wait() -> None:
        while len(fired) < count:
            await asyncio.sleep(0.005)

    loop.run_until_complete(asyncio.wait_for(wait(), 10))


def test_moved_later_many_times_it_fires_once_when_due_from_one_timer(
    loop: CountingLoop,
) -> None:
    fired: List[float] = []
    deadline = Deadline(loop)
    for _ in range(1000):  # a busy connection moves its deadline at every request
        deadline.set(0.02, lambda: fired.append(loop.time()))
    due = deadline.at
    assert due is not None
    armed = loop.armed
    run_until(loop, fired, 1)
    assert fired[0] >= due  # never early
    assert armed == 1  # one timer for a thousand moves
    loop.run_until_complete(asyncio.sleep(0.05))
    assert len(fired) == 1 and deadline.at is None


def test_moved_earlier_it_fires_at_the_earlier_time_with_the_last_callback(loop: CountingLoop) -> None:
    fired: List[str] = []
    deadline = Deadline(loop)
    deadline.set(60.0, lambda: fired.append("idle"))
    deadline.set(0.01, lambda: fired.append("request"))
    run_until(loop, fired, 1)
    assert fired == ["request"]


def test_cleared_or_cancelled_it_never_fires(loop: CountingLoop) -> None:
    fired: List[str] = []
    cleared, cancelled = Deadline(loop), Deadline(loop)
    cleared.set(0.01, lambda: fired.append("cleared"))
    cancelled.set(0.01, lambda: fired.append("cancelled"))
    cleared.clear()
    cancelled.cancel()
    loop.run_until_complete(asyncio.sleep(0.05))
    assert fired == []
