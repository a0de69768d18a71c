"""The whole pipeline with real processes: plugin hook scripts -> OTLP -> forwarder -> reference endpoint.

Whole payloads are compared, the session one against `otel-metrics session-summary`
on the same transcript.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from support.legacy_payloads import expected_event, session_summary, utc
from support.paths import FIXTURE_TRANSCRIPT
from support.plugin_hooks import (
    copy_fixture_transcript,
    delivered,
    hook_env,
    prompt_input,
    run_command_skill_and_end,
    run_hook,
    session_input,
)
from support.processes import wait_for

SESSION_ID = FIXTURE_TRANSCRIPT.stem  # the sessionId inside it
DEADLINE = 60.0


@pytest.fixture
def pipeline(state: Path, endpoint_server, start_forwarder):
    return endpoint_server, start_forwarder(endpoint_server.url), state


def test_slash_command_skill_and_session_end_arrive_exactly(pipeline, tmp_path: Path) -> None:
    endpoint, forwarder, state = pipeline
    transcript = copy_fixture_transcript(tmp_path)
    env = hook_env(state, forwarder.url)
    before = int(time.time())
    prompt = "/jira:solve ABC-123 the login page"
    run_command_skill_and_end(env, SESSION_ID, prompt, transcript)
    wait_for(lambda: len(endpoint.events()) >= 2 and len(endpoint.sessions()) >= 1, DEADLINE)
    after = int(time.time())

    slash, skill = sorted(endpoint.events(), key=lambda p: p["type"] != "slash_command")
    assert slash == expected_event("slash_command", "jira:solve", len(prompt), SESSION_ID, state, slash["timestamp"])
    assert skill == expected_event("skill", "pdf:extract", 0, SESSION_ID, state, skill["timestamp"])
    for payload in (slash, skill):
        assert utc(before) <= payload["timestamp"] <= utc(after)

    [session] = endpoint.sessions()
    assert session == session_summary(transcript, state, "--reason", "logout")
    expected_counts = json.loads(FIXTURE_TRANSCRIPT.with_name(SESSION_ID + ".expected.json").read_text())
    assert {k: session[k] for k in expected_counts if k != "exit_reason"} == {
        k: v for k, v in expected_counts.items() if k != "exit_reason"
    }
    assert session["exit_reason"] == "logout"

    wait_for(lambda: delivered(state, forwarder.outbox), DEADLINE)  # nothing more to come: each item once
    assert (len(endpoint.events()), len(endpoint.sessions())) == (2, 1)


def test_session_end_without_transcript_still_reports_the_session(pipeline) -> None:
    endpoint, forwarder, state = pipeline
    env = hook_env(state, forwarder.url)
    before = int(time.time())
    run_hook(session_input("SessionEnd", "lost-transcript", Path("/nonexistent/t.jsonl")), env)
    [session] = wait_for(endpoint.sessions, DEADLINE)
    assert utc(before) <= session["start_timestamp"] == session["end_timestamp"] <= utc(int(time.time()))
    assert session["session_duration"] == 0
    assert session["turn_count"] == session["total_tool_calls"] == 0
    assert "total_input_tokens" not in session


def test_session_whose_end_never_fired_is_reported_once(pipeline, tmp_path: Path) -> None:
    """Ctrl+C, crash: the session seen at SessionStart is reported once its transcript is quiet."""
    if not FIXTURE_TRANSCRIPT.exists():
        pytest.skip(f"{FIXTURE_TRANSCRIPT} is missing")
    endpoint, forwarder, state = pipeline
    transcript = tmp_path / "quiet.jsonl"
    shutil.copy(FIXTURE_TRANSCRIPT, transcript)
    env = hook_env(state, forwarder.url, CLAUDE_METRICS_SESSION_QUIET_MINUTES="0.01")
    run_hook(session_input("SessionStart", SESSION_ID, transcript), env)
    time.sleep(1)  # the transcript's files stay untouched past the quiet time (0.01 min): what makes it quiet
    run_hook(prompt_input("/later:command", session_id="another"), env)  # a later hook
    [session] = wait_for(endpoint.sessions, DEADLINE)
    assert session["exit_reason"] == "other"
    assert session["session_id"] == SESSION_ID
    # SessionEnd arriving after all (resumed, then ended) does not report it twice.
    run_hook(session_input("SessionEnd", SESSION_ID, transcript, "logout"), env)
    run_hook(session_input("SessionStart", "third", tmp_path / "none.jsonl"), env)
    wait_for(lambda: len(endpoint.events()) == 1, DEADLINE)
    wait_for(lambda: delivered(state, forwarder.outbox), DEADLINE)  # nothing more to come
    assert len(endpoint.sessions()) == 1
