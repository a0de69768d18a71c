"""The forwarder's outbox: legacy payloads waiting for delivery, durable in SQLite, and its dead letters.

A request is acknowledged only after its payloads are committed here, so a
crash, a restart or a power cut never loses what the sender was told had been
accepted. Requests arriving together share one commit (and one fsync): the
first to find no commit running writes everyone's, each request all or none.

One forwarder process per outbox file: a lock file beside it (`<outbox>.lock`)
is held for the process's life, and a second forwarder is refused.

A payload the endpoint refused for good moves to the dead_letters table with
the endpoint's answer, to be listed and replayed (`otel-metrics forwarder dead-letters`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .. import lock

DEFAULT_MAX_ITEMS = 1_000_000
RESPONSE_KEPT_CHARS = 4000  # of a refusal's response body, in a dead letter

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,"
    " body TEXT NOT NULL, status INTEGER NOT NULL, response TEXT NOT NULL, failed_at REAL NOT NULL,"
    " received REAL)",
)


class OutboxUnavailable(Exception):
    """The outbox cannot take these payloads now (full, or its disk refuses): try later."""


class OutboxInUse(Exception):
    """Another process holds this outbox's lock."""

    def __init__(self, path: str, pid: Optional[int]) -> None:
        owner = f"another forwarder (pid {pid})" if pid else "another forwarder"
        super().__init__(f"the outbox {path} is in use by {owner}; stop it, or give this one its own --outbox")
        self.pid = pid


class Item(NamedTuple):
    id: int
    path: str  # "events" | "sessions": joined to the metrics URL at delivery time
    body: str  # the JSON text to POST, exactly
    received: Optional[float] = None  # Unix time it was committed (None: queued by an older release)


class DeadLetter(NamedTuple):
    id: int
    path: str
    body: str
    status: int
    response: str
    failed_at: float
    received: Optional[float]


class _Commit:
    """One request's payloads, waiting for the group commit that takes them."""

    __slots__ = ("items", "count", "received", "done", "error")

    def __init__(self, items: Sequence[Tuple[str, str, int]], count: int, received: float) -> None:
        self.items = items
        self.count = count
        self.received = received
        self.done = False
        self.error: Optional[sqlite3.Error] = None

    def rows(self) -> Iterator[Tuple[str, str, float]]:
        """One row per copy, made as they are written: n identical payloads never wait in memory n times."""
        for path, body, copies in self.items:
            for _ in range(copies):
                yield path, body, self.received


