"""The shared store: PostgreSQL through psycopg 3 (the `postgres` extra of this package: psycopg[binary]).

One connection shared by the request threads, one transaction per payload. A broken
connection (the server restarted) is replaced on the next call; the call that found it
broken fails with StoreError, and the endpoint answers 503 so the sender retries.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from . import PayloadStore, StoreError, create_statements, insert_statement, row_values

try:
    import psycopg
except ImportError as missing:  # the optional extra
    raise StoreError(
        "a postgresql:// database needs psycopg 3: pip install 'psycopg[binary]' where otel-metrics runs"
    ) from missing

# Serialises schema creation between endpoints starting at once (CREATE ... IF NOT EXISTS can race).
SCHEMA_LOCK_KEY = 0x6F74656C  # "otel"


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(PayloadStore):
    def __init__(self, url: str) -> None:
        self._dsn = url
        self.url = redacted(url)
        self._lock = threading.Lock()
        self._conn: Optional[psycopg.Connection] = None
        with self._lock:
            connection = self._connection()
            try:
                with connection.transaction():
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                    for statement in create_statements(
                        "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BIGINT", "BOOLEAN"
                    ):
                        connection.execute(statement)
            except psycopg.Error as error:
                self._discard()
                raise StoreError(f"{self.url}: {error}") from error

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as error:
                raise StoreError(f"cannot connect to {self.url}: {error}") from error
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def add(self, kind: str, text: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            connection = self._connection()
            try:
                with connection.transaction():
                    connection.execute(insert_statement(kind, "%s"), row_values(kind, text, payload))
            except psycopg.Error as error:
                if connection.broken:
                    self._discard()
                raise StoreError(f"{self.url}: {error}") from error

    def select(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        with self._lock:
            connection = self._connection()
            try:
                rows = connection.execute(sql.replace("?", "%s"), tuple(params)).fetchall()
            except psycopg.Error as error:
                if connection.broken:
                    self._discard()
                raise StoreError(f"{self.url}: {error}") from error
        # SUM() of BIGINT is NUMERIC in PostgreSQL: plain numbers, as SQLite gives them.
        return [tuple(_plain(value) for value in row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._discard()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
