"""event_loop.py: uvloop where installed and asked for, asyncio's own otherwise, a clear error when
uvloop is demanded and missing. (The forwarder's tests run real processes on each kind.)"""

from __future__ import annotations

import asyncio
import sys

import pytest

from otel_metrics import event_loop
from otel_metrics.event_loop import EventLoopUnavailable, new_event_loop

uvloop = pytest.importorskip("uvloop")


@pytest.mark.parametrize(("choice", "kind"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_each_choice_gives_its_loop(choice: str, kind: str) -> None:
    loop = new_event_loop(choice)
    try:
        assert event_loop.name(loop) == kind
        assert isinstance(loop, uvloop.Loop) == (kind == "uvloop")
        assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed: importing it fails
    loop = new_event_loop("auto")
    try:
        assert event_loop.name(loop) == "asyncio"
    finally:
        loop.close()
    with pytest.raises(EventLoopUnavailable, match="pip install uvloop"):
        new_event_loop("uvloop")


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        new_event_loop("trio")
