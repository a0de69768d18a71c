"""End to end through the real collector: hook scripts -> collector -> forwarder -> reference endpoint.

Every process is real; whole payloads are compared. The session payload must be the one
`otel-metrics session-summary` computes from the same transcript.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.legacy_payloads import expected_event, session_summary, utc
from support.paths import FIXTURE_TRANSCRIPT
from support.plugin_hooks import (
    copy_fixture_transcript,
    delivered,
    hook_env,
    run_command_skill_and_end,
)
from support.processes import wait_for

pytestmark = pytest.mark.collector

SESSION_ID = FIXTURE_TRANSCRIPT.stem
PROMPT = "/jira:solve ABC-123 the login page"
DEADLINE = 60.0


def test_command_skill_and_session_end_arrive_exactly_through_the_collector(
    tmp_path: Path, endpoint_server, start_forwarder, start_collector, state: Path
) -> None:
    forwarder = start_forwarder(endpoint_server.url)
    otelcol = start_collector(forwarder.otlp_url)
    transcript = copy_fixture_transcript(tmp_path)
    env = hook_env(state, otelcol.otlp_url)

    before = time.time()
    run_command_skill_and_end(env, SESSION_ID, PROMPT, transcript)
    wait_for(lambda: len(endpoint_server.events()) >= 2 and len(endpoint_server.sessions()) >= 1, DEADLINE)
    after = time.time()

    slash, skill = sorted(endpoint_server.events(), key=lambda payload: payload["type"] != "slash_command")
    assert utc(before) <= slash["timestamp"] <= skill["timestamp"] <= utc(after)
    assert slash == expected_event("slash_command", "jira:solve", len(PROMPT), SESSION_ID, state, slash["timestamp"])
    assert skill == expected_event("skill", "pdf:extract", 0, SESSION_ID, state, skill["timestamp"])
    assert endpoint_server.sessions() == [session_summary(transcript, state, "--reason", "logout")]

    wait_for(lambda: delivered(state, forwarder.outbox) and otelcol.drained(), DEADLINE)  # nothing more to come
    assert (len(endpoint_server.events()), len(endpoint_server.sessions())) == (2, 1)
    assert otelcol.telemetry("otelcol_exporter_send_failed_metric_points") == 0
