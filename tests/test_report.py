"""`otel-metrics report` against SQLite and a real PostgreSQL: every number equals what plain Python
computes from the same payloads (usage_data.oracle), for the whole history and for periods."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from otel_metrics.report import Report, build_report
from otel_metrics.store import open_store
from support.usage_data import Payload, bounds, oracle, report_payloads, store_all

PAYLOADS: List[Payload] = report_payloads()
PERIODS = [
    (None, None),
    ("2026-11-04", "2026-11-07"),  # --until is a day, included
    ("2026-11-03T12:00:00Z", None),
    (None, "2026-11-02T06:30:00Z"),
    ("2027-01-01", None),  # nothing in it
]


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("report") / "endpoint.sqlite"
    store = open_store(str(path))
    store_all(store, PAYLOADS)
    store.close()
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url = request.getfixturevalue("postgres_url")
    store = open_store(url)
    store_all(store, PAYLOADS)
    store.close()
    return url


def report_numbers(report: Report) -> Dict[str, Any]:
    """The report in the oracle's shape."""
    days: Dict[str, Dict[str, int]] = {}
    for day in report.days:
        counts = {k: v for k, v in vars(day).items() if k != "day" and v}
        days[day.day] = counts
    return {
        "usage": {(u.kind, u.name): (u.uses, u.users) for u in report.commands + report.skills_used},
        "slash_commands": report.slash_commands,
        "skills": report.skills,
        "events_without_user": report.events_without_user,
        "active_users": report.active_users,
        "new_users": report.new_users,
        "returning_users": report.returning_users,
        "sessions": report.sessions,
        "duration": (report.session_duration_seconds.median, report.session_duration_seconds.p90),
        "turns": (report.session_turns.median, report.session_turns.p90),
        "exit_reasons": report.exit_reasons,
        "tool_calls": report.tool_calls,
        "tool_mix": report.tool_mix,
        "tool_errors": report.tool_errors,
        "sessions_with_errors": report.sessions_with_errors,
        "tokens": report.tokens,
        "days": days,
    }


def rounded(numbers: Dict[str, Any]) -> Dict[str, Any]:
    """Quantiles to 3 decimals, as the report gives them."""
    out = dict(numbers)
    for key in ("duration", "turns"):
        out[key] = tuple(None if v is None else round(float(v), 3) for v in numbers[key])
    return out


@pytest.mark.parametrize("since, until", PERIODS)
def test_every_number_matches_the_payloads(db_url: str, since: Optional[str], until: Optional[str]) -> None:
    start, end = bounds(since, until)
    store = open_store(db_url)
    try:
        report = build_report(store, start, end, top=1000)
    finally:
        store.close()
    assert rounded(report_numbers(report)) == rounded(oracle(PAYLOADS, start, end))
    assert report.other_commands == report.other_skills == 0


def test_the_ranking_is_by_uses_then_users_and_the_rest_is_summed(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        report = build_report(store, top=5)
    finally:
        store.close()
    expected = oracle(PAYLOADS)["usage"]
    commands = sorted(
        ((name, uses, users) for (kind, name), (uses, users) in expected.items() if kind == "slash_command"),
        key=lambda row: (-row[1], -row[2], row[0]),
    )
    assert [(u.name, u.uses, u.users) for u in report.commands] == commands[:5]
    assert report.other_commands == sum(uses for _, uses, _ in commands[5:])
    assert report.slash_commands == sum(uses for _, uses, _ in commands)


def run_report(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_metrics.cli", "report", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_json_is_the_whole_report(sqlite_url: str) -> None:
    result = run_report("--db", sqlite_url, "--format", "json", "--since", "2026-11-04", "--until", "2026-11-07")
    assert (result.returncode, result.stderr) == (0, "")
    document = json.loads(result.stdout)
    store = open_store(sqlite_url)
    try:
        report = build_report(store, *bounds("2026-11-04", "2026-11-07"))
    finally:
        store.close()
    assert document == json.loads(json.dumps(report.as_dict()))
    assert (document["since"], document["until"]) == ("2026-11-04T00:00:00Z", "2026-11-08T00:00:00Z")
    assert document["tool_error_rate"] == pytest.approx(report.tool_errors / report.tool_calls)


def test_csv_has_one_number_per_row(sqlite_url: str) -> None:
    result = run_report("--db", sqlite_url, "--format", "csv")
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = oracle(PAYLOADS)
    by_key = {(r["section"], r["item"], r["measure"]): r["value"] for r in rows}
    assert by_key[("events", "slash_command", "uses")] == str(expected["slash_commands"])
    assert by_key[("sessions", "all", "sessions")] == str(expected["sessions"])
    assert by_key[("tokens", "cache_read_tokens", "tokens")] == str(expected["tokens"]["cache_read_tokens"])
    assert by_key[("day", "2026-11-05", "sessions")] == str(expected["days"]["2026-11-05"]["sessions"])
    assert len(rows) == len(by_key)  # no (section, item, measure) twice


def test_the_table_names_the_period_and_the_top_entries(sqlite_url: str) -> None:
    result = run_report("--db", sqlite_url, "--since", "2026-11-04", "--top", "3")
    assert result.returncode == 0
    text = result.stdout
    assert text.startswith("otel-metrics report: 2026-11-04T00:00:00Z .. 2026-11-10 (last record)\n")
    section = text[text.index("Slash commands by uses") : text.index("Skills by uses")]
    assert len(section.strip().splitlines()) == 2 + 3 + 2  # title, header, top 3, (others), total


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--since", "yesterday"],
            "argument --since: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), got 'yesterday'",
        ),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ],
)
def test_bad_arguments_are_refused(sqlite_url: str, args: List[str], message: str) -> None:
    result = run_report("--db", sqlite_url, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    result = run_report("--db", "mysql://db/usage")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "otel-metrics report: unsupported database URL 'mysql://db/usage': use sqlite:///PATH or postgresql://...\n"
    )


def test_progress_shows_on_a_terminal_only(sqlite_url: str, tmp_path: Path) -> None:
    quiet = run_report("--db", sqlite_url)
    assert quiet.stderr == ""
    # On a terminal (a pseudo-terminal for stderr), each step rewrites one line, cleared at the end.
    leader, follower = pty.openpty()
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_metrics.cli", "report", "--db", sqlite_url], stdout=stdout, stderr=follower
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(60) == 0
    os.close(leader)
    text = shown.decode()
    assert "report: [1/7] commands and skills" in text
    assert "report: [7/7] session turns" in text
    assert text.endswith("\r\x1b[K")  # the progress line is gone before the report is read
    assert out.read_text().startswith("otel-metrics report:")
