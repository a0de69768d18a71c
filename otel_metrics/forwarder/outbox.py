"""The forwarder's outbox: legacy payloads waiting for delivery, durable in SQLite.

A request is acknowledged only after its payloads are committed here, so a
crash, a restart or a power cut never loses what the sender was told had been
accepted. One forwarder process per outbox file: it holds `<outbox>.lock`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import List, NamedTuple, Sequence, Tuple

from .. import lock

DEFAULT_MAX_ITEMS = 1_000_000


class OutboxUnavailable(Exception):
    """The outbox cannot take these payloads now (full, or its disk refuses): try later."""


class OutboxLocked(Exception):
    """Another forwarder process works on this outbox."""


class Item(NamedTuple):
    id: int
    path: str  # "events" | "sessions": joined to the metrics URL at delivery time
    body: str  # the JSON text to POST, exactly


class Outbox:
    def __init__(self, path: str, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock_fd = lock.try_lock(path + ".lock")
        if self._lock_fd is None:
            raise OutboxLocked(f"another forwarder is using the outbox {path}")
        # Two connections: adds fsync on every commit (they are acknowledged); removals
        # need not (a removal lost to a power cut means one duplicate delivery, never a loss).
        self._adding = _connect(path, synchronous="FULL")
        self._adding.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " path TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._taking = _connect(path, synchronous="NORMAL")
        self._add_lock = threading.Lock()  # the request threads share one connection
        self._take_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._count = self._adding.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._closed = False
        self.max_items = max_items
        self.added = threading.Event()  # wakes the delivery worker

    def __len__(self) -> int:
        return self._count

    def add(self, items: Sequence[Tuple[str, str]]) -> None:
        """Commit (path, body) pairs in one transaction, all or none."""
        if not items:
            return
        with self._add_lock:
            if self._closed:
                raise OutboxUnavailable("the forwarder is shutting down")
            # A request larger than the whole bound is still taken into an empty outbox:
            # refusing it would make the collector retry it forever.
            if self._count and self._count + len(items) > self.max_items:
                raise OutboxUnavailable(f"the outbox is full ({self._count} payloads waiting)")
            try:
                with self._adding:  # one transaction: committed, or rolled back on error
                    self._adding.executemany("INSERT INTO outbox (path, body) VALUES (?, ?)", items)
            except sqlite3.Error as error:  # disk full, read-only, locked by another process...
                raise OutboxUnavailable(f"the outbox cannot be written: {error}") from error
            with self._count_lock:
                self._count += len(items)
        self.added.set()

    def oldest(self, limit: int = 100) -> List[Item]:
        with self._take_lock:
            if self._closed:
                return []
            rows = self._taking.execute("SELECT id, path, body FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Item(*row) for row in rows]

    def remove(self, item_id: int) -> None:
        with self._take_lock:
            if self._closed:
                return
            with self._taking:
                removed = self._taking.execute("DELETE FROM outbox WHERE id = ?", (item_id,)).rowcount
        with self._count_lock:
            self._count -= removed

    def close(self) -> None:
        with self._add_lock, self._take_lock:
            if not self._closed:
                self._closed = True
                self._adding.close()
                self._taking.close()
                lock.release(self._lock_fd)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")  # readers and the writer do not block each other
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db
