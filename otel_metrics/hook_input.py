"""Hook input -> spool record: what one Claude Code hook invocation is worth recording.

The plugin's shell entry writes each hook's input into the spool as it came
(spool.HOOK_INPUT_SUFFIX), so that no interpreter starts on the hook's path; `adopt`
turns such inputs into records: the wake that shell starts in the background does so at
once (a SessionEnd record notes how far its transcript reached when the session ended: a
resume started later belongs to the next report), the exporter for any a lost wake left.
The hook entry (hook/main.py) applies the same rules to stdin, where the shell cannot
write the spool. Stdlib only.
"""

import os
import time

from . import __version__, config, events, fastjson, limits, lock, spool

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Dict, List, Mapping, Optional

ADOPT_LOCK_FILE = ".adopt.lock"  # in the spool: one adopter at a time, so each input becomes one record
WRITING_SECONDS = 5.0  # an input that does not parse yet may be being written: far beyond one printf

MAX_INPUT_BYTES = limits.PROMPT_LENGTH_MAX  # a prompt's length is bounded by what is read
MAX_PATH_CHARS = 4096  # a transcript path beyond this is no path Claude Code wrote
SESSION_HOOKS = ("SessionStart", "SessionEnd")


class BadInput(Exception):
    """Hook input we cannot use; its message goes to the log as one line."""


def read(stream: "BinaryIO") -> "Dict[str, Any]":
    """The hook input object on a stream (stdin, or a file the shell entry wrote)."""
    raw = stream.read(MAX_INPUT_BYTES + 1)
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
        from .transcript_files import sizes

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


def wakes(record: "Mapping[str, Any]") -> bool:
    """Whether a record calls for an export: a session's start is none of its own, it waits for one."""
    return bool(record["record"] != spool.SESSION_START)


def adopt(state: str, wait_seconds: float = 0.0, written: str = "") -> "Optional[List[str]]":
    """Turn every hook input in the spool into its record, or set it aside; return what was wrong
    with the inputs set aside (for the caller's log), or None when another adopter held the lock
    for longer than wait_seconds (it takes them).

    Under the lock, an input is read, its record written whole under a name made from the input's
    (its time, its tag) and only then removed: adopted again after a crash, it overwrites the same
    record, so nothing is counted twice. The shell writes an input in place (no rename): one that
    does not parse yet may be being written, and is set aside only once WRITING_SECONDS have passed;
    but for `written`, the input whose shell started this wake once it had written it whole.
    """
    if not spool.hook_inputs(state):
        return []  # the common case, every round of the exporter's loop: no lock to take
    directory = spool.directory(state)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fd = lock.try_lock(os.path.join(directory, ADOPT_LOCK_FILE))
        except FileNotFoundError:
            return []  # no spool: nothing to adopt
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
    problems = []
    try:
        for name in spool.hook_inputs(state):
            try:
                with open(os.path.join(directory, name), "rb") as stream:
                    status = os.fstat(stream.fileno())
                    fired_ns = status.st_mtime_ns
                    # Too large whatever follows, and no place for it in the rejected records.
                    received = None if status.st_size > MAX_INPUT_BYTES else read(stream)
            except FileNotFoundError:
                continue
            except BadInput as problem:
                if name != written and time.time_ns() - fired_ns < WRITING_SECONDS * 1e9:
                    continue
                spool.set_aside(state, name, str(problem))
                problems.append(f"{problem} (set aside in {os.path.join(state, spool.REJECTED_DIR)})")
                continue
            try:
                if received is None:
                    raise BadInput(f"hook input over {MAX_INPUT_BYTES} bytes: ignored")
                record = record_for(received, fired_ns)
            except BadInput as problem:  # whole, yet unusable: said, not kept (it may hold a prompt)
                spool.remove(state, name)
                problems.append(str(problem))
                continue
            if record is not None:
                suffix = spool.SUFFIX if wakes(record) else spool.NO_WAKE_SUFFIX
                tag = name[: -len(spool.HOOK_INPUT_SUFFIX)]
                spool.write(state, spool.record_name(fired_ns, tag) + suffix, record)
            spool.remove(state, name)
    finally:
        lock.release(fd)
    return problems
