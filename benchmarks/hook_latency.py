"""Hook latency: wall time of each hook kind, per collector state, as ratios to `python -c pass`
and to `sh -c true` (what Claude Code's own hook machinery starts for a command doing nothing).

Each hook runs as Claude Code runs it: `/bin/sh -c` with its hooks.json command. Every
measurement waits, as Claude Code does, for the hook to exit and its stdout/stderr to reach
EOF. Runs alternate between the baseline and the hook being measured, so machine noise hits
both alike; the table reports medians.

    .venv/bin/python benchmarks/hook_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from support.otlp_sink import OtlpSink  # noqa: E402
from support.paths import (  # noqa: E402
    FIXTURE_TRANSCRIPT,
    PLUGIN,
    REPO,  # noqa: E402
)
from support.plugin_hooks import hook_commands  # noqa: E402
from support.processes import wait_for  # noqa: E402

PYTHON = sys.executable
# A plain prompt fires no hook of the plugin (it listens to UserPromptExpansion): nothing to time.
HOOK_EVENTS = {
    "slash command": "UserPromptExpansion",
    "skill": "PreToolUse",
    "SessionStart": "SessionStart",
    "SessionEnd (3 MB transcript)": "SessionEnd",
}
OURS = {kind: ["/bin/sh", "-c", hook_commands()[event]] for kind, event in HOOK_EVENTS.items()}
SEED_STYLE = REPO / "benchmarks" / "seed_style_hook.py"
TRANSCRIPT = FIXTURE_TRANSCRIPT


def hook_inputs(transcript: Path) -> Dict[str, bytes]:
    common = {"session_id": "bench", "transcript_path": str(transcript), "cwd": "/tmp"}
    command = {
        "hook_event_name": "UserPromptExpansion",
        "expansion_type": "slash_command",
        "command_name": "jira:solve",
        "command_args": "ABC-123",
        "prompt": "/jira:solve ABC-123",
    }
    return {
        "slash command": {**common, **command},
        "skill": {**common, "hook_event_name": "PreToolUse", "tool_name": "Skill", "tool_input": {"skill": "pdf:x"}},
        "SessionStart": {**common, "hook_event_name": "SessionStart", "source": "startup"},
        "SessionEnd (3 MB transcript)": {**common, "hook_event_name": "SessionEnd", "reason": "other"},
    }  # type: ignore[return-value]


def timed(argv: List[str], data: bytes, env: Dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, input=data, capture_output=True, env=env, check=False)
    return time.perf_counter() - start


def measure(argv: List[str], data: bytes, env: Dict[str, str], runs: int) -> tuple:
    """Median wall times of argv, `python -c pass` and `sh -c true`, alternating."""
    ours, bare, shell = [], [], []
    for _ in range(runs):
        bare.append(timed([PYTHON, "-c", "pass"], b"", env))
        shell.append(timed(["/bin/sh", "-c", "true"], b"", env))
        ours.append(timed(argv, data, env))
    return statistics.median(ours), statistics.median(bare), statistics.median(shell)


def delivery_seconds(sink: OtlpSink, work: Path, inputs: Dict[str, bytes], burst: int) -> float:
    """From a burst of hooks (a cold exporter: SDK import included) to the last arrival."""
    from concurrent.futures import ThreadPoolExecutor

    state_dir = Path(tempfile.mkdtemp(prefix="state-delivery-", dir=work))
    env = plugin_env(state_dir, sink.url)
    events_before, spans_before = sink.event_count(), len(sink.spans())
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=burst) as pool:
        jobs = [pool.submit(timed, OURS["slash command"], inputs["slash command"], env)]
        jobs += [pool.submit(timed, OURS["skill"], inputs["skill"], env) for _ in range(burst - 2)]
        kind = "SessionEnd (3 MB transcript)"
        jobs.append(pool.submit(timed, OURS[kind], inputs[kind], env))
        for job in jobs:
            job.result()
    try:
        wait_for(
            lambda: sink.event_count() >= events_before + burst - 1 and len(sink.spans()) >= spans_before + 1, 60, 0.01
        )
    except AssertionError:
        return float("inf")
    return time.perf_counter() - start


def plugin_env(state_dir: Path, otlp_url: str) -> Dict[str, str]:
    """A hook's environment: the exporter runs on this interpreter, which has the dependencies."""
    return dict(
        os.environ,
        CLAUDE_PLUGIN_ROOT=str(PLUGIN),
        CLAUDE_METRICS_DIR=str(state_dir),
        CLAUDE_METRICS_OTLP_ENDPOINT=otlp_url,
        CLAUDE_METRICS_PYTHON=PYTHON,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--seed-runs", type=int, default=5, help="runs of the slow in-process baseline")
    args = parser.parse_args()
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "otel_metrics"), str(REPO / "plugin")], check=True)
    work = Path(tempfile.mkdtemp(prefix="hook-bench-"))
    transcript = work / "session.jsonl"
    shutil.copy(TRANSCRIPT, transcript)
    inputs = {k: json.dumps(v).encode() for k, v in hook_inputs(transcript).items()}
    up = OtlpSink()
    slow = OtlpSink(delay=3.0)
    down_port = OtlpSink()
    down_port.stop()
    states = {"up": up.url, "down": down_port.url, "slow (3 s)": slow.url}
    rows = []
    for state_name, url in states.items():
        for kind, data in inputs.items():
            state_dir = work / f"state-{len(rows)}"
            state_dir.mkdir()
            env = plugin_env(state_dir, url)
            ours, bare, shell = measure(OURS[kind], data, env, args.runs)
            seed, seed_bare, _ = measure([PYTHON, str(SEED_STYLE)], data, env, args.seed_runs)
            rows.append((kind, state_name, shell, bare, ours, seed, seed / seed_bare))
            print(
                f"{kind:30s} {state_name:11s} ours {ours / bare:5.2f}x  in-process {seed / seed_bare:6.2f}x",
                file=sys.stderr,
            )
    delivered = [delivery_seconds(up, work, inputs, burst=20) for _ in range(3)]
    for sink in (up, slow):
        sink.stop()
    print(
        f"\nHook latency, {time.strftime('%Y-%m-%d')}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores; medians of {args.runs} runs "
        f"({args.seed_runs} for the in-process baseline)\n"
    )
    print(
        "| hook | collector | `sh -c true` | `python -c pass` | our hook | ratio to python | ratio to sh "
        "| in-process export (the legacy plugin's way) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, state_name, shell, bare, ours, seed, seed_ratio in rows:
        print(
            f"| {kind} | {state_name} | {shell * 1000:.1f} ms | {bare * 1000:.1f} ms | {ours * 1000:.1f} ms "
            f"| **{ours / bare:.2f}x** | {ours / shell:.1f}x | {seed * 1000:.0f} ms | {seed_ratio:.1f}x |"
        )
    print(
        f"\nDelivery with the collector up: a burst of 20 concurrent hooks (19 events and a SessionEnd on the "
        f"3 MB transcript) into a fresh state directory, so the exporter starts cold: all arrived after "
        f"{', '.join(f'{d:.2f}' for d in delivered)} s (3 bursts; the promise is 5 s)."
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
