"""Hook entry point: stdin JSON -> decision -> spool record -> wake the exporter.

Runs inside the user's Claude Code session: prints nothing on stdout, exits 0
whatever happens, and leaves everything slow (the OTel SDK, transcript parsing,
the network) to the detached background exporter.
"""

import os
import sys
import time

from .. import __version__, config, events, fastjson, limits, lock, spool

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Dict, Mapping, Optional

MAX_INPUT_BYTES = limits.PROMPT_LENGTH_MAX  # a prompt's length is bounded by what is read
MAX_PATH_CHARS = 4096  # a transcript path beyond this is no path Claude Code wrote
FALLBACK_NOTE = ".recorded-here-instead"  # in the fallback directory: its log line was written
SESSION_HOOKS = ("SessionStart", "SessionEnd")


class BadInput(Exception):
    """Hook input we cannot use; its message goes to the log as one line."""


def main() -> None:
    """Console entry for the plugin's scripts: never raises, always exits 0."""
    try:
        handle(sys.stdin.buffer, os.environ)
    except BaseException:  # noqa: B036 - a hook must exit 0 whatever happens
        pass
    # Skip interpreter teardown: nothing is buffered, and it costs a millisecond.
    os._exit(0)


def handle(stdin: "BinaryIO", env: "Mapping[str, str]") -> None:
    """Process one hook invocation; every problem ends in at most one log line."""
    fired_ns = time.time_ns()
    if config.disabled(env):
        return
    os.umask(0o077)  # the state is the user's alone: everything this hook and its children create
    state = config.state_dir(env)
    verbose = config.verbose(env)
    try:
        hook_input = read_input(stdin)
        record = record_for(hook_input, fired_ns)
        # A session's start is no export of its own: its record waits for one.
        wake = record is not None and record["record"] != spool.SESSION_START
        if record is not None:
            state = record_where_possible(state, record, wake, env)
            if verbose:
                log(state, f"recorded {record['record']} {record.get('kind', '')} {record.get('name', '')}".rstrip())
        elif verbose:
            log(state, f"{hook_input.get('hook_event_name', 'hook')}: not an event, nothing to send")
        # A record just written is work; otherwise look whether anything waits.
        if wake or spool.has_work(state):
            wake_exporter(state)
        if record is not None and not wake:  # a session starts: what the fallback holds from an unusable state dir
            fallback = config.fallback_state_dir(env)
            if fallback != state and spool.has_work(fallback):
                wake_exporter(fallback)
    except BadInput as problem:
        log(state, str(problem))
    except OSError as problem:
        log(state, f"cannot record in {state}: {problem.strerror or problem}")
    except Exception as problem:
        log(state, f"unexpected {type(problem).__name__}: {problem}")


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


def read_input(stdin: "BinaryIO") -> "Dict[str, Any]":
    raw = stdin.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        raise BadInput(f"hook input over {MAX_INPUT_BYTES} bytes: ignored")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(f"hook input is not UTF-8 (byte {error.start}): ignored") from None
    try:
        hook_input = fastjson.loads(text)
    except ValueError as error:
        raise BadInput(f"hook input is not JSON ({error}): ignored") from None
    if not isinstance(hook_input, dict):
        raise BadInput(f"hook input is a JSON {type(hook_input).__name__}, not an object: ignored")
    return hook_input


def record_for(hook_input: "Mapping[str, Any]", fired_ns: int) -> "Optional[Dict[str, Any]]":
    """The spool record for this hook input, or None when there is nothing to send."""
    hook_event = hook_input.get("hook_event_name")
    if hook_event in SESSION_HOOKS:
        decision = None
    else:
        decision = events.classify(hook_input)
        if decision is None:
            return None
    session_id = hook_input.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise BadInput(f"{hook_event or 'hook'} input without session_id: nothing sent")
    if len(session_id) > limits.SESSION_ID_MAX_CHARS or not limits.SESSION_ID_CHARACTERS.issuperset(session_id):
        # Claude Code's are UUIDs: anything else would be refused downstream, and must not clog the spool.
        raise BadInput(f"{hook_event or 'hook'} input with an unusable session_id ({len(session_id)} characters)")
    transcript = hook_input.get("transcript_path")
    transcript = transcript if isinstance(transcript, str) and 0 < len(transcript) <= MAX_PATH_CHARS else None
    if hook_event == "SessionStart":
        return {"record": spool.SESSION_START, "session_id": session_id, "transcript_path": transcript}
    if hook_event == "SessionEnd":
        from ..transcript_files import sizes

        reason = hook_input.get("reason")
        # What this run wrote ends here: a resume started before the exporter reads belongs to the next report.
        transcript_bytes, subagent_bytes = sizes(transcript) if transcript else (None, {})
        return {
            "record": spool.SESSION_END,
            "session_id": session_id,
            "transcript_path": transcript,
            # A longer reason is not an identifier: the payload would say "other" (limits.EXIT_REASON_MAX_CHARS).
            "reason": reason if isinstance(reason, str) and len(reason) <= limits.EXIT_REASON_MAX_CHARS else None,
            "time_ns": fired_ns,
            "transcript_bytes": transcript_bytes,
            "subagent_bytes": subagent_bytes,
        }
    if decision is None:  # an event hook that is no event returned above; a session hook never gets here
        return None
    kind, name, prompt_length = decision
    return {
        "record": spool.EVENT,
        "kind": kind,
        "name": name,
        "prompt_length": prompt_length,
        "session_id": session_id,
        "timestamp": fired_ns // 1_000_000_000,
        "version": __version__,
        "os": config.os_name(),
        "transcript_path": transcript,
    }


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
