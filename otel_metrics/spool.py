"""The local spool: one file per hook record, written atomically, removed once exported.

Hooks append (fast path: stdlib only, no `json`); the background exporter,
the only reader (it holds the exporter lock), lists, reads and removes.
The plugin's shell entry (plugin/scripts/run) writes a SessionEnd hook's input as
it came, with HOOK_INPUT_SUFFIX, so that Claude Code waits for no interpreter;
hook_input.adopt turns each into a record.
"""

import os
import time

from .fastjson import dumps_record

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

    Record = Mapping[str, object]

SPOOL_DIR = "spool"
SUFFIX = ".json"
# Records that need no export of their own (a session started): they wait for the exporter
# instead of waking one, which would compete with Claude Code's start-up.
NO_WAKE_SUFFIX = ".nowake.json"
POKE_FILE = ".poke"
# A hook's input as Claude Code gave it, written by the shell entry (its name: see plugin/scripts/run).
HOOK_INPUT_SUFFIX = ".hookinput"

# What a record is, its "record" key: the hooks write the first three, the exporter turns a
# session end into a ready session record before sending it.
EVENT = "event"
SESSION_START = "session_start"
SESSION_END = "session_end"
SESSION = "session"


def directory(state_dir: str) -> str:
    return os.path.join(state_dir, SPOOL_DIR)


def append(state_dir: str, record: "Record", wake: bool = True) -> str:
    """Record durably: write a hidden temp file, then rename it into place.

    The rename is atomic, so the exporter never sees a half-written record, and
    concurrent hooks never collide (pid + random suffix in every name).
    """
    spool = directory(state_dir)
    name = record_name(time.time_ns(), f"{os.getpid()}-{os.urandom(4).hex()}")
    data = dumps_record(record).encode("ascii")
    temp = os.path.join(spool, "." + name + ".tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        os.makedirs(spool, mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError("short write to the spool (disk full?)")
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    final = name + (SUFFIX if wake else NO_WAKE_SUFFIX)
    os.replace(temp, os.path.join(spool, final))
    return final


def poke(state_dir: str, settings: "Optional[Mapping[str, str]]" = None) -> None:
    """Tell a running exporter that a hook fired, and with which settings (it watches this file).

    Written whole and renamed into place, so the exporter reads the settings of one hook.
    """
    path = os.path.join(directory(state_dir), POKE_FILE)
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:
        os.makedirs(directory(state_dir), mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, dumps_record(settings or {}).encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(temp, path)


def last_poke(state_dir: str) -> "Optional[Tuple[int, int]]":
    """A token that changes with every poke."""
    try:
        info = os.stat(os.path.join(directory(state_dir), POKE_FILE))
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns)


def poked_settings(state_dir: str) -> "Optional[Dict[str, Any]]":
    """The settings the last poking hook ran with, or None."""
    return read(state_dir, POKE_FILE)


def pending(state_dir: str) -> "List[str]":
    """Names of the spooled records, oldest first."""
    try:
        names = os.listdir(directory(state_dir))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))


def hook_inputs(state_dir: str) -> "List[str]":
    """Names of the hook inputs the shell entry wrote, oldest first (by the time each was written:
    a shell has no clock to name them by)."""
    spool = directory(state_dir)
    try:
        names = [n for n in os.listdir(spool) if n.endswith(HOOK_INPUT_SUFFIX) and not n.startswith(".")]
    except FileNotFoundError:
        return []
    dated = []
    for name in names:
        try:
            dated.append((os.stat(os.path.join(spool, name)).st_mtime_ns, name))
        except FileNotFoundError:
            pass
    return [name for _, name in sorted(dated)]


def has_work(state_dir: str) -> bool:
    """Whether anything spooled is worth starting an exporter for."""
    try:
        names = os.listdir(directory(state_dir))
    except FileNotFoundError:
        return False
    return any(
        not name.startswith(".")
        and (name.endswith(HOOK_INPUT_SUFFIX) or (name.endswith(SUFFIX) and not name.endswith(NO_WAKE_SUFFIX)))
        for name in names
    )


def read(state_dir: str, name: str) -> "Optional[Dict[str, Any]]":
    """The JSON object in a spool file, or None when it is gone or unreadable (reported by the caller)."""
    import json

    try:
        with open(os.path.join(directory(state_dir), name), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write(state_dir: str, name: str, record: "Record") -> None:
    """Write (or overwrite) a record under a chosen name, atomically."""
    spool = directory(state_dir)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    temp = os.path.join(spool, f".{name}.{os.getpid()}.tmp")
    with open(temp, "w", encoding="ascii") as f:
        f.write(dumps_record(record))
    os.replace(temp, os.path.join(spool, name))


def remove(state_dir: str, name: str) -> None:
    try:
        os.unlink(os.path.join(directory(state_dir), name))
    except FileNotFoundError:
        pass


REJECTED_DIR = "rejected"
REJECTED_MAX_RECORDS = 100  # the newest kept; older ones are deleted


def set_aside(state_dir: str, name: str, reason: str) -> None:
    """Move a record that will never be accepted (refused for good, or not a record) out of the
    spool into rejected/, with a note saying why, so it neither blocks nor is retried forever.
    Bounded: beyond REJECTED_MAX_RECORDS, the oldest go."""
    rejected = os.path.join(state_dir, REJECTED_DIR)
    os.makedirs(rejected, mode=0o700, exist_ok=True)
    try:
        os.replace(os.path.join(directory(state_dir), name), os.path.join(rejected, name))
    except FileNotFoundError:
        return
    fd = os.open(os.path.join(rejected, name + ".why"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (reason + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)
    kept = []
    for kept_name in os.listdir(rejected):
        if kept_name.endswith(SUFFIX) or kept_name.endswith(HOOK_INPUT_SUFFIX):
            try:
                kept.append((os.stat(os.path.join(rejected, kept_name)).st_mtime_ns, kept_name))
            except FileNotFoundError:
                pass
    kept.sort()
    for _, old in kept[: max(0, len(kept) - REJECTED_MAX_RECORDS)]:
        for path in (os.path.join(rejected, old), os.path.join(rejected, old + ".why")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def enforce_bounds(state_dir: str, max_items: int, max_age_seconds: float, now: "Optional[float]" = None) -> int:
    """Drop records beyond the bounds (oldest first); return how many were dropped.

    Also sweeps temp files a killed hook left behind.
    """
    now = time.time() if now is None else now
    spool = directory(state_dir)
    dropped = 0
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            path = os.path.join(spool, name)
            try:
                if now - os.stat(path).st_mtime > 3600:
                    os.unlink(path)
            except OSError:
                pass
    records = pending(state_dir)
    cutoff_ns = int((now - max_age_seconds) * 1e9)
    for name in records:
        if written_ns(name) < cutoff_ns or len(records) - dropped > max_items:
            remove(state_dir, name)
            dropped += 1
    return dropped


def record_name(written_ns: int, tag: str) -> str:
    """A record's file name, without its suffix: the time it was written, so names sort oldest first."""
    return f"{written_ns:020d}-{tag}"


def written_ns(name: str) -> int:
    """When a record was written (unix nanoseconds), from its name; 0 for a name not of that form."""
    try:
        return int(name.split("-", 1)[0])
    except ValueError:
        return 0
