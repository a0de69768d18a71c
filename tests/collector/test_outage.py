"""Outages behind the collector: nothing the hooks handed it is lost, nothing arrives twice.

The collector's sending queue is on disk (file_storage), so events wait out a forwarder
outage, and a collector restart during that outage too. The forwarder, for its part,
answers as the collector's exporter expects: 2xx with an OTLP response when it accepts,
503 with Retry-After when it cannot (the collector retries only 429/502/503/504).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Tuple

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from otel_metrics import __version__
from otel_metrics.model import Event
from otel_metrics.payloads import event_payload
from support.collector_process import CollectorProcess
from support.legacy_payloads import expected_event
from support.otlp_requests import post_metrics
from support.plugin_hooks import delivered, hook_env, prompt_input, run_hook, session_input
from support.processes import EndpointProcess, ForwarderProcess, free_port, wait_for

pytestmark = pytest.mark.collector

DEADLINE = 60.0
COMMANDS = ["/deploy:staging now", "/review:pr 42", "/docs:build"]


def send_commands(state: Path, otelcol: CollectorProcess, session_id: str) -> None:
    """The hooks of COMMANDS, sent to the collector; returns once it has them all in its queue."""
    env = hook_env(state, otelcol.otlp_url)
    for prompt in COMMANDS:
        result = run_hook(prompt_input(prompt, session_id=session_id), env)
        assert (result.returncode, result.stdout) == (0, b"")
    wait_until_queued(otelcol, len(COMMANDS))


def nothing_more_to_come(state: Path, otelcol: CollectorProcess, forwarder: ForwarderProcess) -> None:
    """Wait until the hooks' spool, the collector's queues and the forwarder's outbox are empty."""
    wait_for(lambda: delivered(state, forwarder.outbox) and otelcol.drained(), DEADLINE, 0.1)


def assert_commands_arrived_once(
    endpoint: EndpointProcess, state: Path, session_id: str, otelcol: CollectorProcess, forwarder: ForwarderProcess
) -> None:
    wait_for(lambda: len(endpoint.events()) >= len(COMMANDS), DEADLINE)
    nothing_more_to_come(state, otelcol, forwarder)
    events = endpoint.events()
    names = sorted(event["name"] for event in events)
    assert names == sorted(prompt.split()[0][1:] for prompt in COMMANDS)
    by_name = {prompt.split()[0][1:]: len(prompt) for prompt in COMMANDS}
    for event in events:
        name = event["name"]
        assert event == expected_event("slash_command", name, by_name[name], session_id, state, event["timestamp"])


@pytest.fixture
def forwarder_down(endpoint_server, start_forwarder, start_collector) -> Tuple[ForwarderProcess, CollectorProcess]:
    """A collector in front of a forwarder that is down: stopped, restart() brings it back on its port."""
    forwarder = start_forwarder(endpoint_server.url)
    otelcol = start_collector(forwarder.otlp_url)
    forwarder.stop()
    return forwarder, otelcol


def wait_until_queued(otelcol: CollectorProcess, count: int) -> None:
    """The receiver has accepted `count` items: each is in the persistent queue by then."""
    wait_for(lambda: otelcol.accepted() >= count, DEADLINE, 0.1)


def test_events_sent_while_the_forwarder_is_down_arrive_when_it_is_back(
    endpoint_server, forwarder_down, state: Path
) -> None:
    forwarder, otelcol = forwarder_down

    send_commands(state, otelcol, "outage")
    wait_for(lambda: "Exporting failed. Will retry" in otelcol.log(), DEADLINE, 0.1)  # it tried: refused
    assert endpoint_server.events() == []

    forwarder.restart()  # same port
    assert_commands_arrived_once(endpoint_server, state, "outage", otelcol, forwarder)
    assert otelcol.telemetry("otelcol_exporter_send_failed_metric_points") == 0


def test_events_survive_a_collector_restart_during_the_outage(endpoint_server, forwarder_down, state: Path) -> None:
    forwarder, otelcol = forwarder_down

    send_commands(state, otelcol, "restart")
    otelcol.restart()  # SIGTERM, then a new process on the same queue directory and ports
    assert otelcol.accepted() == 0  # a fresh process: only the queue on disk remembers
    assert endpoint_server.events() == []

    forwarder.restart()
    assert_commands_arrived_once(endpoint_server, state, "restart", otelcol, forwarder)


def test_a_session_survives_a_collector_crash(endpoint_server, forwarder_down, state: Path, tmp_path: Path) -> None:
    """SIGKILL, no shutdown at all: the span is still on disk."""
    forwarder, otelcol = forwarder_down

    env = hook_env(state, otelcol.otlp_url)
    run_hook(session_input("SessionEnd", "crashed", tmp_path / "no-transcript.jsonl"), env)
    wait_until_queued(otelcol, 1)
    otelcol.stop(9)
    otelcol.start()

    forwarder.restart()
    [session] = wait_for(endpoint_server.sessions, DEADLINE)
    assert (session["session_id"], session["exit_reason"], session["turn_count"]) == ("crashed", "other", 0)
    nothing_more_to_come(state, otelcol, forwarder)
    assert len(endpoint_server.sessions()) == 1


def test_a_full_forwarder_answers_503_and_the_collector_retries_until_it_can(
    start_forwarder, start_collector, state: Path, tmp_path: Path
) -> None:
    """Endpoint down, forwarder outbox full: 503 + Retry-After; the collector drops nothing."""
    endpoint_port = free_port()
    endpoint = EndpointProcess(tmp_path / "endpoint.sqlite", port=endpoint_port)
    capacity = len(COMMANDS)  # so the collector's batch of COMMANDS fits once the outbox drains
    # One delivery worker: the endpoint then gets the direct events in their order, which this test compares.
    forwarder = start_forwarder(
        f"http://127.0.0.1:{endpoint_port}", args=["--max-outbox-items", str(capacity), "--workers", "1"]
    )
    otelcol = start_collector(forwarder.otlp_url)

    # The forwarder as the collector's exporter sees it: accepted, then full.
    direct = [direct_event(f"contract-{i}") for i in range(capacity)]
    accepted = post_metrics(forwarder.otlp_url, *direct)
    assert accepted.status_code == 200
    assert accepted.headers["Content-Type"] == "application/x-protobuf"
    assert ExportMetricsServiceResponse.FromString(accepted.content) == ExportMetricsServiceResponse()
    refused = post_metrics(forwarder.otlp_url, direct_event("refused"))
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0

    send_commands(state, otelcol, "full")
    wait_for(lambda: "503" in otelcol.log(), DEADLINE, 0.2)  # refused, so the exporter retries
    try:
        endpoint.start()
        wait_for(lambda: len(endpoint.events()) >= len(direct) + len(COMMANDS), DEADLINE)
        nothing_more_to_come(state, otelcol, forwarder)
        events = endpoint.events()
        assert [event for event in events if event["session_id"].startswith("contract")] == [
            event_payload(event) for event in direct
        ]
        collected = [event for event in events if event["session_id"] == "full"]
        assert sorted(event["name"] for event in collected) == sorted(p.split()[0][1:] for p in COMMANDS)
        assert len(events) == len(direct) + len(COMMANDS)
    finally:
        endpoint.stop()
    assert otelcol.telemetry("otelcol_exporter_send_failed_metric_points") == 0


def direct_event(session_id: str) -> Event:
    return Event(
        kind="slash_command",
        name="contract:check",
        prompt_length=15,
        session_id=session_id,
        timestamp=int(time.time()),
        user_id=None,
        version=__version__,
        os="linux",
    )
