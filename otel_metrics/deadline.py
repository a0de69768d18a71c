"""A deadline on an asyncio loop that costs no timer to move.

A connection moves its deadline at every request (reading one, answering it,
waiting for the next). Cancelling and arming a timer each time is a heap push
and a cancelled entry per move; here a move is an assignment, and one timer is
armed only when the deadline comes earlier than the one armed: when that timer
fires before the deadline it is armed again for what is left.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional


class Deadline:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.at: Optional[float] = None  # loop time, None: none set
        self._expired: Callable[[], None] = _nothing
        self._timer: Optional[asyncio.TimerHandle] = None
        self._armed_at = 0.0

    def set(self, seconds: float, expired: Callable[[], None]) -> None:
        """`expired()` runs in `seconds` unless the deadline is set again or cleared before."""
        self.at = self.loop.time() + seconds
        self._expired = expired
        if self._timer is None or self._armed_at > self.at:
            self._arm(self.at)

    def clear(self) -> None:
        """No deadline (the timer armed stays, and finds nothing to do when it fires)."""
        self.at = None

    def cancel(self) -> None:
        """No deadline and no timer: the owner is done."""
        self.at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self.loop.call_at(when, self._fired)

    def _fired(self) -> None:
        self._timer = None
        if self.at is None:
            return
        if self.loop.time() < self.at:
            self._arm(self.at)
            return
        self.at = None
        self._expired()


def _nothing() -> None:
    pass
