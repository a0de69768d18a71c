"""Hook input -> spool record: what one Claude Code hook invocation is worth recording.

The hook entry (hook/main.py) applies it to stdin at once; the exporter applies it to the
inputs the plugin's shell entry wrote as they came (spool.HOOK_INPUT_SUFFIX), so that
Claude Code waits for no interpreter at SessionEnd. Stdlib only: it runs on the hooks'
fast path.
"""

from . import __version__, config, events, fastjson, limits, spool

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Dict, Mapping, Optional

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
