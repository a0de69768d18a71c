"""The forwarder's outbox: legacy payloads waiting for delivery, durable in SQLite, and its dead letters.

A request is acknowledged only after its payloads are committed here, so a
crash, a restart or a power cut never loses what the sender was told had been
accepted. One thread of the outbox's own writes the file: payloads added,
delivered ones removed, refused ones moved to the dead letters are queued (the
caller does not wait) and everything queued goes into one transaction, so
requests arriving together share one commit (and one fsync), each request all
or none, and a thousand deliveries one delete. A transaction that adds is synced
before the adders hear of it; one that only removes is not (a removal lost to a
power cut means one duplicate delivery, never a loss).

One forwarder process per outbox file: a lock file beside it (`<outbox>.lock`)
is held for the process's life, and a second forwarder is refused.

A payload the endpoint refused for good moves to the dead_letters table with
the endpoint's answer, to be listed and replayed (`otel-metrics forwarder dead-letters`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .. import lock

log = logging.getLogger(__name__)

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


class Commit:
    """One request's payloads, queued for the transaction that writes them; then their ids, or the error."""

    __slots__ = ("items", "count", "received", "done", "first_id", "error")

    def __init__(
        self, items: Sequence[Tuple[str, str, int]], count: int, received: float, done: Callable[[Commit], None]
    ) -> None:
        self.items = items
        self.count = count
        self.received = received
        self.done = done  # called on the writer thread once the transaction ended
        self.first_id = 0  # its rows have the ids first_id .. first_id + count - 1, in order
        self.error: Optional[sqlite3.Error] = None

    def payloads(self) -> Iterator[Item]:
        """One item per copy, made as they are written or taken: n identical payloads never wait in
        memory n times."""
        item_id = self.first_id
        for path, body, copies in self.items:
            for _ in range(copies):
                yield Item(item_id, path, body, self.received)
                item_id += 1


class _Refusal(NamedTuple):
    item: Item
    status: int
    response: str
    failed_at: float


