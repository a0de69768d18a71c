"""The data model every stage of the pipeline speaks: events and sessions, and their rules.

Hook input becomes an Event or a Session; emit.py turns them into OTel signals;
the forwarder decodes OTLP back into the same classes; payloads.py renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Dict, Optional

from . import limits
from .events import SKILL, SLASH_COMMAND

ENGINE = "claude"
EVENT_KINDS = (SLASH_COMMAND, SKILL)  # what the hook's rules decide an event is
OS_NAMES = ("darwin", "linux", "windows")


@dataclass(frozen=True)
class Event:
    """One slash command or skill invocation."""

    kind: str  # one of EVENT_KINDS
    name: str  # e.g. "jira:solve"
    prompt_length: int  # characters of the prompt; 0 for skills
    session_id: str
    timestamp: int  # unix seconds (UTC) when the hook fired
    user_id: Optional[str]
    version: str  # plugin version
    os: str  # one of OS_NAMES


@dataclass(frozen=True)
class SessionAggregates:
    """Counts derived from a session transcript (semantics: transcript.py)."""

    turn_count: int = 0
    user_message_count: int = 0
    assistant_message_count: int = 0
    total_tool_calls: int = 0
    tool_error_count: int = 0
    bash_call_count: int = 0
    file_read_count: int = 0
    file_edit_count: int = 0
    file_write_count: int = 0
    grep_call_count: int = 0
    glob_call_count: int = 0
    web_fetch_call_count: int = 0
    web_search_call_count: int = 0
    # Token sums; 0 means "none seen" and is left out of the payload.
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Every aggregate is a count or a token sum: counts are always sent, token sums only when above zero.
AGGREGATE_KEYS = tuple(f.name for f in fields(SessionAggregates))
TOKEN_KEYS = ("total_input_tokens", "total_output_tokens", "cache_creation_tokens", "cache_read_tokens")
COUNT_KEYS = tuple(key for key in AGGREGATE_KEYS if key not in TOKEN_KEYS)
# The tools counted one by one (tool name -> its count); total_tool_calls counts them and every other tool.
COUNTED_TOOLS: Dict[str, str] = {
    "Bash": "bash_call_count",
    "Read": "file_read_count",
    "Edit": "file_edit_count",
    "Write": "file_write_count",
    "Grep": "grep_call_count",
    "Glob": "glob_call_count",
    "WebFetch": "web_fetch_call_count",
    "WebSearch": "web_search_call_count",
}

_EXIT_REASON = re.compile(rf"[a-z][a-z0-9_]{{0,{limits.EXIT_REASON_MAX_CHARS - 1}}}")


def normalize_exit_reason(reason: object) -> str:
    """The hook's reason when it is a short lowercase identifier, else "other"."""
    if isinstance(reason, str) and _EXIT_REASON.fullmatch(reason):
        return reason
    return "other"


@dataclass(frozen=True)
class Session:
    """One run of a session (a segment of its transcript): its span covers start_ns..end_ns."""

    session_id: str
    user_id: Optional[str]
    exit_reason: str
    start_ns: int  # unix nanoseconds, full precision
    end_ns: int
    version: str
    os: str
    aggregates: SessionAggregates = field(default_factory=SessionAggregates)
    segment: int = 0  # 0 for the session's first run, n for its n-th resumption
