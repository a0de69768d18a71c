"""`otel-metrics report` on a large endpoint database, against a plain SQL aggregation of the same rows.

The database holds --events generated events (default a million) and about a tenth as many
sessions from --users users over --days days (tests/usage_data.py: a few popular commands and
long tails, users joining over time), loaded in bulk into the endpoint's schema. Timed, in
alternating order, --runs times each: the baseline (one GROUP BY over all events: the least
any report of them costs), the report over all days and over the last 7, and the command as a
maintainer runs it (a new process, table on stdout). With --postgres the same is measured on a
throwaway PostgreSQL server (Debian's, as in the tests) too.

    .venv/bin/python benchmarks/report_speed.py [--events 1000000] [--runs 5] [--postgres]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from otel_metrics.report import build_report  # noqa: E402
from otel_metrics.store import COLUMNS, insert_statement, open_store, row_values  # noqa: E402
from support.postgres_server import PostgresServer, postgres_bindir  # noqa: E402
from support.usage_data import DAY, START, generate  # noqa: E402

BASELINE = "SELECT type, name, COUNT(*) FROM events GROUP BY type, name"


def rows(events: int, users: int, days: int) -> Dict[str, List[Tuple]]:
    out: Dict[str, List[Tuple]] = {"events": [], "sessions": []}
    for kind, payload in generate(events, users=users, days=days):
        out[kind].append(row_values(kind, json.dumps(payload), payload))
    return out


def load_sqlite(path: str, data: Dict[str, List[Tuple]]) -> str:
    open_store(path).close()  # the endpoint's schema
    db = sqlite3.connect(path)
    with db:
        for kind, values in data.items():
            db.executemany(insert_statement(kind, "?"), values)
    db.execute("ANALYZE")
    db.close()
    return f"sqlite:///{path}"


def load_postgres(url: str, data: Dict[str, List[Tuple]]) -> None:
    import psycopg

    open_store(url).close()
    with psycopg.connect(url) as connection:
        for kind, values in data.items():
            columns = ", ".join(["body", *COLUMNS[kind]])
            with connection.cursor().copy(f"COPY {kind} ({columns}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
        connection.commit()
        connection.execute("ANALYZE")


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(url: str, last_week: str, runs: int) -> Dict[str, List[float]]:
    store = open_store(url)
    cases: Dict[str, Callable[[], object]] = {
        "baseline: one GROUP BY over the events": lambda: store.select(BASELINE),
        "report, all days": lambda: build_report(store),
        "report, last 7 days": lambda: build_report(store, since=last_week),
        "`otel-metrics report` (new process)": lambda: subprocess.run(
            [sys.executable, "-m", "otel_metrics.cli", "report", "--db", url],
            stdout=subprocess.DEVNULL,
            check=True,
        ),
    }
    times: Dict[str, List[float]] = {name: [] for name in cases}
    try:
        for index in range(runs):
            order = list(cases) if index % 2 == 0 else list(reversed(cases))
            for name in order:
                times[name].append(timed(cases[name]))
    finally:
        store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL server")
    args = parser.parse_args()

    started = time.perf_counter()
    data = rows(args.events, args.users, args.days)
    generated = time.perf_counter() - started
    last_week = datetime.datetime.fromtimestamp(START + (args.days - 7) * DAY, datetime.timezone.utc)
    since = last_week.strftime("%Y-%m-%dT%H:%M:%SZ")
    print(
        f"# {len(data['events'])} events, {len(data['sessions'])} sessions, {args.users} users, {args.days} days "
        f"(generated in {generated:.0f} s); medians of {args.runs} runs; {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    results: List[Tuple[str, Dict[str, List[float]]]] = []
    with tempfile.TemporaryDirectory(prefix="report-bench-") as work:
        url = load_sqlite(os.path.join(work, "endpoint.sqlite"), data)
        results.append(("SQLite", measure(url, since, args.runs)))
        if args.postgres:
            bindir = postgres_bindir()
            if bindir is None:
                sys.exit("--postgres: PostgreSQL is not installed (make postgres)")
            server = PostgresServer(bindir).start()
            try:
                url = server.create_database()
                load_postgres(url, data)
                version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
                print(f"# {version.stdout.strip()}")
                results.append(("PostgreSQL", measure(url, since, args.runs)))
            finally:
                server.stop()
    print("| database | what | median | vs baseline |\n|---|---|---|---|")
    for backend, times in results:
        baseline = statistics.median(next(iter(times.values())))
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {backend} | {name} | {median:.2f} s | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
