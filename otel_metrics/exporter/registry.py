"""Sessions seen by our hooks, in SQLite: the memory that reports each session once.

A session is reported by its SessionEnd hook or, when that never fired (Ctrl+C,
crash), once its transcript has been quiet for a while; whichever path comes
first marks it reported and the other finds it so.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import List, Optional, Tuple

REGISTRY_FILE = "sessions.sqlite"
FORGET_AFTER_SECONDS = 90 * 86400


class SessionRegistry:
    def __init__(self, state_dir: str) -> None:
        self._db = sqlite3.connect(os.path.join(state_dir, REGISTRY_FILE), timeout=30, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions ("
            " session_id TEXT PRIMARY KEY, transcript_path TEXT,"
            " first_seen REAL NOT NULL, reported_at REAL)"
        )

    def seen(self, session_id: str, transcript_path: Optional[str], now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT INTO sessions (session_id, transcript_path, first_seen) VALUES (?, ?, ?)"
            " ON CONFLICT(session_id) DO UPDATE SET"
            " transcript_path = COALESCE(sessions.transcript_path, excluded.transcript_path)",
            (session_id, transcript_path, now),
        )

    def is_reported(self, session_id: str) -> bool:
        row = self._db.execute("SELECT reported_at FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return row is not None and row[0] is not None

    def mark_reported(self, session_id: str, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT INTO sessions (session_id, first_seen, reported_at) VALUES (?, ?, ?)"
            " ON CONFLICT(session_id) DO UPDATE SET reported_at = excluded.reported_at",
            (session_id, now, now),
        )

    def quiet_sessions(self, quiet_seconds: float, now: Optional[float] = None) -> List[Tuple[str, str]]:
        """Unreported sessions whose transcript has not changed for quiet_seconds."""
        now = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT session_id, transcript_path FROM sessions WHERE reported_at IS NULL AND transcript_path IS NOT NULL"
        ).fetchall()
        quiet = []
        for session_id, path in rows:
            try:
                modified = os.stat(path).st_mtime
            except OSError:
                continue  # no transcript (yet, or any more): nothing to report from
            if now - modified >= quiet_seconds:
                quiet.append((session_id, path))
        return quiet

    def forget_old(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "DELETE FROM sessions WHERE first_seen < ? AND (reported_at IS NOT NULL OR transcript_path IS NULL)",
            (now - FORGET_AFTER_SECONDS,),
        )

    def close(self) -> None:
        self._db.close()
