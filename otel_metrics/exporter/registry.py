"""Sessions seen by our hooks, in SQLite: what has been reported of each, so nothing is reported twice or skipped.

A session is reported in segments, one per run of Claude Code (a resumed session
appends to the same transcript): by its SessionEnd hook or, when that never fired
(Ctrl+C, crash), once its transcripts have been quiet for a while. Per session the
registry keeps how many segments were reported and where the last one ended (a byte
offset per file and the turn state), so the next report starts exactly there, and
the uuids that start its conversation chains, so a session forked from it can be
told to skip the history it copied.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from typing import Iterable, List, NamedTuple, Optional, Tuple

from ..transcript import Offsets
from ..transcript_files import sizes, subagent_folder, subagent_names

log = logging.getLogger("otel_metrics.exporter")

REGISTRY_FILE = "sessions.sqlite"
FORGET_AFTER_SECONDS = 90 * 86400  # after the last sign of a session (Claude Code deletes transcripts after 30 days)
SCHEMA_VERSION = 1  # PRAGMA user_version; 0 is the previous layout (one report per session)

_SESSIONS_V0 = (
    "CREATE TABLE IF NOT EXISTS sessions ("
    " session_id TEXT PRIMARY KEY, transcript_path TEXT,"
    " first_seen REAL NOT NULL, reported_at REAL)"
)
_SESSIONS_V1_COLUMNS = (
    "last_seen REAL",
    "segments INTEGER NOT NULL DEFAULT 0",  # segments reported: the index of the next one
    "reported_end TEXT",  # JSON Offsets where the last reported segment ended
    "awaiting_answer INTEGER NOT NULL DEFAULT 0",  # its last prompt was unanswered there
    "seen_since_report INTEGER NOT NULL DEFAULT 1",  # a hook saw it after that: the quiet rule looks at it
)
_ROOTS = (
    "CREATE TABLE IF NOT EXISTS roots ("
    " uuid TEXT NOT NULL, session_id TEXT NOT NULL, PRIMARY KEY (uuid, session_id)) WITHOUT ROWID"
)


class Progress(NamedTuple):
    """What has been reported of a session: the next segment starts here."""

    segments: int
    end: Offsets
    awaiting_answer: bool


NOTHING_REPORTED = Progress(0, Offsets(), False)


class SessionRegistry:
    def __init__(self, state_dir: str) -> None:
        self._db = sqlite3.connect(os.path.join(state_dir, REGISTRY_FILE), timeout=30, isolation_level=None)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a registry of any earlier layout to SCHEMA_VERSION, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._db.execute(_SESSIONS_V0)
                for column in _SESSIONS_V1_COLUMNS:
                    self._db.execute(f"ALTER TABLE sessions ADD COLUMN {column}")
                self._db.execute(_ROOTS)
                self._adopt_whole_reports()
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _adopt_whole_reports(self) -> None:
        """Sessions the previous layout reported whole: what their files hold now counts as reported
        (their offsets were not kept; a resume of them then reports only what it adds)."""
        rows = self._db.execute(
            "SELECT session_id, transcript_path FROM sessions WHERE reported_at IS NOT NULL"
        ).fetchall()
        for session_id, path in rows:
            self._db.execute(
                "UPDATE sessions SET segments = 1, reported_end = ?, seen_since_report = 0 WHERE session_id = ?",
                (json.dumps(_current_end(path).as_dict()), session_id),
            )

    def seen(self, session_id: str, transcript_path: Optional[str], now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT INTO sessions (session_id, transcript_path, first_seen, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(session_id) DO UPDATE SET"
            " transcript_path = COALESCE(sessions.transcript_path, excluded.transcript_path),"
            " last_seen = excluded.last_seen, seen_since_report = 1",
            (session_id, transcript_path, now, now),
        )

    def progress(self, session_id: str) -> Progress:
        row = self._db.execute(
            "SELECT segments, reported_end, awaiting_answer, transcript_path FROM sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None or row[0] == 0:
            return NOTHING_REPORTED
        segments, reported_end, awaiting_answer, path = row
        try:
            end = Offsets.from_dict(json.loads(reported_end))
        except (TypeError, ValueError):
            # Only a damaged registry gets here: better to miss what follows than to report it all again.
            log.error("session %s: unreadable offsets in the registry; counting from the files' end", session_id)
            end = _current_end(path)
        return Progress(segments, end, bool(awaiting_answer))

    def record_report(
        self,
        session_id: str,
        segment: int,
        end: Offsets,
        awaiting_answer: bool,
        transcript_path: Optional[str],
        now: Optional[float] = None,
    ) -> bool:
        """Segment `segment` of the session was queued, ending at `end`. Idempotent: applied only when
        it is the next segment (False otherwise), so replaying it after a crash changes nothing."""
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT OR IGNORE INTO sessions (session_id, transcript_path, first_seen) VALUES (?, ?, ?)",
            (session_id, transcript_path, now),
        )
        cursor = self._db.execute(
            "UPDATE sessions SET segments = ?, reported_end = ?, awaiting_answer = ?, reported_at = ?,"
            " seen_since_report = 0, transcript_path = COALESCE(?, transcript_path)"
            " WHERE session_id = ? AND segments = ?",
            (segment + 1, json.dumps(end.as_dict()), int(awaiting_answer), now, transcript_path, session_id, segment),
        )
        return cursor.rowcount == 1

    def add_roots(self, session_id: str, uuids: Iterable[str]) -> None:
        """Uuids that start a conversation chain in this session's transcript (its first entry, compactions)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO roots (uuid, session_id) VALUES (?, ?)", [(uuid, session_id) for uuid in uuids]
        )

    def transcripts_with_root(self, uuid: str, other_than: str) -> List[str]:
        """Main transcripts of the other sessions whose chains start with `uuid`: what a fork copied from."""
        rows = self._db.execute(
            "SELECT sessions.transcript_path FROM roots JOIN sessions USING (session_id)"
            " WHERE roots.uuid = ? AND roots.session_id != ? AND sessions.transcript_path IS NOT NULL"
            " ORDER BY sessions.session_id",
            (uuid, other_than),
        ).fetchall()
        return [path for (path,) in rows]

    def quiet_sessions(self, quiet_seconds: float, now: Optional[float] = None) -> List[Tuple[str, str]]:
        """Sessions seen since their last report whose transcripts hold more than was reported and have
        not changed for quiet_seconds (a run that ended without SessionEnd)."""
        now = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT session_id, transcript_path FROM sessions"
            " WHERE seen_since_report = 1 AND transcript_path IS NOT NULL"
        ).fetchall()
        quiet = []
        for session_id, path in rows:
            try:
                main = os.stat(path)
            except OSError:
                continue  # no transcript (yet, or any more): nothing to report from
            progress = self.progress(session_id)
            if progress.segments and main.st_size <= progress.end.main:
                continue  # resumed (or forked from) but nothing written since: nothing to report
            if now - _last_change(path, main.st_mtime) >= quiet_seconds:
                quiet.append((session_id, path))
        return quiet

    def forget_old(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "DELETE FROM sessions WHERE MAX(first_seen, COALESCE(last_seen, 0), COALESCE(reported_at, 0)) < ?"
            " AND (segments > 0 OR transcript_path IS NULL)",
            (now - FORGET_AFTER_SECONDS,),
        )
        self._db.execute("DELETE FROM roots WHERE session_id NOT IN (SELECT session_id FROM sessions)")

    def close(self) -> None:
        self._db.close()


def _current_end(path: Optional[str]) -> Offsets:
    main_bytes, subagent_bytes = sizes(path) if path else (None, {})
    return Offsets(main_bytes or 0, subagent_bytes)


def _last_change(main: str, main_mtime: float) -> float:
    """The latest modification time of the main transcript and its subagent files."""
    latest = main_mtime
    folder = subagent_folder(main)
    if folder is None:
        return latest
    for name in subagent_names(main):
        try:
            latest = max(latest, os.stat(os.path.join(folder, name)).st_mtime)
        except OSError:
            pass
    return latest
