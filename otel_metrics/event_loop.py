"""The servers' event loop: uvloop's where it is installed, else asyncio's own.

uvloop (libuv under asyncio's interface) answers the same requests with about a fifth less
CPU: the forwarder benchmark measures both side by side. It is optional (`pip install
'claude-plugin-usage-metrics[uvloop]'`, in the container image; not on Windows), so the
plugin's embedded forwarder, which sees a handful of requests per session, runs on asyncio's.
"""

from __future__ import annotations

import asyncio

AUTO, ASYNCIO, UVLOOP = "auto", "asyncio", "uvloop"
CHOICES = (AUTO, ASYNCIO, UVLOOP)


class EventLoopUnavailable(Exception):
    """uvloop was asked for and cannot be imported here."""


def new_event_loop(choice: str = AUTO) -> asyncio.AbstractEventLoop:
    """A new loop of the kind chosen: `auto` takes uvloop when it imports, asyncio's otherwise."""
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r}: one of {', '.join(CHOICES)}")
    if choice != ASYNCIO:
        try:
            import uvloop
        except ImportError as error:
            if choice == UVLOOP:
                raise EventLoopUnavailable(
                    f"--event-loop uvloop needs uvloop ({error}): `pip install uvloop` where otel-metrics runs"
                ) from error
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def name(loop: asyncio.AbstractEventLoop) -> str:
    """What the log says the server runs on."""
    return UVLOOP if type(loop).__module__.startswith("uvloop") else ASYNCIO