class Outbox:
    def __init__(self, path: str, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock_fd: Optional[int] = _lock_outbox(path)
        try:
            # Two connections: adds fsync on every commit (they are acknowledged); removals
            # need not (a removal lost to a power cut means one duplicate delivery, never a loss).
            self._adding = connect(path, synchronous="FULL")
            migrate(self._adding)
            self._taking = connect(path, synchronous="NORMAL")
            self._count: int = self._adding.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.Error:
            lock.release(self._lock_fd)
            raise
        self.max_items = max_items
        self._state = threading.Condition()  # guards the count, the commit queue and `closed`
        self._queue: List[_Commit] = []
        self._queued = 0  # payloads in _queue and in the commit being written
        self._committing = False
        self._closed = False
        self._take_lock = threading.Lock()  # the taking connection: reads, removals, dead letters
        self._removals: List[int] = []
        self._removing = False
        self.write_error: Optional[str] = None  # the last write's failure, None once one succeeds
        self.on_added: Callable[[], None] = lambda: None  # the delivery's wake-up

    def __len__(self) -> int:
        """Payloads waiting (not yet delivered nor dead-lettered)."""
        return self._count

    def add(self, items: Sequence[Tuple[str, str, int]]) -> None:
        """Commit `copies` rows of each (path, body, copies) in one transaction, all or none;
        returns once they are on disk. The bound is checked on the count, before any row is made."""
        count = sum(copies for _, _, copies in items)
        if not count:
            return
        commit = _Commit(items, count, time.time())
        with self._state:
            if self._closed:
                raise OutboxUnavailable("the forwarder is shutting down")
            waiting = self._count + self._queued
            # A request larger than the whole bound is still taken into an empty outbox:
            # refusing it would make the collector retry it forever (the receiver bounds requests).
            if waiting and waiting + count > self.max_items:
                raise OutboxUnavailable(f"the outbox is full ({waiting} payloads waiting)")
            self._queue.append(commit)
            self._queued += count
            while not commit.done:
                if self._committing:
                    self._state.wait()
                    continue
                self._commit_queue()
        if commit.error is not None:  # disk full, read-only, locked by another process...
            raise OutboxUnavailable(f"the outbox cannot be written: {commit.error}")
        self.on_added()

    def _commit_queue(self) -> None:
        """Write every queued request in one transaction (called holding _state, which it lets go meanwhile)."""
        batch, self._queue = self._queue, []
        self._committing = True
        self._state.release()
        error: Optional[sqlite3.Error] = None
        try:
            with self._adding:  # one transaction: committed, or rolled back on error
                self._adding.executemany(
                    "INSERT INTO outbox (path, body, received) VALUES (?, ?, ?)",
                    (row for commit in batch for row in commit.rows()),
                )
        except sqlite3.Error as failure:
            error = failure
        finally:
            self._state.acquire()
        self._committing = False
        added = sum(commit.count for commit in batch)
        self._queued -= added
        if error is None:
            self._count += added
        self.write_error = None if error is None else str(error)
        for commit in batch:
            commit.done, commit.error = True, error
        self._state.notify_all()

    # Delivery's side.

    def after(self, last_id: int, limit: int) -> List[Item]:
        """The oldest payloads with an id above last_id."""
        with self._take_lock:
            if self._closed:
                return []
            rows = self._taking.execute(
                "SELECT id, path, body, received FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
            ).fetchall()
        return [Item(*row) for row in rows]

    def oldest(self, limit: int = 100) -> List[Item]:
        return self.after(0, limit)

    def get(self, item_id: int) -> Optional[Item]:
        with self._take_lock:
            if self._closed:
                return None
            row = self._taking.execute(
                "SELECT id, path, body, received FROM outbox WHERE id = ?", (item_id,)
            ).fetchone()
        return Item(*row) if row else None

    def oldest_received(self) -> Optional[float]:
        """When the oldest waiting payload was committed (None: nothing waits, or its time is unknown)."""
        with self._take_lock:
            if self._closed:
                return None
            row = self._taking.execute("SELECT received FROM outbox ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def remove(self, item_id: int) -> None:
        """A delivered payload leaves. Removals arriving together share one (unsynced) commit."""
        with self._state:
            self._count -= 1
            self._removals.append(item_id)
        self._flush_removals()

    def _flush_removals(self) -> None:
        with self._state:
            if self._removing:
                return  # the thread removing now takes these too before it stops
            self._removing = True
        try:
            while True:
                with self._state:
                    batch, self._removals = self._removals, []
                    if not batch:
                        self._removing = False
                        return
                self._write_taking("DELETE FROM outbox WHERE id = ?", [(item_id,) for item_id in batch])
        except BaseException:
            with self._state:
                self._removing = False
            raise

    def dead_letter(self, item: Item, status: int, response: str) -> None:
        """Move a payload the endpoint refused for good to the dead letters, with its answer."""
        with self._state:
            self._count -= 1
        self._write_taking(
            "INSERT INTO dead_letters (path, body, status, response, failed_at, received) VALUES (?, ?, ?, ?, ?, ?)",
            [(item.path, item.body, status, response[:RESPONSE_KEPT_CHARS], time.time(), item.received)],
            then=("DELETE FROM outbox WHERE id = ?", [(item.id,)]),
        )

    def _write_taking(
        self, sql: str, rows: Iterable[Tuple[Any, ...]], then: Optional[Tuple[str, Iterable[Tuple[Any, ...]]]] = None
    ) -> None:
        with self._take_lock:
            if self._closed:
                return  # a POST that outlived shutdown: the payload stays, and is sent again (never lost)
            try:
                with self._taking:
                    self._taking.executemany(sql, rows)
                    if then is not None:
                        self._taking.executemany(*then)
                self.write_error = None
            except sqlite3.Error as error:
                # The payload stays in the outbox: sent again after a restart, a duplicate, never a loss.
                self.write_error = str(error)
                raise OutboxUnavailable(f"the outbox cannot be written: {error}") from error

    def dead_letter_count(self) -> int:
        with self._take_lock:
            if self._closed:
                return 0
            count: int = self._taking.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            return count

    def close(self) -> None:
        """Wait for the commit being written, then close; adds after this raise OutboxUnavailable."""
        with self._state:
            self._closed = True
            while self._committing:
                self._state.wait()
        self._flush_removals()
        with self._take_lock, self._state:
            if self._lock_fd is None:
                return
            self._adding.close()
            self._taking.close()
            lock.release(self._lock_fd)
            self._lock_fd = None


class DeadLetters:
    """The dead letters of an outbox file, for the command line (beside a running forwarder or not)."""

    def __init__(self, path: str) -> None:
        self._db = connect(path, synchronous="NORMAL")
        migrate(self._db)

    def list(self) -> List[DeadLetter]:
        rows = self._db.execute(
            "SELECT id, path, body, status, response, failed_at, received FROM dead_letters ORDER BY id"
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def delivered(self, letter_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))

    def refused_again(self, letter_id: int, status: int, response: str) -> None:
        with self._db:
            self._db.execute(
                "UPDATE dead_letters SET status = ?, response = ?, failed_at = ? WHERE id = ?",
                (status, response[:RESPONSE_KEPT_CHARS], time.time(), letter_id),
            )

    def close(self) -> None:
        self._db.close()


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")  # readers and the writer do not block each other
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


def migrate(db: sqlite3.Connection) -> None:
    """The tables, and the columns an outbox written by an older release lacks."""
    with db:
        for statement in SCHEMA:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        if "received" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN received REAL")


def _lock_outbox(path: str) -> int:
    lock_path = path + ".lock"
    fd = lock.try_lock(lock_path)
    if fd is None:
        raise OutboxInUse(path, _owner(lock_path))
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))  # for the message a second forwarder prints
    return fd


def _owner(lock_path: str) -> Optional[int]:
    try:
        with open(lock_path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None
