"""Session ends -> ready `session` records: one per run of a session (a segment of its transcript), each once.

A session resumed later appends to the same transcript and ends again; each end
reports what was written since the previous report, up to the sizes its SessionEnd
hook saw (the quiet-session rule, with no hook, reads to the end). A fork's first
report skips the history it copied (README "Resumed, forked and compacted sessions").

Never twice, never skipped: the ready record is written first and carries where its
segment ended; the registry is told second. A crash in between leaves the record in
the spool: the drain tells the registry from it before sending it (`note_queued`),
and a SessionEnd read again rewrites the segment's one record (one name per segment,
an earlier attempt's is replaced) instead of adding a second.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Dict, Optional, Set

from .. import spool
from ..identity import anonymous_id
from ..model import Session
from ..session_report import session_from_summary
from ..transcript import CopiedHistory, Offsets, entry_uuids, read_segment
from . import records
from .registry import SessionRegistry

log = logging.getLogger("otel_metrics.exporter")


class SessionReports:
    def __init__(self, state_dir: str, registry: SessionRegistry) -> None:
        self.state = state_dir
        self.registry = registry

    def queue(
        self,
        session_id: str,
        path: Optional[str],
        reason: object,
        hook_ns: int,
        order_ns: int,
        stop: Optional[Offsets] = None,
    ) -> bool:
        """The session's next segment (written since its last report, up to `stop`) as a ready
        record; False when a session already reported wrote nothing new."""
        progress = self.registry.progress(session_id)
        copied = self._copied_history(session_id) if progress.segments == 0 else None
        segment = read_segment(path, progress.end, progress.awaiting_answer, stop, copied) if path else None
        if progress.segments and not (segment and segment.has_activity):
            log.info("session %s: nothing new since its last report", session_id)
            return False
        if segment is None:  # no transcript named: nothing read, nothing moves
            end = records.SegmentEnd(progress.end, progress.awaiting_answer)
        else:
            end = records.SegmentEnd(segment.end, segment.awaiting_answer)
            self.registry.add_roots(session_id, segment.roots)
            if segment.copies:
                log.info("session %s: %d entries copied from another session not counted", session_id, segment.copies)
            if segment.incomplete:  # one bad transcript must not hold up the rest: report what was read
                log.error("session %s: transcript %s; reported from what was read", session_id, segment.incomplete)
        session = session_from_summary(
            session_id,
            segment.summary if segment else None,
            reason=reason,
            hook_time_ns=hook_ns,
            user_id=anonymous_id(self.state),
            segment=progress.segments,
        )
        suffix = record_suffix(session_id, progress.segments)
        name = spool.record_name(order_ns, suffix)
        for earlier in spool.pending(self.state):
            if earlier.endswith(suffix) and earlier != name:
                spool.remove(self.state, earlier)
        spool.write(self.state, name, records.session_to_record(session, end))
        self.registry.record_report(session_id, progress.segments, end.offsets, end.awaiting_answer, path)
        return True

    def queue_quiet(self, quiet_seconds: float) -> int:
        """Queue what sessions wrote in runs that ended without SessionEnd; return how many were queued."""
        queued = 0
        for session_id, path in self.registry.quiet_sessions(quiet_seconds):
            log.info("session %s quiet without SessionEnd: reporting what it wrote", session_id)
            now = time.time_ns()
            queued += self.queue(session_id, path, "other", now, now)
        return queued

    def note_queued(self, session: Session, record: Dict[str, Any]) -> None:
        """Tell the registry about a ready record about to be sent: a no-op unless a crash came
        between writing the record and telling the registry."""
        end = records.segment_end(record)
        if end is not None:  # records of earlier versions do not say
            self.registry.record_report(session.session_id, session.segment, end.offsets, end.awaiting_answer, None)

    def _copied_history(self, session_id: str) -> CopiedHistory:
        """For a session's first report: the uuids a fork copied, found through the sessions
        whose chains start with the new transcript's first uuid."""

        def copied(first_uuid: str) -> Set[str]:
            uuids: Set[str] = set()
            for parent in self.registry.transcripts_with_root(first_uuid, session_id):
                uuids |= entry_uuids(parent)
            return uuids

        return copied


def record_suffix(session_id: str, segment: int) -> str:
    """The name of a segment's ready record, after its time: one per segment. The first
    segment keeps the name earlier versions gave a session's record, so an upgrade in
    the middle of a report rewrites that record instead of adding a second."""
    key = session_id if segment == 0 else f"{session_id}\0{segment}"
    return f"session-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}{spool.SUFFIX}"
