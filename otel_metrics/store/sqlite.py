"""The embedded store: one SQLite file, one connection shared by the request threads."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any, List, Mapping, Sequence, Tuple

from . import KINDS, PayloadStore, StoreError, create_statements, insert_statement, row_values


class SqliteStore(PayloadStore):
    def __init__(self, path: str) -> None:
        self.url = f"sqlite:///{path}" if path.startswith("/") else path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        # Durable across a crash of this process; a reference endpoint need not pay an fsync per payload.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            for statement in create_statements("id INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER", "INTEGER"):
                self._db.execute(statement)
            self._migrate_single_table()

    def _migrate_single_table(self) -> None:
        """Files written before the typed tables kept every payload in `payloads (id, kind, body)`."""
        found = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payloads'").fetchone()
        if not found:
            return
        for kind, text in self._db.execute("SELECT kind, body FROM payloads ORDER BY id").fetchall():
            if kind in KINDS:
                self._db.execute(insert_statement(kind, "?"), row_values(kind, text, json.loads(text)))
        self._db.execute("DROP TABLE payloads")

    def add(self, kind: str, text: str, payload: Mapping[str, Any]) -> None:
        try:
            with self._lock, self._db:
                self._db.execute(insert_statement(kind, "?"), row_values(kind, text, payload))
        except sqlite3.Error as error:
            raise StoreError(f"{self.url}: {error}") from error

    def select(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
