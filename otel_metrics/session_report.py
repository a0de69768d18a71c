"""Session end -> Session: a transcript plus what the hook knew.

Shared by the background exporter and `otel-metrics session-summary`, so both
report a session identically.
"""

from __future__ import annotations

import re
from typing import Optional

from .model import Session
from .transcript import summarize

_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")


def normalize_exit_reason(reason: object) -> str:
    """The hook's reason when it is a short lowercase identifier, else "other"."""
    if isinstance(reason, str) and _REASON.fullmatch(reason):
        return reason
    return "other"


def session_from_transcript(
    session_id: str,
    transcript_path: Optional[str],
    reason: object,
    hook_time_ns: int,
    user_id: Optional[str],
    version: str,
    os_name: str,
) -> Session:
    """A missing or unreadable transcript still makes a session: zero counts,
    the hook's time as start and end."""
    summary = summarize(transcript_path) if transcript_path else None
    start_ns = summary.start_ns if summary and summary.start_ns is not None else hook_time_ns
    end_ns = summary.end_ns if summary and summary.end_ns is not None else hook_time_ns
    return Session(
        session_id=session_id,
        user_id=user_id,
        exit_reason=normalize_exit_reason(reason),
        start_ns=start_ns,
        end_ns=end_ns,
        version=version,
        os=os_name,
        **({"aggregates": summary.aggregates} if summary else {}),
    )
