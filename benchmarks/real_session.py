"""Wall time of real `claude -p` sessions with and without the installed metrics plugin.

The plugin is installed as users install it: this repository served as a git marketplace on
loopback, `claude plugin marketplace add` and `claude plugin install` (tests/support/
git_marketplace.py), its dependencies installed beforehand into its data directory (what the first
session of a new user does in the background). Every variant runs the same session against the
loopback Messages API stand-in, with the test plugin (a command and a skill) loaded:

  without  the metrics plugin disabled (`--settings` enabledPlugins false);
  floor    disabled, and a copy of its hooks.json with every command `true` loaded instead: what
           Claude Code itself spends on running these hooks, which no implementation can beat;
  with     the installed plugin.

Sessions:
  command  `/testkit:hello Benchmark`, a skill the model calls: every hook of the plugin fires;
  plain    ten plain prompts, then a typed command, fed one at a time as stream-json (queued
           prompts would be merged): plain prompts must cost nothing.
PATH's python3 is (a) a venv's interpreter with nothing installed, or (b) a slow launcher
standing in for a pyenv/asdf shim: a shell script that sleeps 100 ms, then execs it. Collector
states: up (the embedded default: the plugin's own forwarder posts to a live reference
endpoint), down (an OTLP endpoint nobody listens on), slow (an OTLP endpoint answering after
--slow-seconds). Each round runs the three variants, in a rotating order; a ratio is the median
over the rounds of a session's time over the same round's time without the plugin (paired: the
machine's drift between rounds cancels), with a 95 % bootstrap interval; and the same of the
plugin over the floor, in the same rounds: what the plugin adds to the hooks' own cost.
Each run starts once the plugin's background processes have gone quiet (their CPU time per
session is reported apart).

    .venv/bin/python benchmarks/real_session.py [--runs 15] [--states up,down,slow] [--raw walls.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from otel_metrics import bootstrap  # noqa: E402
from support.claude_cli import (  # noqa: E402
    CLAUDE_BIN,
    CLAUDE_CODE_VERSION,
    TEST_PLUGIN_DIR,
    base_env,
    claude_command,
    ensure_claude_cli,
)
from support.fake_messages_api import FakeMessagesAPI, Script, ToolCall, text, tools  # noqa: E402
from support.git_marketplace import MARKETPLACE_NAME, PLUGIN_ID, Marketplace  # noqa: E402
from support.otlp_sink import OtlpSink  # noqa: E402
from support.plugin_hooks import plugin_pids, stop_plugin_processes  # noqa: E402
from support.processes import EndpointProcess, cpu_seconds, free_port  # noqa: E402

COMMAND = "/testkit:hello Benchmark"
PLAIN_PROMPTS = 10
STATES = ("up", "down", "slow")
PYTHONS = ("venv python3", "slow launcher (100 ms)")
SESSIONS = ("command", "plain")
VARIANTS = ("without", "floor", "with")
QUIET_SECONDS = 0.5  # the plugin's processes' CPU time must stand still this long before the next run
SETTLE_LIMIT_SECONDS = 15.0
BOOTSTRAP_RESAMPLES = 2000
DISABLED = json.dumps({"enabledPlugins": {PLUGIN_ID: False}})


def script() -> Script:
    return Script(
        {
            "Say hello to Benchmark": [
                tools(ToolCall("Skill", {"skill": "testkit:summarize"})),
                text("Hello, Benchmark."),
            ]
        }
    )


class BackgroundCPU:
    """CPU seconds used by the plugin's background processes (exporter, local forwarder) since the last look."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._seen: Dict[int, float] = {}

    def take(self) -> float:
        used = 0.0
        for pid in plugin_pids(self.data_dir):
            try:
                total = cpu_seconds(pid)
            except (OSError, IndexError):
                continue  # gone meanwhile
            used += total - self._seen.get(pid, 0.0)
            self._seen[pid] = total
        return used

    def settle(self) -> float:
        used, quiet_since, deadline = 0.0, time.monotonic(), time.monotonic() + SETTLE_LIMIT_SECONDS
        while time.monotonic() - quiet_since < QUIET_SECONDS and time.monotonic() < deadline:
            time.sleep(0.1)
            delta = self.take()
            if delta > 0.005:
                quiet_since = time.monotonic()
            used += delta
        return used


@dataclass
class Cell:
    walls: Dict[str, List[float]] = field(default_factory=lambda: {variant: [] for variant in VARIANTS})
    background_cpu: List[float] = field(default_factory=list)

    def median(self, variant: str) -> float:
        return statistics.median(self.walls[variant])

    def ratios(self, variant: str, over: str = "without") -> List[float]:
        """Each round's session over the same round's session of the other variant: paired, so the
        machine's drift between rounds cancels."""
        return [wall / other for wall, other in zip(self.walls[variant], self.walls[over])]

    def ratio(self, variant: str, over: str = "without") -> str:
        return median_with_interval(self.ratios(variant, over))


