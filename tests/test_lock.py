"""The exporter lock alone (lock.py): one holder at a time, across processes; dropped when its holder
closes it or dies, whatever the death; handed to a child process with the descriptor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from otel_metrics import lock
from support.paths import REPO
from support.processes import stop_process

# A process that takes the lock of the state directory in argv[1], says so, and holds it until killed.
HOLDER = """
import sys, threading
from otel_metrics import lock
fd = lock.try_acquire(sys.argv[1])
print("held" if fd is not None else "refused", flush=True)
threading.Event().wait()
"""


@pytest.fixture
def holder(state: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the state directory's exporter lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    stop_process(proc, signal.SIGKILL)


def test_a_second_holder_is_refused_while_the_first_lives(state: Path, holder: subprocess.Popen) -> None:
    assert lock.try_acquire(str(state)) is None
    assert lock.try_acquire(str(state)) is None  # asking again changes nothing


@pytest.mark.parametrize("death", [signal.SIGTERM, signal.SIGKILL])
def test_the_lock_is_dropped_when_its_holder_dies(state: Path, holder: subprocess.Popen, death: int) -> None:
    stop_process(holder, death)  # killed: no code of its own ran to release it
    fd = lock.try_acquire(str(state))
    assert fd is not None
    lock.release(fd)


def test_release_lets_the_next_holder_in(state: Path) -> None:
    first = lock.try_acquire(str(state))
    assert first is not None
    assert lock.try_acquire(str(state)) is None  # a second descriptor, even in this process, is refused
    lock.release(first)
    second = lock.try_acquire(str(state))
    assert second is not None
    lock.release(second)
    assert Path(lock.path(str(state))).stat().st_mode & 0o777 == 0o600


def test_locks_of_other_files_are_independent(state: Path, tmp_path: Path) -> None:
    exporter = lock.try_acquire(str(state))
    outbox = lock.try_lock(str(tmp_path / "outbox.sqlite.lock"))
    assert exporter is not None and outbox is not None
    lock.release(exporter)
    lock.release(outbox)


def test_the_descriptor_handed_to_a_child_keeps_the_lock_after_the_parent_lets_go(state: Path) -> None:
    """How a hook hands the lock to the exporter it starts: never a moment without an owner."""
    fd = lock.try_acquire(str(state))
    assert fd is not None
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, pass_fds=(fd,)
    )
    try:
        lock.release(fd)  # the parent's copy is closed; the child's still holds it
        assert lock.try_acquire(str(state)) is None
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the child ends, and with it the last descriptor
        assert child.wait(15) == 0
    fd = lock.try_acquire(str(state))
    assert fd is not None
    lock.release(fd)
    assert os.path.exists(lock.path(str(state)))
