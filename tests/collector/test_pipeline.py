"""End to end through the real collector: hook scripts -> collector -> forwarder -> reference endpoint.

Every process is real; whole payloads are compared. The session payload must be the one
`otel-metrics session-summary` computes from the same transcript.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
from hooks_harness import (
    FIXTURES,
    expected_event,
    hook_env,
    prompt_input,
    run_hook,
    session_input,
    skill_input,
)
from servers import wait_for

pytestmark = pytest.mark.collector

FIXTURE = FIXTURES / "marot-spotter" / "4d5611e5-241a-462a-8d15-5122611a9569.jsonl"
SESSION_ID = FIXTURE.stem
PROMPT = "/jira:solve ABC-123 the login page"
DEADLINE = 60.0


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def session_summary(transcript: Path, reason: str, state: Path) -> Dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "otel_metrics.cli", "session-summary", str(transcript), "--reason", reason],
        capture_output=True,
        text=True,
        check=True,
        env=hook_env(state, "http://127.0.0.1:9"),
    )
    return json.loads(out.stdout)


def copy_fixture(tmp_path: Path) -> Path:
    if not FIXTURE.exists():
        pytest.skip(f"{FIXTURE} is missing (shared/ fixtures beside the repo)")
    transcript = tmp_path / FIXTURE.name
    shutil.copy(FIXTURE, transcript)
    if FIXTURE.with_suffix("").is_dir():  # the session's subagent transcripts
        shutil.copytree(FIXTURE.with_suffix(""), transcript.with_suffix(""))
    return transcript


def test_command_skill_and_session_end_arrive_exactly_through_the_collector(
    tmp_path: Path, endpoint_server, forwarder_server, collector, state: Path
) -> None:
    forwarder = forwarder_server(endpoint_server.url)
    otelcol = collector(forwarder.otlp_url)
    transcript = copy_fixture(tmp_path)
    env = hook_env(state, otelcol.otlp_url)

    before = time.time()
    for result in (
        run_hook(prompt_input(PROMPT, session_id=SESSION_ID), env),
        run_hook(skill_input("pdf:extract", session_id=SESSION_ID, args="secret"), env),
        run_hook(session_input("SessionEnd", SESSION_ID, transcript, "logout"), env),
    ):
        assert (result.returncode, result.stdout) == (0, b"")
    wait_for(lambda: len(endpoint_server.events()) >= 2 and len(endpoint_server.sessions()) >= 1, DEADLINE)
    after = time.time()

    slash, skill = sorted(endpoint_server.events(), key=lambda payload: payload["type"] != "slash_command")
    assert utc(before) <= slash["timestamp"] <= skill["timestamp"] <= utc(after)
    assert slash == expected_event(
        "slash_command", "jira:solve", len(PROMPT), SESSION_ID, state, slash["timestamp"]
    )
    assert skill == expected_event("skill", "pdf:extract", 0, SESSION_ID, state, skill["timestamp"])
    assert endpoint_server.sessions() == [session_summary(transcript, "logout", state)]

    time.sleep(2)  # a batch flush later, still each item once
    assert (len(endpoint_server.events()), len(endpoint_server.sessions())) == (2, 1)
    assert otelcol.telemetry("otelcol_exporter_send_failed_metric_points") == 0