def median_with_interval(ratios: List[float]) -> str:
    """The median paired ratio, with its 95 % bootstrap interval: how far the benchmark's noise reaches."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP_RESAMPLES))
    low, high = medians[int(0.025 * BOOTSTRAP_RESAMPLES)], medians[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]
    return f"{statistics.median(ratios):.3f}x ({low:.3f}-{high:.3f})"


class Machine:
    """A user's HOME with the plugin installed from the marketplace and its dependencies set up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home, self.project = workdir / "home", workdir / "project"
        for directory in (self.home, self.project):
            directory.mkdir(parents=True)
        self.marketplace = Marketplace(workdir / "marketplace")
        self.marketplace.publish()
        env = base_env(self.home, "http://127.0.0.1:9")
        for args in (
            ("plugin", "marketplace", "add", self.marketplace.url),
            ("plugin", "install", PLUGIN_ID),
            ("plugin", "install", f"testkit@{MARKETPLACE_NAME}"),
        ):
            subprocess.run([str(CLAUDE_BIN), *args], env=env, cwd=self.project, check=True, capture_output=True)
        [self.plugin_root] = (self.home / ".claude" / "plugins" / "cache" / MARKETPLACE_NAME / "metrics").iterdir()
        self.data = self.home / ".claude" / "plugins" / "data" / f"metrics-{MARKETPLACE_NAME}"
        self.data.mkdir(parents=True, exist_ok=True)
        bootstrap.build(str(self.data), str(self.plugin_root), sys.executable)  # what a first session does
        self.floor = self._floor_plugin()
        self.pythons = {PYTHONS[0]: self._bare_python(), PYTHONS[1]: self._slow_launcher()}

    def _floor_plugin(self) -> Path:
        floor = self.workdir / "floor-plugin"
        manifest = json.loads((self.plugin_root / ".claude-plugin" / "plugin.json").read_text())
        manifest = {"name": "metrics-floor", "version": manifest["version"]}
        (floor / ".claude-plugin").mkdir(parents=True)
        (floor / ".claude-plugin" / "plugin.json").write_text(json.dumps(manifest))
        hooks = json.loads((self.plugin_root / "hooks" / "hooks.json").read_text())
        for groups in hooks["hooks"].values():
            for group in groups:
                for hook in group["hooks"]:
                    hook["command"] = "true"  # async, matcher and timeout as they are
        (floor / "hooks").mkdir()
        (floor / "hooks" / "hooks.json").write_text(json.dumps(hooks))
        return floor

    def _bare_python(self) -> Path:
        venv = self.workdir / "bare-python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        return venv / "bin"

    def _slow_launcher(self) -> Path:
        shim = self.workdir / "shim-bin"
        shim.mkdir()
        real = self._bare_python() / "python3"
        (shim / "python3").write_text(f'#!/bin/sh\nsleep 0.1\nexec "{real}" "$@"\n')
        (shim / "python3").chmod(0o755)
        return shim

    def env(self, api_url: str, python_bin: Path, extra: Dict[str, str]) -> Dict[str, str]:
        env = base_env(self.home, api_url, extra)
        env["PATH"] = os.pathsep.join([str(python_bin), "/usr/local/bin", "/usr/bin", "/bin"])
        return env

    def stop(self) -> None:
        stop_plugin_processes(self.data, 0.0)
        self.marketplace.stop()


