"""Where the reference endpoint keeps the payloads it accepted, and what `otel-metrics report` reads.

One interface, two backends, chosen by URL (open_store):
- `sqlite:///path/to/endpoint.sqlite` (or a bare path): the embedded default, one file;
- `postgresql://user@host/db`: for shared use (psycopg 3, the `postgres` extra, imported only then).

Each accepted payload is one row of `events` or `sessions`: its text (the endpoint gives the
validated payload's canonical text; GET returns it verbatim) beside the fields the report
aggregates, as typed columns, so a report over millions of rows is SQL in the database rather
than JSON parsing in Python.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Mapping, Sequence, Tuple
from urllib.parse import urlsplit

from ..model import COUNT_KEYS, TOKEN_KEYS

KINDS = ("events", "sessions")

# Column name -> payload key; `body` (the payload's text) and `id` (arrival order) come first in
# each table. `day` is the UTC date of the event, or of the session's start: what the report
# groups by, indexed.
EVENT_COLUMNS: Dict[str, str] = {
    "type": "type",
    "name": "name",
    "user_id": "user_id",
    "occurred_at": "timestamp",
    "day": "timestamp",
}
SESSION_COLUMNS: Dict[str, str] = {
    "user_id": "user_id",
    "started_at": "start_timestamp",
    "day": "start_timestamp",
    "session_duration": "session_duration",
    "exit_reason": "exit_reason",
    "had_errors": "had_errors",
    **{key: key for key in COUNT_KEYS},
    **{key: key for key in TOKEN_KEYS},  # 0 when the payload leaves the key out
}
COLUMNS: Dict[str, Dict[str, str]] = {"events": EVENT_COLUMNS, "sessions": SESSION_COLUMNS}
TEXT_COLUMNS = ("type", "name", "user_id", "occurred_at", "started_at", "day", "exit_reason")
# Each index covers one of the report's queries (with the period's time column last), so they
# read a narrow index instead of the rows, in the order they group by.
INDEXES = (
    ("events", ("type", "name", "user_id", "occurred_at")),  # uses and users per command
    ("events", ("day", "type", "occurred_at")),  # events per day
    ("events", ("day", "user_id", "occurred_at")),  # active users per day
    ("events", ("user_id", "occurred_at")),  # when each user was first seen
    ("sessions", ("started_at",)),
    ("sessions", ("day", "user_id", "started_at")),
    ("sessions", ("user_id", "started_at")),
)


class StoreError(Exception):
    """The database refused or could not be reached; the payload was not stored."""


def row_values(kind: str, text: str, payload: Mapping[str, Any]) -> Tuple[Any, ...]:
    """(body, column values...) of one validated payload, in COLUMNS order."""
    values: List[Any] = [text]
    for column, key in COLUMNS[kind].items():
        value = payload.get(key)
        if column == "day":
            value = str(value)[:10]  # of a validated YYYY-MM-DDTHH:MM:SSZ
        values.append(0 if value is None and key in TOKEN_KEYS else value)
    return tuple(values)


def create_statements(id_column: str, integer: str, boolean: str) -> List[str]:
    """CREATE TABLE/INDEX IF NOT EXISTS for both tables, in a backend's types."""
    statements = []
    for kind, columns in COLUMNS.items():
        definitions = [id_column, "body TEXT NOT NULL"]
        for column in columns:
            if column == "user_id":
                kind_of = "TEXT"  # null when the user had no anonymous id
            elif column in TEXT_COLUMNS:
                kind_of = "TEXT NOT NULL"
            else:
                kind_of = (boolean if column == "had_errors" else integer) + " NOT NULL"
            definitions.append(f"{column} {kind_of}")
        statements.append(f"CREATE TABLE IF NOT EXISTS {kind} ({', '.join(definitions)})")
    for table, indexed in INDEXES:
        name = f"{table}_by_{'_'.join(indexed)}"
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(indexed)})")
    return statements


def insert_statement(kind: str, placeholder: str) -> str:
    columns = ["body", *COLUMNS[kind]]
    return f"INSERT INTO {kind} ({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))})"


class PayloadStore(ABC):
    """Accepted payloads and their texts. Thread-safe: the endpoint's request threads share one."""

    url: str  # without a password, for logs

    @abstractmethod
    def add(self, kind: str, text: str, payload: Mapping[str, Any]) -> None:
        """Store one validated payload (`kind` in KINDS) in its own transaction; StoreError if that failed."""

    def bodies(self, kind: str) -> List[str]:
        """The texts stored for `kind`, in arrival order."""
        if kind not in KINDS:
            raise ValueError(f"no such kind {kind!r}")
        return [row[0] for row in self.select(f"SELECT body FROM {kind} ORDER BY id")]

    @abstractmethod
    def select(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """Rows of a read-only query over `events` and `sessions` (`?` placeholders, SQL both backends speak)."""

    @abstractmethod
    def close(self) -> None: ...


def open_store(url: str) -> PayloadStore:
    """The store a --db URL names: sqlite:///PATH, postgresql://..., or a bare path (SQLite)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(f"a SQLite URL names an absolute path, sqlite:///path/to/file: {url!r}")
        return _sqlite(path)
    if scheme and len(scheme) > 1:  # a Windows drive letter is not a scheme
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
    return _sqlite(url)


def _sqlite(path: str) -> PayloadStore:
    from .sqlite import SqliteStore

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return SqliteStore(path)
