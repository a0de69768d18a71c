"""`otel-metrics report --html`: one self-contained page, rendered by a real headless Chromium (Debian's
package), whose tables show the numbers the payloads give (usage_data.oracle)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List

import pytest

from otel_metrics.report.render import number, percent
from otel_metrics.store import open_store
from support.processes import require
from support.usage_data import bounds, oracle, report_payloads, store_all

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    require(found, "chromium is not installed: `make chromium` installs Debian's package")
    assert found is not None
    return found


def run_chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=120
        )


class Tables(HTMLParser):
    """The text of every cell of every <table id=...>, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: Dict[str, List[List[str]]] = {}
        self._table = None
        self._cell = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs)["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self._table[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell += data


def quantile(value: float) -> str:
    """As the report keeps a quantile (a whole number stays whole) and prints it."""
    return number(int(value) if value == int(value) else round(value, 3))


def rows_by_first_cell(table: List[List[str]]) -> Dict[str, List[str]]:
    return {row[0]: row[1:] for row in table[1:]}


def write_page(tmp_path: Path, *args: str) -> Path:
    """The generated payloads in an endpoint database, and `otel-metrics report --html` of it."""
    db = tmp_path / "endpoint.sqlite"
    store = open_store(str(db))
    store_all(store, report_payloads())
    store.close()
    page = tmp_path / "report.html"
    made = subprocess.run(
        [sys.executable, "-m", "otel_metrics.cli", "report", "--db", str(db), *args, "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return page


def test_the_page_chromium_renders_shows_the_numbers_of_the_database(chromium: str, tmp_path: Path) -> None:
    page = write_page(tmp_path, "--since", "2026-11-02", "--until", "2026-11-08", "--top", "100")
    source = page.read_text()
    # Self-contained: nothing to fetch (no src, href or url(), no script).
    assert not re.search(r"\b(src|href)\s*=|url\(|<script|<link|@import", source, re.IGNORECASE)

    rendered = run_chromium(chromium, "--dump-dom", page.as_uri())
    assert rendered.returncode == 0, rendered.stderr.decode(errors="replace")
    dom = rendered.stdout.decode()
    assert "<svg" in dom and "<polyline" in dom  # the trend chart
    parser = Tables()
    parser.feed(dom)
    tables = parser.tables
    expected = oracle(report_payloads(), *bounds("2026-11-02", "2026-11-08"))

    commands = rows_by_first_cell(tables["commands"])
    for (kind, name), (uses, users) in expected["usage"].items():
        shown = commands if kind == "slash_command" else rows_by_first_cell(tables["skills"])
        assert shown[name] == [number(uses), number(users)], name
    assert commands["total"][0] == number(expected["slash_commands"])
    assert rows_by_first_cell(tables["skills"])["total"][0] == number(expected["skills"])

    users = rows_by_first_cell(tables["users"])
    assert users["active"] == [number(expected["active_users"])]
    assert users["new (first seen in the period)"] == [number(expected["new_users"])]
    assert users["returning"] == [number(expected["returning_users"])]
    assert users["events without an anonymous id"] == [number(expected["events_without_user"])]

    sessions = rows_by_first_cell(tables["sessions"])
    assert sessions["sessions"] == [number(expected["sessions"])]
    median, p90 = expected["duration"]
    assert sessions["duration median (s)"] == [quantile(median)]
    assert sessions["duration p90 (s)"] == [quantile(p90)]
    assert sessions["turns median"] == [quantile(expected["turns"][0])]
    assert sessions["turns p90"] == [quantile(expected["turns"][1])]
    assert sessions["sessions with tool errors"] == [number(expected["sessions_with_errors"])]
    assert rows_by_first_cell(tables["exit-reasons"]) == {
        reason: [number(count)] for reason, count in expected["exit_reasons"].items()
    }

    tools = rows_by_first_cell(tables["tools"])
    for tool, calls in expected["tool_mix"].items():
        assert tools[tool] == [number(calls), percent(calls / expected["tool_calls"])]
    assert tools["errors"] == [
        number(expected["tool_errors"]),
        percent(expected["tool_errors"] / expected["tool_calls"]),
    ]
    assert rows_by_first_cell(tables["tokens"]) == {key: [number(v)] for key, v in expected["tokens"].items()}

    days = rows_by_first_cell(tables["days"])
    assert sorted(days) == sorted(expected["days"])
    for day, counts in expected["days"].items():
        measures = ("slash_commands", "skills", "sessions", "active_users", "new_users")
        assert days[day] == [number(counts.get(m, 0)) for m in measures], day


def test_the_page_renders_to_a_picture(chromium: str, tmp_path: Path) -> None:
    page = write_page(tmp_path)
    picture = tmp_path / "report.png"
    shot = run_chromium(chromium, f"--screenshot={picture}", "--window-size=1200,1600", page.as_uri())
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
