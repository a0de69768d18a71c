"""The endpoint's store: SQLite and a real PostgreSQL behind one interface, chosen by URL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from otel_metrics.model import COUNT_KEYS
from otel_metrics.payloads import canonical_text, mac
from otel_metrics.store import COLUMNS, PayloadStore, StoreError, open_store
from otel_metrics.store.sqlite import SqliteStore
from support.legacy_payloads import EVENT, SESSION
from support.postgres_server import PostgresServer, postgres_bindir
from support.processes import EndpointProcess, free_port, require, wait_for
from support.raw_http import loopback_session

SECOND_EVENT = {**EVENT, "type": "slash_command", "name": "jira:solve", "prompt_length": 17, "user_id": None}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'endpoint.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str) -> Iterator[PayloadStore]:
    opened = open_store(db_url)
    yield opened
    opened.close()


def add(store: PayloadStore, kind: str, payload: dict, indent: int = 0) -> str:
    text = json.dumps(payload, indent=indent or None)
    store.add(kind, text, payload)
    return text


def test_texts_come_back_verbatim_in_arrival_order_per_kind(store: PayloadStore) -> None:
    texts = [add(store, "events", EVENT, indent=3), add(store, "events", SECOND_EVENT), add(store, "events", EVENT)]
    session_text = add(store, "sessions", SESSION)
    assert store.bodies("events") == texts
    assert store.bodies("sessions") == [session_text]


def test_the_report_columns_hold_the_payload_fields(store: PayloadStore) -> None:
    add(store, "events", EVENT)
    add(store, "events", SECOND_EVENT)
    add(store, "sessions", SESSION)
    assert store.select("SELECT type, name, user_id, occurred_at, day FROM events ORDER BY id") == [
        ("skill", "prow-job:analyze", EVENT["user_id"], "2025-10-30T12:34:56Z", "2025-10-30"),
        ("slash_command", "jira:solve", None, "2025-10-30T12:34:56Z", "2025-10-30"),
    ]
    columns = [c for c in COLUMNS["sessions"] if c != "had_errors"]
    [row] = store.select(f"SELECT {', '.join(columns)}, CASE WHEN had_errors THEN 1 ELSE 0 END FROM sessions")
    expected = {**{key: SESSION[key] for key in COUNT_KEYS}, "user_id": None, "exit_reason": "logout"}
    expected.update(started_at="2025-10-30T12:00:00Z", day="2025-10-30", session_duration=600)
    # Token sums the payload leaves out (zero) are 0, the one it has is kept.
    expected.update(total_input_tokens=0, total_output_tokens=512, cache_creation_tokens=0, cache_read_tokens=0)
    assert dict(zip(columns, row[:-1])) == expected
    assert row[-1] == 0
    # Parameters are `?` for both backends.
    assert store.select("SELECT COUNT(*) FROM events WHERE name = ?", ["jira:solve"]) == [(1,)]


def test_stored_payloads_survive_reopening(db_url: str) -> None:
    first = open_store(db_url)
    text = add(first, "sessions", SESSION)
    first.close()
    second = open_store(db_url)
    try:
        assert second.bodies("sessions") == [text]
    finally:
        second.close()


def test_two_stores_opening_one_new_database_at_once(db_url: str) -> None:
    """Two endpoints starting together both create the schema; neither fails."""
    opened, failures = [], []

    def open_one() -> None:
        try:
            opened.append(open_store(db_url))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    add(opened[0], "events", EVENT)
    assert [len(store.bodies("events")) for store in opened] == [1, 1, 1, 1]
    for store in opened:
        store.close()


@pytest.mark.parametrize(
    "url, backend",
    [("sqlite:///{tmp}/a.sqlite", SqliteStore), ("{tmp}/b.sqlite", SqliteStore), ("{tmp}/new/dir/c.db", SqliteStore)],
)
def test_sqlite_urls_and_bare_paths(tmp_path: Path, url: str, backend: type) -> None:
    store = open_store(url.format(tmp=tmp_path))
    try:
        assert isinstance(store, backend)
    finally:
        store.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://localhost/db", "unsupported database URL 'mysql://localhost/db'"),
        ("sqlite://relative.db", "a SQLite URL names an absolute path"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_a_postgresql_url_without_psycopg_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from otel_metrics.store import open_store, StoreError\n"
        "try:\n    open_store('postgresql://nobody@127.0.0.1:1/db')\n"
        "except StoreError as error:\n    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "a postgresql:// database needs psycopg 3: pip install 'psycopg[binary]' where otel-metrics runs\n"


def test_an_unreachable_postgresql_is_a_store_error(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match=r"cannot connect to postgresql://postgres:\*\*\*@127.0.0.1"):
        open_store(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/x")


def test_a_database_written_before_the_typed_tables_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    with old:
        old.execute(
            "CREATE TABLE payloads (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, body TEXT NOT NULL)"
        )
        for kind, payload in [("events", EVENT), ("sessions", SESSION), ("events", SECOND_EVENT)]:
            old.execute("INSERT INTO payloads (kind, body) VALUES (?, ?)", (kind, json.dumps(payload, indent=1)))
    old.close()
    store = open_store(str(path))
    try:
        assert store.bodies("events") == [json.dumps(EVENT, indent=1), json.dumps(SECOND_EVENT, indent=1)]
        assert store.bodies("sessions") == [json.dumps(SESSION, indent=1)]
        assert store.select("SELECT name FROM events ORDER BY id") == [("prow-job:analyze",), ("jira:solve",)]
        tables = store.select("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'payloads'")
        assert tables == []
    finally:
        store.close()


def test_the_endpoint_on_postgresql(postgres_url: str) -> None:
    """The same HTTP contract as on SQLite: the validated payloads' canonical texts, in order, across a restart."""
    http = loopback_session()
    endpoint = EndpointProcess(postgres_url).start()
    try:
        text = json.dumps(EVENT, indent=2)
        response = http.post(f"{endpoint.url}/events", data=text, timeout=10)
        assert (response.status_code, response.json()) == (200, {"status": "stored"})
        assert http.post(f"{endpoint.url}/sessions", json=SESSION, timeout=10).status_code == 200
        bad = http.post(f"{endpoint.url}/events", json={**EVENT, "mac": "0" * 64}, timeout=10)
        assert bad.status_code == 400
        assert http.get(f"{endpoint.url}/events", timeout=10).text == f"[{canonical_text(EVENT)}]"
    finally:
        assert endpoint.stop() == 0
    again = EndpointProcess(postgres_url).start()
    try:
        assert again.events() == [EVENT]
        assert again.sessions() == [SESSION]
    finally:
        again.stop()


