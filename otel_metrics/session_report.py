"""Session end -> Session: a transcript (or one segment of it) plus what the hook knew.

Shared by the background exporter and `otel-metrics session-summary`, so both
report a session identically.
"""

from __future__ import annotations

import os
from typing import Optional

from . import __version__, config
from .model import Session, normalize_exit_reason
from .transcript import TranscriptSummary, summarize


def session_from_transcript(
    session_id: Optional[str],
    transcript_path: Optional[str],
    *,
    reason: object,
    hook_time_ns: int,
    user_id: Optional[str],
) -> Session:
    """The whole transcript as one session. Without a session id (the CLI), the
    transcript's own, else its file name."""
    summary = summarize(transcript_path) if transcript_path else None
    if session_id is None:
        stem = os.path.splitext(os.path.basename(transcript_path or ""))[0]
        session_id = (summary.session_id if summary else None) or stem
    return session_from_summary(session_id, summary, reason=reason, hook_time_ns=hook_time_ns, user_id=user_id)


def session_from_summary(
    session_id: str,
    summary: Optional[TranscriptSummary],
    *,
    reason: object,
    hook_time_ns: int,
    user_id: Optional[str],
    segment: int = 0,
) -> Session:
    """A missing or unreadable transcript still makes a session: zero counts,
    the hook's time as start and end (also for a segment without timestamps).
    The version and OS are this plugin's and this machine's."""
    start_ns = summary.start_ns if summary and summary.start_ns is not None else hook_time_ns
    end_ns = summary.end_ns if summary and summary.end_ns is not None else hook_time_ns
    return Session(
        session_id=session_id,
        user_id=user_id,
        exit_reason=normalize_exit_reason(reason),
        start_ns=start_ns,
        end_ns=end_ns,
        version=__version__,
        os=config.os_name(),
        segment=segment,
        **({"aggregates": summary.aggregates} if summary else {}),
    )
