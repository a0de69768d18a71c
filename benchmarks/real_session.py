"""Wall time of one real `claude -p` session with and without the metrics plugin.

The session fires every hook of the plugin: SessionStart, a typed slash command
(UserPromptSubmit), a skill the model calls (PreToolUse Skill) and SessionEnd. It
runs against the loopback Messages API stand-in of tests/acceptance, with the test
plugin loaded in every variant, so the variants differ only in the metrics plugin:
  without  no metrics plugin;
  floor    a copy of the plugin whose hook commands are all `true`: what Claude Code
           itself spends on running these hooks, which no hook implementation can beat;
  with     `--plugin-dir plugin`.
Runs alternate (without, floor, with, without, ...) in each collector state:
  up    the forwarder and the reference endpoint, answering at once;
  down  nothing listens on the collector's port;
  slow  a loopback HTTP server that accepts and answers only after --slow-seconds.
Ratios are median(variant) / median(without). Background work counts: the hooks'
detached exporter shares the cores with Claude Code, so its CPU time per session
is reported too (mean; /proc counts in clock ticks), and each run starts only once
the exporter has gone quiet, so one run's background work is not charged to the next.

    .venv/bin/python benchmarks/real_session.py [--runs 15] [--states up,down,slow]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "acceptance"))

from claude_cli import (  # noqa: E402 - the acceptance helpers are the way to run the real CLI
    PLUGIN_DIR,
    TEST_PLUGIN_DIR,
    base_env,
    ensure_claude_cli,
    run_claude,
)
from fake_api import FakeMessagesAPI, Script, ToolCall, text, tools  # noqa: E402
from pipeline import Endpoint, Forwarder, exporter_pids, free_port, stop_exporters  # noqa: E402

PROMPT = "/testkit:hello Benchmark"
STATES = ("up", "down", "slow")
QUIET_SECONDS = 0.5  # the exporter's CPU time must stand still this long before the next run
SETTLE_LIMIT_SECONDS = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def session_script() -> Script:
    return Script(
        {
            "Say hello to Benchmark": [
                tools(ToolCall("Skill", {"skill": "testkit:summarize"})),
                text("Hello, Benchmark."),
            ]
        }
    )


class SlowCollector:
    """Accepts OTLP requests and answers 200 only after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ExporterCPU:
    """CPU seconds used by the state directory's background exporters since the last look (Linux /proc)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._seen: Dict[int, float] = {}

    def _totals(self) -> Dict[int, float]:
        totals = {}
        for pid in exporter_pids(self.state_dir):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            totals[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
        return totals

    def take(self) -> float:
        totals = self._totals()
        used = sum(cpu - self._seen.get(pid, 0.0) for pid, cpu in totals.items())
        self._seen.update(totals)
        return used

    def settle(self) -> float:
        """Wait until the exporters' CPU time stands still; the CPU seconds used meanwhile."""
        used = 0.0
        deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_SECONDS and time.monotonic() < deadline:
            time.sleep(0.1)
            delta = self.take()
            if delta > 0.005:
                quiet_since = time.monotonic()
            used += delta
        return used


VARIANTS = ("without", "floor", "with")


@dataclass
class Measurements:
    walls: Dict[str, List[float]] = field(default_factory=lambda: {variant: [] for variant in VARIANTS})
    background_cpu: List[float] = field(default_factory=list)  # per session with the plugin

    def median(self, variant: str) -> float:
        return statistics.median(self.walls[variant])

    def ratio(self, variant: str) -> float:
        return self.median(variant) / self.median("without")


def floor_plugin(workdir: Path) -> Path:
    """The metrics plugin with every hook command replaced by `true`."""
    floor = workdir / "floor-plugin"
    shutil.copytree(PLUGIN_DIR / ".claude-plugin", floor / ".claude-plugin")
    hooks = json.loads((PLUGIN_DIR / "hooks" / "hooks.json").read_text(encoding="utf-8"))
    for groups in hooks["hooks"].values():
        for group in groups:
            for hook in group["hooks"]:
                hook["command"] = "true"
    (floor / "hooks").mkdir()
    (floor / "hooks" / "hooks.json").write_text(json.dumps(hooks, indent=2), encoding="utf-8")
    return floor