class Outbox:
    def __init__(self, path: str, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock_fd: Optional[int] = _lock_outbox(path)
        try:
            # All three are the writer's but the last: adds sync every commit (they are
            # acknowledged), removals need not; reads come from other threads.
            self._adding = connect(path, synchronous="FULL")
            migrate(self._adding)
            self._removing = connect(path, synchronous="NORMAL")
            self._reading = connect(path, synchronous="NORMAL")
            self._count: int = self._adding.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            # Ids are given here, in order (one writer), so that each request knows its rows' ids.
            self._next_id: int = (
                1
                + self._adding.execute(
                    "SELECT MAX(COALESCE((SELECT MAX(id) FROM outbox), 0),"
                    " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))"
                ).fetchone()[0]
            )
        except sqlite3.Error:
            lock.release(self._lock_fd)
            raise
        self.max_items = max_items
        self._state = threading.Condition()  # guards the queues, the count and `closed`
        self._adds: List[Commit] = []
        self._queued = 0  # payloads in _adds and in the transaction being written
        self._removals: List[int] = []
        self._refusals: List[_Refusal] = []
        self._writer_idle = False  # it waits for something to write: what is queued must wake it
        self._closed = False
        self._read_lock = threading.Lock()  # the reading connection
        self.write_error: Optional[str] = None  # the last write's failure, None once one succeeds
        self._writer = threading.Thread(target=self._write, name="outbox-writer", daemon=True)
        self._writer.start()

    def __len__(self) -> int:
        """Payloads waiting (not yet delivered nor dead-lettered)."""
        return self._count

    def submit(self, items: Sequence[Tuple[str, str, int]], done: Callable[[Commit], None]) -> None:
        """Queue `copies` rows of each (path, body, copies), to be committed in one transaction, all or
        none; `done(commit)` runs on the writer thread once they are on disk (or could not be:
        commit.error). Raises OutboxUnavailable at once when they do not fit under the bound, checked on
        the count before any row is made."""
        count = sum(copies for _, _, copies in items)
        commit = Commit(items, count, time.time(), done)
        with self._state:
            if self._closed:
                raise OutboxUnavailable("the forwarder is shutting down")
            waiting = self._count + self._queued
            # A request larger than the whole bound is still taken into an empty outbox:
            # refusing it would make the collector retry it forever (the receiver bounds requests).
            if waiting and waiting + count > self.max_items:
                raise OutboxUnavailable(f"the outbox is full ({waiting} payloads waiting)")
            self._adds.append(commit)
            self._queued += count
            self._wake_writer()

    def remove(self, item_id: int) -> None:
        """A delivered payload leaves (queued: the caller does not wait)."""
        with self._state:
            self._count -= 1
            self._removals.append(item_id)
            self._wake_writer()

    def dead_letter(self, item: Item, status: int, response: str) -> None:
        """Move a payload the endpoint refused for good to the dead letters, with its answer (queued)."""
        with self._state:
            self._count -= 1
            self._refusals.append(_Refusal(item, status, response[:RESPONSE_KEPT_CHARS], time.time()))
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer_idle:  # (holding _state) a busy writer takes the queue when it is done
            self._writer_idle = False
            self._state.notify_all()

    # The writer.

    def _write(self) -> None:
        while True:
            with self._state:
                while not (self._adds or self._removals or self._refusals):
                    if self._closed:
                        return
                    self._writer_idle = True
                    self._state.wait()
                adds, self._adds = self._adds, []
                removals, self._removals = self._removals, []
                refusals, self._refusals = self._refusals, []
                first_id = self._next_id
                for commit in adds:
                    commit.first_id = self._next_id
                    self._next_id += commit.count
            error = self._transaction(adds, removals, refusals)
            added = sum(commit.count for commit in adds)
            with self._state:
                self._queued -= added
                if error is None:
                    self._count += added
                else:
                    self._next_id = first_id  # nothing was written: the ids are free again
                self.write_error = None if error is None else str(error)
                self._state.notify_all()  # close() waits for the queues to empty
            if error is not None and (removals or refusals):
                # They stay in the outbox: sent again after a restart, a duplicate, never a loss.
                log.error("cannot update the outbox after %d deliveries: %s", len(removals) + len(refusals), error)
            for commit in adds:
                commit.error = error
                commit.done(commit)

    def _transaction(
        self, adds: List[Commit], removals: List[int], refusals: List[_Refusal]
    ) -> Optional[sqlite3.Error]:
        db = self._adding if adds else self._removing
        try:
            with db:  # one transaction: committed, or rolled back on error
                if adds:
                    db.executemany(
                        "INSERT INTO outbox (id, path, body, received) VALUES (?, ?, ?, ?)",
                        (item for commit in adds for item in commit.payloads()),
                    )
                if refusals:
                    db.executemany(
                        "INSERT INTO dead_letters (path, body, status, response, failed_at, received)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        [(r.item.path, r.item.body, r.status, r.response, r.failed_at, r.item.received)
                         for r in refusals],
                    )  # fmt: skip
                    removals = removals + [refusal.item.id for refusal in refusals]
                if removals:
                    db.executemany("DELETE FROM outbox WHERE id = ?", [(item_id,) for item_id in removals])
        except sqlite3.Error as error:  # disk full, read-only, locked by another process...
            return error
        return None

    # Reads (from any thread).

    def after(self, last_id: int, limit: int) -> List[Item]:
        """The oldest payloads with an id above last_id."""
        with self._read_lock:
            if self._closed:
                return []
            rows = self._reading.execute(
                "SELECT id, path, body, received FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
            ).fetchall()
        return [Item(*row) for row in rows]

    def oldest(self, limit: int = 100) -> List[Item]:
        return self.after(0, limit)

    def get(self, item_id: int) -> Optional[Item]:
        with self._read_lock:
            if self._closed:
                return None
            row = self._reading.execute(
                "SELECT id, path, body, received FROM outbox WHERE id = ?", (item_id,)
            ).fetchone()
        return Item(*row) if row else None

    def oldest_received(self) -> Optional[float]:
        """When the oldest waiting payload was committed (None: nothing waits, or its time is unknown)."""
        with self._read_lock:
            if self._closed:
                return None
            row = self._reading.execute("SELECT received FROM outbox ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def dead_letter_count(self) -> int:
        with self._read_lock:
            if self._closed:
                return 0
            count: int = self._reading.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            return count

    def close(self) -> None:
        """Write what is queued, then close; submits after this raise OutboxUnavailable."""
        with self._state:
            self._closed = True
            self._state.notify_all()
        self._writer.join()
        with self._read_lock:
            if self._lock_fd is None:
                return
            for db in (self._adding, self._removing, self._reading):
                db.close()
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