@contextlib.contextmanager
def collector(state: str, workdir: Path, slow_seconds: float) -> Iterator[Dict[str, str]]:
    """The settings the hooks get in a collector state, with what it needs running meanwhile."""
    if state == "up":
        endpoint = EndpointProcess(workdir / "endpoint.sqlite", log_path=workdir / "endpoint.log").start()
        try:
            yield {"CLAUDE_METRICS_URL": endpoint.url}
        finally:
            endpoint.stop()
    elif state == "down":
        yield {"CLAUDE_METRICS_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    else:
        slow = OtlpSink(delay=slow_seconds)
        try:
            yield {"CLAUDE_METRICS_OTLP_ENDPOINT": slow.url}
        finally:
            slow.stop()


def run_session(session: str, variant: str, env: Dict[str, str], machine: Machine) -> float:
    """Seconds from start to exit of one session."""
    plugins: Sequence[Path] = (TEST_PLUGIN_DIR, machine.floor) if variant == "floor" else (TEST_PLUGIN_DIR,)
    settings = [] if variant == "with" else ["--settings", DISABLED]
    started = time.perf_counter()
    if session == "command":
        argv = claude_command(COMMAND, plugins) + settings
        done = subprocess.run(argv, env=env, cwd=machine.project, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"claude -p failed: {done.stderr}")
        return time.perf_counter() - started
    argv = [str(CLAUDE_BIN), "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
    for plugin in plugins:
        argv += ["--plugin-dir", str(plugin)]
    proc = subprocess.Popen(
        argv + settings, env=env, cwd=machine.project, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    for prompt in [f"plain question number {n}" for n in range(PLAIN_PROMPTS)] + [COMMAND]:
        proc.stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": prompt}}) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:  # one at a time: queued prompts would be merged into one turn
            if json.loads(line).get("type") == "result":
                break
    proc.stdin.close()
    proc.stdout.read()
    if proc.wait(60) != 0:
        raise SystemExit("claude -p (stream-json) failed")
    return time.perf_counter() - started


def measure(machine: Machine, session: str, python: str, state: str, runs: int, warmup: int, slow: float) -> Cell:
    cell = Cell()
    workdir = Path(tempfile.mkdtemp(prefix=f"{state}-", dir=machine.workdir))
    cpu = BackgroundCPU(machine.data)
    with FakeMessagesAPI(script()) as api, collector(state, workdir, slow) as settings:
        env = machine.env(api.base_url, machine.pythons[python], settings)
        for index in range(warmup + runs):
            # Each round in another order: no variant always follows the same one.
            for variant in VARIANTS[index % 3 :] + VARIANTS[: index % 3]:
                cpu.settle()
                wall = run_session(session, variant, env, machine)
                background = cpu.take() + cpu.settle()
                if index >= warmup:
                    cell.walls[variant].append(wall)
                    if variant == "with":
                        cell.background_cpu.append(background)
    stop_plugin_processes(machine.data, 0.0)  # the next cell starts with other settings
    return cell


def table(cells: Dict[tuple, Cell], runs: int, slow_seconds: float) -> str:
    lines = [
        "| session | python3 on PATH | collector | without plugin (median) | floor (`true` hooks) | with plugin "
        "| with plugin over the floor | background CPU per session |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (session, python, state), cell in cells.items():
        label = f"slow ({slow_seconds:g} s)" if state == "slow" else state
        lines.append(
            f"| {session} | {python} | {label} | {cell.median('without'):.3f} s | {cell.ratio('floor')} "
            f"| **{cell.ratio('with')}** | {cell.ratio('with', over='floor')} "
            f"| {1000 * statistics.mean(cell.background_cpu):.0f} ms |"
        )
    if len(cells) > 1:
        # Every cell runs the same hooks: pooled, the rounds of all cells narrow the interval.
        def pooled(variant: str, over: str = "without") -> str:
            return median_with_interval([ratio for cell in cells.values() for ratio in cell.ratios(variant, over)])

        lines.append(
            f"| all cells pooled | | | | {pooled('floor')} | **{pooled('with')}** | {pooled('with', over='floor')} | |"
        )
    lines.append(
        f"\n{time.strftime('%Y-%m-%d')}, Claude Code {CLAUDE_CODE_VERSION}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; {runs} rounds per cell, each running the "
        "three variants in a rotating order; a ratio is the median over the rounds of the session's time over "
        "the same round's session without the plugin (next to last column: over the floor), with its 95 % "
        "bootstrap interval."
    )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured runs per variant and cell")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per variant first")
    parser.add_argument("--states", default=",".join(STATES), help="comma-separated: up,down,slow")
    parser.add_argument("--sessions", default=",".join(SESSIONS), help="comma-separated: command,plain")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="the slow collector's answer delay")
    parser.add_argument("--raw", help="write every session's time, by cell and variant, to this JSON file")
    args = parser.parse_args(argv)
    states = [s for s in args.states.split(",") if s]
    sessions = [s for s in args.sessions.split(",") if s]
    if set(states) - set(STATES) or set(sessions) - set(SESSIONS):
        parser.error("unknown state or session")
    ensure_claude_cli()
    workdir = Path(tempfile.mkdtemp(prefix="real-session-bench-"))
    machine = Machine(workdir)
    try:
        cells = {}
        for session in sessions:
            # The ten-prompt session shows what plain prompts cost: one python, the default state, suffices.
            combos = [(p, s) for p in PYTHONS for s in states] if session == "command" else [(PYTHONS[0], "up")]
            for python, state in combos:
                cells[(session, python, state)] = measure(
                    machine, session, python, state, args.runs, args.warmup, args.slow_seconds
                )
                # Each cell's row as it is done: a long run interrupted still says what it measured.
                row = table({(session, python, state): cells[(session, python, state)]}, args.runs, args.slow_seconds)
                print(row.splitlines()[2], file=sys.stderr, flush=True)
        if args.raw:
            walls = {" / ".join(key): cell.walls for key, cell in cells.items()}
            Path(args.raw).write_text(json.dumps(walls, indent=1))
        print(table(cells, args.runs, args.slow_seconds))
    finally:
        machine.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
