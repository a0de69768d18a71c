"""`make demo`: the embedded default on loopback, printing what reached the metrics endpoint.

Starts the reference endpoint only. The plugin's hooks then run as Claude Code
runs them (`/bin/sh -c` with the commands of hooks.json): a slash command, a
skill, a session end on a real transcript. Their background exporter starts the
plugin's own forwarder, which posts the legacy payloads to the endpoint. The demo
prints them and stops what it started.
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
sys.path.insert(0, str(REPO))

from otel_metrics.exporter import local_forwarder  # noqa: E402

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


def run_hook(hook_input: dict, env: Dict[str, str]) -> None:
    """As Claude Code runs a hook: its hooks.json command under /bin/sh, the JSON on stdin."""
    hooks = json.loads((PLUGIN / "hooks" / "hooks.json").read_text())["hooks"]
    command = hooks[hook_input["hook_event_name"]][0]["hooks"][0]["command"]
    subprocess.run(["/bin/sh", "-c", command], input=json.dumps(hook_input).encode(), env=env, check=True, timeout=30)


def stored(url: str) -> list:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="otel-metrics-demo-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_METRICS_"))}
    state = work / "state"
    endpoint = None
    try:
        endpoint, endpoint_url = start_server(["endpoint", "--listen", "127.0.0.1:0", "--db", str(work / "db")], env)
        print(f"reference endpoint {endpoint_url}; no collector, no forwarder started by hand\n", file=sys.stderr)

        transcript = work / FIXTURE.name
        if FIXTURE.exists():
            shutil.copy(FIXTURE, transcript)
            shutil.copytree(FIXTURE.with_suffix(""), transcript.with_suffix(""))
        else:
            print(f"{FIXTURE} is missing: the session is reported with zero counts", file=sys.stderr)
        hook_env = dict(
            env,
            CLAUDE_PLUGIN_ROOT=str(PLUGIN),
            CLAUDE_METRICS_DIR=str(state),
            CLAUDE_METRICS_URL=endpoint_url,  # no OTLP endpoint: the embedded default
            CLAUDE_METRICS_PYTHON=sys.executable,  # has the pinned dependencies: no venv to set up
            CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="1",
            CLAUDE_METRICS_FORWARDER_IDLE_SECONDS="1",
        )
        state.mkdir()
        common = {"session_id": "demo-session", "transcript_path": str(transcript), "cwd": str(work)}
        run_hook({**common, "hook_event_name": "SessionStart", "source": "startup"}, hook_env)
        prompt = "/jira:solve ABC-123 fix the login bug"
        expansion = {"expansion_type": "slash_command", "command_name": "jira:solve", "command_args": prompt[12:]}
        run_hook({**common, "hook_event_name": "UserPromptExpansion", "prompt": prompt, **expansion}, hook_env)
        run_hook(
            {**common, "hook_event_name": "PreToolUse", "tool_name": "Skill", "tool_input": {"skill": "pdf:extract"}},
            hook_env,
        )
        run_hook({**common, "hook_event_name": "SessionEnd", "reason": "logout"}, hook_env)

        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            events, sessions = stored(endpoint_url + "/events"), stored(endpoint_url + "/sessions")
            if len(events) >= 2 and len(sessions) >= 1:
                break
            time.sleep(0.2)
        else:
            print(f"timed out waiting for the payloads; see {state / 'metrics.log'}", file=sys.stderr)
            return 1
        for path, payloads in (("/events", events), ("/sessions", sessions)):
            for payload in payloads:
                print(f"POST {path}")
                print(json.dumps(payload, indent=2, sort_keys=True))
        return 0
    finally:
        if endpoint is not None:
            endpoint.terminate()
            endpoint.wait(timeout=10)
        # The exporter and the local forwarder leave after 1 s idle; then the temp dir can go.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and local_forwarder.running(str(state)) is not None:
            time.sleep(0.1)
        time.sleep(1.5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
