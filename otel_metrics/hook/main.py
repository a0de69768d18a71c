"""Hook entry point: the wake, for a hook input scripts/run spooled itself (its record, then the
exporter); and stdin JSON -> decision -> spool record -> wake the exporter, where the shell
could not spool it (or metrics are disabled, or verbose).

Runs inside the user's Claude Code session: prints nothing on stdout, exits 0
whatever happens, and leaves everything slow (the OTel SDK, transcript parsing,
the network) to the detached background exporter.
"""

import os
import sys
import time

from .. import config, hook_input, lock, spool

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Dict, Mapping

FALLBACK_NOTE = ".recorded-here-instead"  # in the fallback directory: its log line was written
ADOPT_WAIT_SECONDS = 5.0  # another wake adopting a burst of inputs: ours are among them soon


def main() -> None:
    """Console entry for the plugin's scripts: never raises, always exits 0."""
    try:
        handle(sys.stdin.buffer, os.environ)
    except BaseException:  # noqa: B036 - a hook must exit 0 whatever happens
        pass
    # Skip interpreter teardown: nothing is buffered, and it costs a millisecond.
    os._exit(0)


def wake() -> None:
    """Entry for scripts/run's background start (`run.py wake <input file name>`), once it has spooled
    a hook's input itself: turn it into its record, start the exporter unless one runs. Never raises,
    always exits 0."""
    try:
        _leave_claude_codes_session()
        os.umask(0o077)
        state = config.state_dir(os.environ)
        written = os.path.basename(sys.argv[2]) if len(sys.argv) > 2 else ""
        # At once: the transcript's size now is where the session ended (the exporter may be busy for seconds).
        for problem in hook_input.adopt(state, ADOPT_WAIT_SECONDS, written) or ():
            log(state, problem)
        if spool.has_work(state):
            wake_exporter(state)
        wake_fallback(state, os.environ)
    except BaseException:  # noqa: B036 - a hook must exit 0 whatever happens
        pass
    os._exit(0)


def _leave_claude_codes_session() -> None:
    """Claude Code's session is ending: nothing done to its process group must reach this process.
    scripts/run ignored the signals it could send until now; out of its group, they count again."""
    import signal

    try:
        os.setsid()
    except (AttributeError, OSError):  # no sessions (Windows), or already a group's leader
        pass
    for name in ("SIGHUP", "SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def handle(stdin: "BinaryIO", env: "Mapping[str, str]") -> None:
    """Process one hook invocation; every problem ends in at most one log line."""
    fired_ns = time.time_ns()
    if config.disabled(env):
        return
    os.umask(0o077)  # the state is the user's alone: everything this hook and its children create
    state = config.state_dir(env)
    verbose = config.verbose(env)
    try:
        received = hook_input.read(stdin)
        record = hook_input.record_for(received, fired_ns)
        wake = record is not None and hook_input.wakes(record)
        if record is not None:
            state = record_where_possible(state, record, wake, env)
            if verbose:
                log(state, f"recorded {record['record']} {record.get('kind', '')} {record.get('name', '')}".rstrip())
        elif verbose:
            log(state, f"{received.get('hook_event_name', 'hook')}: not an event, nothing to send")
        # A record just written is work; otherwise look whether anything waits.
        if wake or spool.has_work(state):
            wake_exporter(state)
        if record is not None and not wake:  # a session starts
            wake_fallback(state, env)
    except hook_input.BadInput as problem:
        log(state, str(problem))
    except OSError as problem:
        log(state, f"cannot record in {state}: {problem.strerror or problem}")
    except Exception as problem:
        log(state, f"unexpected {type(problem).__name__}: {problem}")


def wake_fallback(state: str, env: "Mapping[str, str]") -> None:
    """What the fallback directory holds from a time the state directory could not be written: sent
    once it can be (the state directory's exporter is not the fallback's)."""
    fallback = config.fallback_state_dir(env)
    if fallback != state and spool.has_work(fallback):
        wake_exporter(fallback)


def record_where_possible(state: str, record: "Dict[str, Any]", wake: bool, env: "Mapping[str, str]") -> str:
    """Spool the record in the state directory, or, where that cannot be written (read-only, a
    plain file, a full disk), in the fallback one; return the directory used. OSError when neither can."""
    try:
        spool.append(state, record, wake=wake)
        return state
    except OSError as problem:
        fallback = config.fallback_state_dir(env)
        spool.append(fallback, record, wake=wake)
        note = os.path.join(fallback, FALLBACK_NOTE)
        if not os.path.exists(note):  # said once, not by every hook
            _copy_anonymous_id(state, fallback)
            log(fallback, f"cannot record in {state} ({problem.strerror or problem}): recording in {fallback} instead")
            os.close(os.open(note, os.O_WRONLY | os.O_CREAT, 0o600))
        return fallback


def _copy_anonymous_id(state: str, fallback: str) -> None:
    """The same user in the fallback: its exporter would otherwise make a new anonymous id."""
    try:
        with open(os.path.join(state, config.ANONYMOUS_ID_FILE), "rb") as source:
            value = source.read(64)
        fd = os.open(os.path.join(fallback, config.ANONYMOUS_ID_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def wake_exporter(state: str) -> None:
    """Start the background exporter unless one is running (it then finds our record)."""
    from . import detach

    fd = lock.try_acquire(state)
    if fd is None:
        # The running exporter may be waiting out a backoff (retry now), or run with other settings.
        spool.poke(state, config.hook_settings(os.environ))
        return
    try:
        if os.name == "nt":  # a Windows lock cannot be handed to a child: it takes its own
            lock.release(fd)
            fd = None
        detach.start_exporter(state, fd)
    finally:
        if fd is not None:
            os.close(fd)  # the exporter holds the lock through its own copy


def log(state: str, message: str) -> None:
    line = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f" hook[{os.getpid()}] {message}\n"
    try:
        fd = os.open(os.path.join(state, config.LOG_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass  # no writable state directory: nowhere to say it, and the hook must stay silent