def test_the_endpoint_answers_503_while_postgresql_is_down_and_recovers() -> None:
    bindir = postgres_bindir()
    require(bindir, "PostgreSQL is not installed: `make postgres` installs Debian's package")
    assert bindir is not None
    server = PostgresServer(bindir).start()
    http = loopback_session()
    endpoint = EndpointProcess(server.url()).start()
    try:
        assert http.post(f"{endpoint.url}/events", json=EVENT, timeout=10).status_code == 200
        server.stop_server()
        response = http.post(f"{endpoint.url}/events", json=SECOND_EVENT, timeout=10)
        assert (response.status_code, response.json()) == (503, {"error": "the database is unavailable; retry later"})
        assert http.get(f"{endpoint.url}/events", timeout=10).status_code == 503
        server.start_server()
        # The forwarder retries a 503; the retry finds a new connection.
        wait_for(lambda: http.post(f"{endpoint.url}/events", json=SECOND_EVENT, timeout=10).status_code == 200)
        assert endpoint.events() == [EVENT, SECOND_EVENT]
        assert "could not store a payload for /events" in endpoint.log()
    finally:
        endpoint.stop()
        server.stop()


def test_the_endpoint_exposes_the_stored_sessions_as_prometheus_counters(db_url: str) -> None:
    http = loopback_session()
    endpoint = EndpointProcess(db_url).start()
    try:
        empty = http.get(f"{endpoint.url}/metrics", timeout=10)
        assert empty.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        # Every series from the start, at 0, so that increase() counts the first sessions.
        assert 'otel_metrics_endpoint_tool_calls_total{tool="Bash"} 0\n' in empty.text
        assert "otel_metrics_endpoint_sessions_total 0\n" in empty.text
        failing = {
            **SESSION,
            "session_id": "b",
            "mac": mac("b", SESSION["start_timestamp"]),
            "total_tool_calls": 7,
            "tool_error_count": 2,
            "had_errors": True,
            "file_read_count": 4,
            "grep_call_count": 1,
            "cache_read_tokens": 1000,
        }
        for payload in (SESSION, failing):
            assert http.post(f"{endpoint.url}/sessions", json=payload, timeout=10).status_code == 200
        text = http.get(f"{endpoint.url}/metrics", timeout=10).text
    finally:
        endpoint.stop()
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == [
        "otel_metrics_endpoint_sessions_total 2",
        "otel_metrics_endpoint_sessions_with_errors_total 1",
        'otel_metrics_endpoint_tool_calls_total{tool="Bash"} 2',
        'otel_metrics_endpoint_tool_calls_total{tool="Read"} 4',
        'otel_metrics_endpoint_tool_calls_total{tool="Edit"} 0',
        'otel_metrics_endpoint_tool_calls_total{tool="Write"} 0',
        'otel_metrics_endpoint_tool_calls_total{tool="Grep"} 1',
        'otel_metrics_endpoint_tool_calls_total{tool="Glob"} 0',
        'otel_metrics_endpoint_tool_calls_total{tool="WebFetch"} 0',
        'otel_metrics_endpoint_tool_calls_total{tool="WebSearch"} 0',
        'otel_metrics_endpoint_tool_calls_total{tool="other"} 1',
        "otel_metrics_endpoint_tool_errors_total 2",
        'otel_metrics_endpoint_tokens_total{type="input"} 0',
        'otel_metrics_endpoint_tokens_total{type="output"} 1024',
        'otel_metrics_endpoint_tokens_total{type="cache_creation"} 0',
        'otel_metrics_endpoint_tokens_total{type="cache_read"} 1000',
    ]
    assert "# TYPE otel_metrics_endpoint_tool_calls_total counter" in text