@contextlib.contextmanager
def collector(state: str, workdir: Path, slow_seconds: float) -> Iterator[str]:
    """The OTLP endpoint URL the hooks get in a collector state, with what it needs running meanwhile."""
    if state == "up":
        endpoint = Endpoint(workdir)
        try:
            forwarder = Forwarder(workdir, endpoint.url)
            try:
                yield forwarder.url
            finally:
                forwarder.stop()
        finally:
            endpoint.stop()
    elif state == "down":
        yield f"http://127.0.0.1:{free_port()}"
    else:
        slow = SlowCollector(slow_seconds)
        try:
            yield slow.url
        finally:
            slow.stop()


def measure_state(state: str, runs: int, warmup: int, slow_seconds: float, workdir: Path) -> Measurements:
    home, project, state_dir = workdir / "home", workdir / "project", workdir / "state"
    for directory in (home, project, state_dir):
        directory.mkdir(parents=True)
    result = Measurements()
    with FakeMessagesAPI(session_script()) as api, collector(state, workdir, slow_seconds) as otlp_url:
        env = base_env(
            home, api.base_url, {"CLAUDE_METRICS_OTLP_ENDPOINT": otlp_url, "CLAUDE_METRICS_DIR": str(state_dir)}
        )
        cpu = ExporterCPU(state_dir)
        plugins = {
            "without": (TEST_PLUGIN_DIR,),
            "floor": (floor_plugin(workdir), TEST_PLUGIN_DIR),
            "with": (PLUGIN_DIR, TEST_PLUGIN_DIR),
        }
        try:
            for index in range(warmup + runs):
                for variant in VARIANTS:
                    cpu.settle()
                    run = run_claude(PROMPT, env, project, plugins[variant])
                    if run.returncode != 0:
                        raise SystemExit(f"claude -p failed: {run.stderr}")
                    background = cpu.take() + cpu.settle()
                    if index < warmup:
                        continue
                    result.walls[variant].append(run.ended - run.started)
                    if variant == "with":
                        result.background_cpu.append(background)
        finally:
            stop_exporters(state_dir, 0.0)  # they stay warm for minutes: end the ones this run caused
    return result


def table(results: Dict[str, Measurements], runs: int, slow_seconds: float) -> str:
    lines = [
        "| collector | without plugin | hooks doing nothing (`true`) | with plugin | background CPU per session |",
        "|---|---|---|---|---|",
    ]
    for state, m in results.items():
        label = f"slow ({slow_seconds:g} s)" if state == "slow" else state
        cpu_ms = 1000 * statistics.mean(m.background_cpu)
        lines.append(
            f"| {label} | {m.median('without'):.3f} s | {m.median('floor'):.3f} s ({m.ratio('floor'):.3f}x) "
            f"| {m.median('with'):.3f} s (**{m.ratio('with'):.3f}x**) | {cpu_ms:.0f} ms |"
        )
    lines.append(f"\nMedians of {runs} alternating runs per variant; ratios to the median without the plugin.")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured runs per variant and state")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per variant first")
    parser.add_argument("--states", default=",".join(STATES), help="comma-separated: up,down,slow")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="the slow collector's answer delay")
    args = parser.parse_args(argv)
    states = [s for s in args.states.split(",") if s]
    unknown = set(states) - set(STATES)
    if unknown:
        parser.error(f"unknown states: {', '.join(sorted(unknown))}")
    ensure_claude_cli()
    workdir = Path(tempfile.mkdtemp(prefix="real-session-bench-"))
    try:
        results = {}
        for state in states:
            results[state] = measure_state(state, args.runs, args.warmup, args.slow_seconds, workdir / state)
            print(f"{state}: done", file=sys.stderr)
        print(table(results, args.runs, args.slow_seconds))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
