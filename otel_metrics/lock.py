"""Exclusive file locks, held for a process's life and dropped by the OS when it dies.

The exporter lock: whoever holds it is the one background exporter draining the spool.
On POSIX a hook takes the lock and hands the open descriptor to the exporter it
starts, so between them there is never a moment without an owner and bursts of
hooks start one exporter, not fifty. Stdlib only: it runs on the hook's fast path.
"""

import os
import sys

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Optional

LOCK_FILE = "exporter.lock"
ENV_LOCK_FD = "OTEL_METRICS_EXPORTER_LOCK_FD"


def path(state_dir: str) -> str:
    return os.path.join(state_dir, LOCK_FILE)


def try_acquire(state_dir: str) -> "Optional[int]":
    """An open descriptor holding the exporter lock, or None when another process holds it."""
    return try_lock(path(state_dir))


def try_lock(lock_path: str) -> "Optional[int]":
    """An open descriptor holding the lock on this file, or None when another process holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _lock(fd):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def release(fd: int) -> None:
    os.close(fd)  # closing the last descriptor drops the lock


if sys.platform == "win32":
    import msvcrt

    def _lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
