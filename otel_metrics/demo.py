"""`make demo`: the whole pipeline on loopback, printing what reached the metrics endpoint.

Starts the reference endpoint and the forwarder, runs the plugin's hook scripts
as Claude Code would (a slash command, a skill, a session end on a real
transcript), waits for the payloads, prints them, and stops what it started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugin"
# A real Claude Code 2.1 session with a subagent transcript beside it.
FIXTURES = REPO.parent / "shared" / "fixtures" / "transcripts"
FIXTURE = FIXTURES / "marot-spotter" / "4d5611e5-241a-462a-8d15-5122611a9569.jsonl"
DEADLINE_SECONDS = 60


def start_server(args: List[str], env: Dict[str, str]) -> tuple:
    """Start `otel-metrics ARGS` on an OS-chosen port; return (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_metrics.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("listening on "):
            return proc, line.split()[-1]
    raise RuntimeError(f"otel-metrics {args[0]} exited with {proc.wait()} before listening")


def run_hook(script: str, hook_input: dict, env: Dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(PLUGIN / "scripts" / script)],
        input=json.dumps(hook_input).encode(),
        env=env,
        check=True,
        timeout=30,
    )


def stored(url: str) -> list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="otel-metrics-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_METRICS_"))}
    processes = []
    try:
        endpoint, endpoint_url = start_server(["endpoint", "--listen", "127.0.0.1:0", "--db", str(work / "db")], env)
        processes.append(endpoint)
        forwarder, forwarder_url = start_server(
            ["forwarder", "--listen", "127.0.0.1:0", "--metrics-url", endpoint_url, "--outbox", str(work / "outbox")],
            env,
        )
        processes.append(forwarder)
        print(f"reference endpoint {endpoint_url}, forwarder (OTLP/HTTP) {forwarder_url}\n", file=sys.stderr)

        transcript = work / FIXTURE.name
        if FIXTURE.exists():
            shutil.copy(FIXTURE, transcript)
            shutil.copytree(FIXTURE.with_suffix(""), transcript.with_suffix(""))
        else:
            print(f"{FIXTURE} is missing: the session is reported with zero counts", file=sys.stderr)
        hook_env = dict(
            env,
            CLAUDE_PLUGIN_ROOT=str(PLUGIN),
            CLAUDE_METRICS_DIR=str(work / "state"),
            CLAUDE_METRICS_OTLP_ENDPOINT=forwarder_url,
            CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="1",
        )
        (work / "state").mkdir()
        common = {"session_id": "demo-session", "transcript_path": str(transcript), "cwd": str(work)}
        run_hook(
            "send_metrics.py",
            {**common, "hook_event_name": "UserPromptSubmit", "prompt": "/jira:solve ABC-123 fix the login bug"},
            hook_env,
        )
        run_hook(
            "send_metrics.py",
            {**common, "hook_event_name": "PreToolUse", "tool_name": "Skill", "tool_input": {"skill": "pdf:extract"}},
            hook_env,
        )
        run_hook("send_session_metrics.py", {**common, "hook_event_name": "SessionEnd", "reason": "logout"}, hook_env)

        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            events, sessions = stored(endpoint_url + "/events"), stored(endpoint_url + "/sessions")
            if len(events) >= 2 and len(sessions) >= 1:
                break
            time.sleep(0.2)
        else:
            print("timed out waiting for the payloads; see " + str(work / "state" / "metrics.log"), file=sys.stderr)
            return 1
        for path, payloads in (("/events", events), ("/sessions", sessions)):
            for payload in payloads:
                print(f"POST {path}")
                print(json.dumps(payload, indent=2, sort_keys=True))
        return 0
    finally:
        for proc in processes:
            proc.terminate()
            proc.wait(timeout=10)
        time.sleep(1.5)  # the hooks' exporter leaves after 1 s idle; then the temp dir can go
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
