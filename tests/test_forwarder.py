"""The forwarder and the reference endpoint as processes on loopback: OTLP in, whole legacy payloads out.

Between them, where a test needs the endpoint to fail, be slow or hang, stands a
gate (support.legacy_sink.LegacySink): a real HTTP server that answers as scripted or
passes requests on to the endpoint.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_metrics import schema
from otel_metrics.emit import OtlpSender
from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.payloads import event_payload, session_payload
from support import otlp_requests as otlp
from support.legacy_sink import LegacySink, Reply
from support.otlp_requests import otlp_metrics, post_metrics
from support.otlp_sink import OtlpSink
from support.processes import EndpointProcess, ForwarderProcess, cpu_seconds, free_port, peak_rss_mb, run_cli, wait_for
from support.prometheus_text import prometheus_sum
from support.raw_http import Tricklers, answers_on, connect_all_while_stopped, loopback_session, raw_post

USER = "550e8400-e29b-41d4-a716-446655440000"
COMMAND = Event("slash_command", "jira:solve", 17, "sess-1", 1761827696, USER, "1.0", "linux")
SKILL = Event("skill", "prow-job:analyze", 0, "sess-1", 1761827696, USER, "1.0", "linux")
POISON = Event("skill", "poison", 0, "sess-1", 1761827697, USER, "1.0", "linux")
SESSION = Session(
    "sess-1", USER, "prompt_input_exit", 1761827000_250000000, 1761827699_000000000, "1.0", "linux",
    SessionAggregates(turn_count=1, user_message_count=1, assistant_message_count=2, total_tool_calls=3,
                      bash_call_count=2, grep_call_count=1, total_input_tokens=40, cache_read_tokens=900),
)  # fmt: skip
PROTOBUF = {"Content-Type": "application/x-protobuf"}
# The tests that matter most where the server's loop differs run on both kinds; the rest on the
# default (uvloop in the test venv, asyncio's in the plugin's: the acceptance tests cover that one).
EVENT_LOOPS = pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])


def send(url: str, events: List[Event] = (), sessions: List[Session] = ()) -> None:
    """Through the OTel SDK's own OTLP/HTTP exporters, as the hooks' exporter sends."""
    sender = OtlpSender(url)
    try:
        assert sender.send_events(list(events)).accepted
        assert sender.send_sessions(list(sessions)).accepted
    finally:
        sender.close()


def by_text(payloads: List[Dict[str, Any]]) -> List[str]:
    return sorted(json.dumps(p, sort_keys=True) for p in payloads)


@pytest.fixture
def gate(endpoint_server: EndpointProcess) -> Iterator[LegacySink]:
    """A LegacySink in front of the reference endpoint: what it lets through is validated and stored."""
    gate = LegacySink(endpoint_server.url)
    yield gate
    gate.close()


@EVENT_LOOPS
def test_otlp_in_whole_legacy_payloads_out(endpoint_server: EndpointProcess, start_forwarder, event_loop: str) -> None:
    forwarder = start_forwarder(endpoint_server.url, args=["--event-loop", event_loop])
    send(forwarder.otlp_url, events=[COMMAND, SKILL, COMMAND], sessions=[SESSION])
    wait_for(lambda: len(endpoint_server.events()) == 3 and len(endpoint_server.sessions()) == 1)
    expected_events = [event_payload(COMMAND), event_payload(COMMAND), event_payload(SKILL)]
    assert by_text(endpoint_server.events()) == by_text(expected_events)  # the same event twice stays two
    assert endpoint_server.sessions() == [session_payload(SESSION)]
    assert forwarder.stop() == 0  # SIGTERM: a clean exit
    assert f"event loop {event_loop}" in forwarder.log()


def test_endpoint_errors_are_retried_until_it_recovers(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    failures = iter(range(3))
    gate.answer = lambda target, payload: 500 if next(failures, None) is not None else None
    forwarder = start_forwarder(gate.url)
    send(forwarder.otlp_url, events=[COMMAND], sessions=[SESSION])
    wait_for(lambda: len(endpoint_server.events()) == 1 and len(endpoint_server.sessions()) == 1)
    assert endpoint_server.events() == [event_payload(COMMAND)]
    assert endpoint_server.sessions() == [session_payload(SESSION)]
    assert gate.statuses() == [500, 500, 500, 200, 200]  # each retried until accepted, none twice
    assert "answered HTTP 500" in forwarder.log()


def dead_letters(forwarder: ForwarderProcess, *args: str) -> subprocess.CompletedProcess:
    return run_cli("forwarder", "dead-letters", "--outbox", str(forwarder.outbox), *args)


def test_a_payload_the_endpoint_refuses_is_dead_lettered_then_replayed(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    gate.answer = lambda target, payload: 400 if payload["name"] == "poison" else None
    forwarder = start_forwarder(gate.url)
    assert post_metrics(forwarder.url, POISON).status_code == 200
    wait_for(gate.statuses)
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]
    assert gate.statuses() == [400, 200]  # never retried: it would never be accepted
    wait_for(lambda: "refused it for good (HTTP 400" in forwarder.log())

    # More refusals of the same kind are counted, not logged again.
    poisons = [Event("skill", "poison", 0, f"sess-{n}", 1761827697, USER, "1.0", "linux") for n in range(3)]
    assert post_metrics(forwarder.url, *poisons).status_code == 200
    wait_for(lambda: gate.statuses().count(400) == 4)
    listed = wait_for(lambda: (lambda r: r if "4 dead letters" in r.stdout else None)(dead_letters(forwarder)))
    assert listed.returncode == 0
    assert forwarder.log().count("refused it for good") == 1
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["ID", "FAILED", "AT", "(UTC)", "STATUS", "PATH", "RESPONSE"]
    assert [row.split()[3:5] for row in rows[1:5]] == [["400", "events"]] * 4
    assert '{"error": "the sink says 400"}' in rows[1]
    as_json = [json.loads(line) for line in dead_letters(forwarder, "--json").stdout.splitlines()]
    expected = [event_payload(POISON), *(event_payload(p) for p in poisons)]
    assert by_text([letter["payload"] for letter in as_json]) == by_text(expected)
    assert {(letter["status"], letter["path"], letter["response"]) for letter in as_json} == {
        (400, "events", '{"error": "the sink says 400"}')
    }

    # The endpoint is fixed: --replay delivers them, and the list is empty.
    gate.answer = lambda target, payload: None
    replayed = dead_letters(forwarder, "--replay", "--metrics-url", gate.url)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.splitlines()[-1] == (
        f"replayed to {gate.url}: 4 delivered, 0 refused again; 0 dead letters left"
    )
    assert by_text(endpoint_server.events()) == by_text([event_payload(SKILL), *expected])
    assert dead_letters(forwarder).stdout == f"0 dead letters in {forwarder.outbox}\n"


def test_a_replay_keeps_what_is_refused_again_and_stops_at_a_failing_endpoint(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    gate.answer = lambda target, payload: 422
    forwarder = start_forwarder(gate.url)
    assert post_metrics(forwarder.url, COMMAND, SKILL).status_code == 200
    wait_for(lambda: "2 dead letters" in dead_letters(forwarder).stdout)
    forwarder.stop()  # a replay needs no running forwarder
    gate.answer = lambda target, payload: 400 if payload["name"] == COMMAND.name else None
    replayed = dead_letters(forwarder, "--replay", "--metrics-url", gate.url)
    assert replayed.returncode == 1
    assert (
        replayed.stdout.splitlines()[-1] == f"replayed to {gate.url}: 1 delivered, 1 refused again; 1 dead letter left"
    )
    assert endpoint_server.events() == [event_payload(SKILL)]
    [letter] = [json.loads(line) for line in dead_letters(forwarder, "--json").stdout.splitlines()]
    assert (letter["status"], letter["payload"]) == (400, event_payload(COMMAND))
    gate.answer = lambda target, payload: 503
    replayed = dead_letters(forwarder, "--replay", "--metrics-url", gate.url)
    assert replayed.returncode == 1
    assert replayed.stdout.splitlines() == [
        f"stopped: {gate.url} is failing (HTTP 503); try again later",
        f"replayed to {gate.url}: 0 delivered, 0 refused again; 1 dead letter left",
    ]


def test_dead_letters_of_an_outbox_that_does_not_exist(tmp_path: Path) -> None:
    listed = run_cli("forwarder", "dead-letters", "--outbox", str(tmp_path / "none.sqlite"))
    assert (listed.returncode, listed.stdout) == (0, f"0 dead letters: no outbox at {tmp_path / 'none.sqlite'}\n")
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_the_outbox_survives_a_restart(gate: LegacySink, endpoint_server, start_forwarder, stop_signal: int) -> None:
    gate.answer = lambda target, payload: 503  # the endpoint is down
    forwarder = start_forwarder(gate.url)
    assert post_metrics(forwarder.url, COMMAND, SKILL).status_code == 200
    wait_for(lambda: len(gate.seen) >= 2)  # retried: still in the outbox
    exit_status = forwarder.stop(stop_signal)
    assert exit_status == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    gate.answer = lambda target, payload: None  # the endpoint is back
    forwarder.restart()
    wait_for(lambda: len(endpoint_server.events()) == 2)
    assert by_text(endpoint_server.events()) == by_text([event_payload(COMMAND), event_payload(SKILL)])


def test_503_with_retry_after_while_the_outbox_is_full(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    gate.answer = lambda target, payload: 503
    forwarder = start_forwarder(gate.url, args=["--max-outbox-items", "2"])
    assert post_metrics(forwarder.url, COMMAND, SKILL).status_code == 200
    refused = post_metrics(forwarder.url, POISON)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert Status.FromString(refused.content) == Status(code=14, message="the outbox is full (2 payloads waiting)")
    gate.answer = lambda target, payload: None
    wait_for(lambda: len(endpoint_server.events()) == 2)
    assert post_metrics(forwarder.url, POISON).status_code == 200  # room again: the sender's retry lands
    wait_for(lambda: len(endpoint_server.events()) == 3)
    expected = [event_payload(COMMAND), event_payload(SKILL), event_payload(POISON)]
    assert by_text(endpoint_server.events()) == by_text(expected)


def test_413_above_the_size_limit(endpoint_server: EndpointProcess, start_forwarder) -> None:
    forwarder = start_forwarder(endpoint_server.url, args=["--max-body-bytes", "2000"])
    many = [Event("skill", f"skill-{i}", 0, "sess-1", 1761827696, USER, "1.0", "linux") for i in range(20)]
    body = otlp_metrics(*many)  # about 5 kB
    with loopback_session() as http:
        response = http.post(f"{forwarder.url}/v1/metrics", data=body, headers=PROTOBUF, timeout=10)
    assert response.status_code == 413
    assert Status.FromString(response.content).message == f"body of {len(body)} bytes is over the limit of 2000"
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_one_connection_to_the_endpoint_carries_every_payload(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    forwarder = start_forwarder(gate.url, args=["--workers", "1"])  # keep-alive: one POST at a time, one connection
    for index in range(5):
        assert post_metrics(forwarder.url, Event("skill", f"s{index}", 0, "x", 1761827696, None, "1.0", "linux")).ok
    wait_for(lambda: len(endpoint_server.events()) == 5)
    assert gate.connections == 1


def test_a_burst_opens_no_more_connections_than_workers(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    forwarder = start_forwarder(gate.url, args=["--workers", "3"])
    events = [Event("skill", f"s{index}", 0, "x", 1761827696, None, "1.0", "linux") for index in range(60)]
    assert post_metrics(forwarder.url, *events).ok
    wait_for(lambda: len(endpoint_server.events()) == 60)
    assert by_text(endpoint_server.events()) == by_text([event_payload(event) for event in events])
    assert 1 <= gate.connections <= 3


def proxy_env(proxy: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(HTTP_PROXY=proxy, http_proxy=proxy, HTTPS_PROXY=proxy, https_proxy=proxy)
    return env


def test_a_loopback_endpoint_is_reached_without_the_proxy(endpoint_server: EndpointProcess, start_forwarder) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    forwarder = start_forwarder(endpoint_server.url, env=proxy_env(dead_proxy))
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_a_remote_endpoint_is_reached_through_the_proxy(start_forwarder) -> None:
    proxy = LegacySink()
    try:
        proxy.answer = lambda target, payload: 200  # a forward proxy: it sees the absolute URL
        forwarder = start_forwarder("http://metrics.example.invalid/upload", env=proxy_env(proxy.url))
        assert post_metrics(forwarder.url, SKILL).status_code == 200
        wait_for(lambda: proxy.seen)
        assert proxy.seen == [("http://metrics.example.invalid/upload/events", event_payload(SKILL), 200)]
    finally:
        proxy.close()


# Delivery against an endpoint that fails, is slow, or hangs.


def skills(count: int, prefix: str = "s") -> List[Event]:
    return [
        Event("skill", f"{prefix}-{n}", 0, f"{prefix}-sess-{n}", 1761827696, USER, "1.0", "linux") for n in range(count)
    ]


def test_503_then_200_delivers_everything_once(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    down = [True]
    gate.answer = lambda target, payload: Reply(503, retry_after="1") if down[0] else None
    forwarder = start_forwarder(gate.url)
    events = skills(40)
    for start in range(0, 40, 10):
        assert post_metrics(forwarder.url, *events[start : start + 10]).status_code == 200
    wait_for(lambda: "next probe in" in forwarder.log())  # the circuit is open: only probes now
    down[0] = False
    wait_for(lambda: len(endpoint_server.events()) == 40)
    assert by_text(endpoint_server.events()) == by_text([event_payload(event) for event in events])  # each once
    assert "answers again after" in forwarder.log()


def test_an_endpoint_that_is_down_is_probed_not_hammered(gate: LegacySink, start_forwarder) -> None:
    gate.answer = lambda target, payload: 503
    forwarder = start_forwarder(gate.url, args=["--retry-initial", "0.2", "--retry-max", "0.4"])
    assert post_metrics(forwarder.url, *skills(200)).status_code == 200
    wait_for(lambda: forwarder.log().count("is still failing") >= 3)  # three probes after it opened
    # Ten workers, five failures open the circuit, then one probe at a time: not 200 payloads times retries.
    probes = forwarder.log().count("is still failing") + 1  # and one may be out now
    assert len(gate.seen) <= 10 + 5 + probes
    assert "failing (5 attempts in a row)" in forwarder.log()


def test_retry_after_is_honoured(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    answers = iter([Reply(429, retry_after="2")])
    times: List[float] = []

    def answer(target: str, payload: Dict[str, Any]) -> Any:
        times.append(time.monotonic())
        return next(answers, None)

    gate.answer = answer
    forwarder = start_forwarder(gate.url)
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: len(gate.seen) == 2)
    assert gate.statuses() == [429, 200]
    assert times[1] - times[0] >= 1.9  # not the 50 ms backoff: the endpoint asked for 2 s


def test_a_slow_endpoint_times_out_then_delivers(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    slow = iter([Reply(500, delay=3.0)] * 2)  # a timeout, twice; its late 500 stores nothing
    gate.answer = lambda target, payload: next(slow, None)
    forwarder = start_forwarder(gate.url, args=["--timeout", "0.5"])
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]
    assert "timed out" in forwarder.log()


@EVENT_LOOPS
def test_one_request_hanging_forever_does_not_hold_up_the_others(
    gate: LegacySink, endpoint_server, start_forwarder, event_loop: str
) -> None:
    stuck = Event("skill", "stuck", 0, "stuck-sess", 1761827696, USER, "1.0", "linux")
    first = [True]

    def answer(target: str, payload: Dict[str, Any]) -> Any:
        if payload["name"] == "stuck" and first[0]:
            first[0] = False
            return Reply(hang=True)
        return None

    gate.answer = answer
    forwarder = start_forwarder(gate.url, args=["--timeout", "5", "--event-loop", event_loop])
    assert post_metrics(forwarder.url, stuck).status_code == 200
    wait_for(lambda: None in gate.statuses())  # it hangs
    others = skills(30)
    assert post_metrics(forwarder.url, *others).status_code == 200
    wait_for(lambda: len(endpoint_server.events()) == 30)
    assert event_payload(stuck) not in endpoint_server.events()  # still hanging while the others went through
    wait_for(lambda: len(endpoint_server.events()) == 31)  # its POST timed out; the retry delivers it
    assert by_text(endpoint_server.events()) == by_text([event_payload(e) for e in [stuck, *others]])


# Crashes and shutdowns.


def test_sigkill_mid_stream_loses_nothing_acknowledged(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    gate.delay = 0.02  # deliveries are under way when it dies
    forwarder = start_forwarder(gate.url, args=["--workers", "4"])
    acknowledged: List[Event] = []
    batches = [skills(10, prefix=f"b{n}") for n in range(12)]
    for batch in batches[:6]:
        assert post_metrics(forwarder.url, *batch).status_code == 200
        acknowledged += batch
    wait_for(lambda: len(endpoint_server.events()) >= 5)
    assert forwarder.stop(signal.SIGKILL) == -signal.SIGKILL
    delivered_before = len(endpoint_server.events())
    assert delivered_before < len(acknowledged)  # killed mid-stream
    gate.delay = 0.0
    forwarder.restart()
    for batch in batches[6:]:
        assert post_metrics(forwarder.url, *batch).status_code == 200
        acknowledged += batch
    expected = {json.dumps(event_payload(event), sort_keys=True) for event in acknowledged}
    wait_for(lambda: expected <= set(by_text(endpoint_server.events())))
    # At least once: a POST answered while the process died may be sent again, nothing more.
    assert len(endpoint_server.events()) - len(acknowledged) <= 4


def post_until_refused(url: str) -> requests.Response:
    """POST an event until the forwarder answers 503 (it may take some before a signal lands)."""
    refused = wait_for(lambda: [r for r in [post_metrics(url, COMMAND)] if r.status_code == 503])
    return refused[0]  # (a 503 Response is falsy: wait_for gets it in a list)


@EVENT_LOOPS
def test_sigterm_lets_posts_in_flight_finish_and_keeps_the_rest(
    gate: LegacySink, endpoint_server, start_forwarder, event_loop: str
) -> None:
    gate.delay = 3.0
    forwarder = start_forwarder(gate.url, args=["--workers", "2", "--event-loop", event_loop])
    events = skills(6)
    assert post_metrics(forwarder.url, *events).status_code == 200
    wait_for(lambda: len(gate.seen) == 0 and gate.connections == 2)  # two POSTs in flight, none answered
    forwarder.proc.send_signal(signal.SIGTERM)
    refused = post_until_refused(forwarder.url)
    assert refused.headers["Retry-After"] == "5"
    assert Status.FromString(refused.content).message == "the forwarder is shutting down"
    assert forwarder.exit_status() == 0
    assert len(endpoint_server.events()) == 2  # the two in flight were answered, nothing else was sent
    gate.delay = 0.0
    forwarder.restart()
    wait_for(lambda: len(endpoint_server.events()) >= 6)
    accepted_before_sigterm = [e for e in endpoint_server.events() if e["name"] == COMMAND.name]
    assert by_text(endpoint_server.events()) == by_text([event_payload(e) for e in events] + accepted_before_sigterm)


def test_sigterm_does_not_wait_past_its_deadline_for_a_hanging_post(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    hang = [True]
    gate.answer = lambda target, payload: Reply(hang=True) if hang[0] else None
    forwarder = start_forwarder(gate.url, args=["--shutdown-timeout", "0.5"])
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: None in gate.statuses())
    assert forwarder.stop() == 0
    assert "1 POSTs still unanswered after 0.5 s" in forwarder.log()
    hang[0] = False
    forwarder.restart()
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


@EVENT_LOOPS
def test_garbage_and_oversized_otlp_while_valid_traffic_flows(endpoint_server, start_forwarder, event_loop) -> None:
    forwarder = start_forwarder(endpoint_server.url, args=["--max-body-bytes", "20000", "--event-loop", event_loop])
    valid = [skills(5, prefix=f"v{n}") for n in range(20)]
    oversized = otlp_metrics(*skills(200, prefix="big"))
    assert len(oversized) > 20000
    garbage_answers: List[int] = []

    def send_garbage() -> None:
        with loopback_session() as http:
            for n in range(20):
                for body, headers in (
                    (os.urandom(64 + n), PROTOBUF),
                    (b'{"resourceMetrics": 7}', {"Content-Type": "application/json"}),
                    (oversized, PROTOBUF),
                    (gzip.compress(b"\0" * 100_000), {**PROTOBUF, "Content-Encoding": "gzip"}),
                    (b"\x1f\x8b not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}),
                ):
                    response = http.post(f"{forwarder.url}/v1/metrics", data=body, headers=headers, timeout=10)
                    garbage_answers.append(response.status_code)

    thread = threading.Thread(target=send_garbage)
    thread.start()
    for batch in valid:
        assert post_metrics(forwarder.url, *batch).status_code == 200
    thread.join(60)
    assert len(garbage_answers) == 100
    assert set(garbage_answers) <= {400, 413}
    assert garbage_answers.count(413) >= 40
    wait_for(lambda: len(endpoint_server.events()) == 100)
    assert by_text(endpoint_server.events()) == by_text([event_payload(e) for batch in valid for e in batch])
    with loopback_session() as http:
        assert http.get(f"{forwarder.url}/healthz", timeout=10).status_code == 200


# The process: one per outbox, its address, leaving when idle, health, its own metrics.


def test_a_second_forwarder_on_the_same_outbox_refuses_to_start(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    first = start_forwarder(gate.url)
    second = run_cli("forwarder", "--listen", "127.0.0.1:0", "--metrics-url", gate.url, "--outbox", str(first.outbox))
    assert second.returncode == 3
    assert second.stderr == (
        f"otel-metrics forwarder: the outbox {first.outbox} is in use by another forwarder (pid {first.proc.pid}); "
        "stop it, or give this one its own --outbox\n"
    )
    assert post_metrics(first.url, SKILL).status_code == 200  # the first one goes on, its outbox untouched
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_an_address_in_use_is_a_clear_error(gate: LegacySink, tmp_path: Path) -> None:
    taken = run_cli("forwarder", "--listen", f"127.0.0.1:{gate.port}", "--outbox", str(tmp_path / "outbox.sqlite"))
    assert taken.returncode == 4
    assert taken.stderr == f"otel-metrics forwarder: cannot listen on 127.0.0.1:{gate.port}: Address already in use\n"


def test_the_address_file_names_the_port_and_goes_with_the_process(
    endpoint_server: EndpointProcess, start_forwarder, tmp_path: Path
) -> None:
    address = tmp_path / "run" / "forwarder.json"
    forwarder = start_forwarder(endpoint_server.url, args=["--address-file", str(address)])
    assert json.loads(address.read_text()) == {
        "url": forwarder.url,
        "pid": forwarder.proc.pid,
        "metrics_url": endpoint_server.url,  # where it forwards: the plugin restarts it when that changes
    }
    assert address.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in address.parent.iterdir()] == ["forwarder.json"]  # no temporary left
    assert forwarder.stop() == 0
    assert not address.exists()


def test_idle_exit_once_nothing_came_and_everything_is_delivered(
    endpoint_server: EndpointProcess, start_forwarder, tmp_path: Path
) -> None:
    address = tmp_path / "forwarder.json"
    forwarder = start_forwarder(endpoint_server.url, args=["--idle-exit", "1", "--address-file", str(address)])
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    assert forwarder.exit_status(timeout=30) == 0
    assert endpoint_server.events() == [event_payload(SKILL)]
    assert "no OTLP request for 1 s and nothing to deliver: leaving" in forwarder.log()
    assert not address.exists()


def test_idle_exit_waits_for_a_failing_endpoint_to_take_everything(
    gate: LegacySink, endpoint_server, start_forwarder
) -> None:
    down = [True]
    gate.answer = lambda target, payload: 503 if down[0] else None
    forwarder = start_forwarder(gate.url, args=["--idle-exit", "0.3"])
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    started = time.monotonic()
    wait_for(lambda: len(gate.seen) >= 5 and time.monotonic() - started > 1.5)  # idle long past 0.3 s, retrying
    assert forwarder.proc.poll() is None
    down[0] = False
    assert forwarder.exit_status(timeout=30) == 0
    assert endpoint_server.events() == [event_payload(SKILL)]


def get(url: str) -> requests.Response:
    with loopback_session() as http:
        return http.get(url, timeout=10)


def test_healthz_and_readyz(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    down = [False]
    gate.answer = lambda target, payload: 503 if down[0] else None
    forwarder = start_forwarder(gate.url, args=["--max-outbox-items", "3"])
    assert get(f"{forwarder.url}/healthz").status_code == 200
    ready = get(f"{forwarder.url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {
            "ready": True,
            "checks": {"accepting": "ok", "endpoint": "ok", "outbox_below_bound": "ok", "outbox_writable": "ok"},
        },
    )
    down[0] = True
    assert post_metrics(forwarder.url, *skills(3)).status_code == 200
    not_ready = wait_for(
        lambda: [r for r in [get(f"{forwarder.url}/readyz")] if "failing" in r.json()["checks"]["endpoint"]]
    )[0]
    assert not_ready.status_code == 503
    assert not_ready.json()["ready"] is False
    assert not_ready.json()["checks"]["outbox_below_bound"] == "full (3 payloads waiting)"
    assert get(f"{forwarder.url}/healthz").status_code == 200  # it serves: only not ready
    down[0] = False
    wait_for(lambda: get(f"{forwarder.url}/readyz").status_code == 200)
    assert get(f"{forwarder.url}/nothing").status_code == 404


def test_its_own_metrics_for_prometheus(gate: LegacySink, endpoint_server, start_forwarder) -> None:
    once = iter([503])
    gate.answer = lambda target, payload: 400 if payload.get("name") == "poison" else next(once, None)
    forwarder = start_forwarder(gate.url, args=["--prometheus"])
    assert post_metrics(forwarder.url, COMMAND, SKILL, POISON).status_code == 200
    send(forwarder.otlp_url, sessions=[SESSION])
    wait_for(lambda: len(endpoint_server.events()) == 2 and endpoint_server.sessions())
    text = wait_for(
        lambda: (lambda t: t if "otel_metrics_forwarder_delivery_duration_seconds_count" in t else None)(
            get(f"{forwarder.url}/metrics").text
        )
    )
    event, session = {"otel_metrics_payload_kind": "event"}, {"otel_metrics_payload_kind": "session"}
    assert prometheus_sum(text, "otel_metrics_forwarder_payload_received_total", **event) == 3
    assert prometheus_sum(text, "otel_metrics_forwarder_payload_received_total", **session) == 1
    assert prometheus_sum(text, "otel_metrics_forwarder_payload_delivered_total", **event) == 2
    assert prometheus_sum(text, "otel_metrics_forwarder_payload_delivered_total", **session) == 1
    assert prometheus_sum(text, "otel_metrics_forwarder_payload_retried_total", error_type="503") == 1
    assert (
        prometheus_sum(text, "otel_metrics_forwarder_payload_dead_lettered_total", http_response_status_code="400") == 1
    )
    assert prometheus_sum(text, "otel_metrics_forwarder_delivery_duration_seconds_count") == 3
    assert prometheus_sum(text, "http_client_request_duration_seconds_count") == 5
    assert prometheus_sum(text, "otel_metrics_forwarder_outbox_size") == 0
    assert prometheus_sum(text, "otel_metrics_forwarder_outbox_capacity") == 1_000_000
    assert prometheus_sum(text, "otel_metrics_forwarder_dead_letter_size") == 1
    assert prometheus_sum(text, "otel_metrics_forwarder_endpoint_available") == 1
    assert prometheus_sum(text, "otel_metrics_forwarder_delivery_inflight") == 0


def test_its_own_metrics_by_otlp(endpoint_server: EndpointProcess, start_forwarder, sink: OtlpSink) -> None:
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="200")
    forwarder = start_forwarder(endpoint_server.url, args=["--telemetry-otlp", sink.url], env=env)
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())

    def names() -> set:
        return {
            m.name for r in sink.metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    wait_for(lambda: "otel_metrics.forwarder.payload.delivered" in names())
    assert {
        "otel_metrics.forwarder.payload.received",
        "otel_metrics.forwarder.delivery.duration",
        "otel_metrics.forwarder.outbox.size",
        "otel_metrics.forwarder.outbox.capacity",
        "http.client.request.duration",
    } <= names()
    resource = {kv.key: kv.value.string_value for kv in sink.metrics[-1].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "otel-metrics-forwarder"
    assert forwarder.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-url", "ftp://metrics.example/upload"], "the metrics URL must be http:// or https://"),
        (["--retry-initial", "5", "--retry-max", "1"], "backoff bounds must be 0 < initial <= maximum"),
    ],
)
def test_settings_that_cannot_work_are_refused(tmp_path: Path, args: List[str], message: str) -> None:
    refused = run_cli("forwarder", "--listen", "127.0.0.1:0", "--outbox", str(tmp_path / "outbox.sqlite"), *args)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"otel-metrics forwarder: {message}")


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[Tuple[LegacySink, Path]]:
    """A LegacySink on HTTPS with a certificate for 127.0.0.1 made here (openssl), and that certificate."""
    if not shutil.which("openssl"):
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is required under CI=true to test delivery over TLS")
        pytest.skip("openssl is not installed: it makes the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = LegacySink(tls=context)
    yield sink, cert
    sink.close()


def test_delivery_over_tls_verifies_the_endpoint(tls_sink: Tuple[LegacySink, Path], start_forwarder) -> None:
    sink, cert = tls_sink
    trusting = dict(os.environ, REQUESTS_CA_BUNDLE=str(cert))
    forwarder = start_forwarder(sink.url, args=["--workers", "1"], env=trusting)
    for events in ([COMMAND], [SKILL]):  # the second over the same connection
        assert post_metrics(forwarder.url, *events).status_code == 200
    wait_for(lambda: len(sink.statuses()) == 2)
    assert [payload for _, payload, _ in sink.seen] == [event_payload(COMMAND), event_payload(SKILL)]
    assert sink.connections == 1

    untrusting = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    doubter = start_forwarder(sink.url, env=untrusting)
    assert post_metrics(doubter.url, POISON).status_code == 200
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in doubter.log())
    assert len(sink.seen) == 2  # nothing was sent to an endpoint it could not verify


# Hostile input at the door: refused there with what is wrong, never acknowledged and dropped later,
# never swamping the outbox, the process or the endpoint.


def post_otlp(url: str, request: Any, path: str = "/v1/metrics", **headers: str) -> requests.Response:
    with loopback_session() as http:
        return http.post(f"{url}{path}", data=request.SerializeToString(), headers={**PROTOBUF, **headers}, timeout=30)


def rejections(response: requests.Response, path: str = "/v1/metrics") -> Tuple[int, List[str]]:
    """A 200's partial success: how many points or spans were rejected, and the problem of each."""
    assert response.status_code == 200
    if path == "/v1/metrics":
        partial = ExportMetricsServiceResponse.FromString(response.content).partial_success
        count = partial.rejected_data_points
    else:
        partial = ExportTraceServiceResponse.FromString(response.content).partial_success
        count = partial.rejected_spans
    problems = partial.error_message.split("; plugin_usage")
    return count, problems[:1] + [f"plugin_usage{problem}" for problem in problems[1:]]


@pytest.mark.parametrize("value", [2_000_000, 20_000_000])
def test_a_point_standing_for_millions_of_events_is_refused_at_the_door(
    endpoint_server: EndpointProcess, start_forwarder, value: int
) -> None:
    forwarder = start_forwarder(endpoint_server.url)
    request = otlp.metrics_request(otlp.event_metric(otlp.point(otlp.COMMAND, value)))
    assert len(request.SerializeToString()) < 500  # one small request
    assert rejections(post_otlp(forwarder.url, request)) == (
        1,
        [f"plugin_usage.events data point 0: the value {value} is more events than one export holds (500)"],
    )
    assert post_metrics(forwarder.url, SKILL).status_code == 200  # other senders are not refused
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]
    assert peak_rss_mb(forwarder.proc.pid) < 200  # nothing was expanded


def test_a_request_expanding_past_the_bound_is_refused_before_it_expands(
    endpoint_server: EndpointProcess, start_forwarder
) -> None:
    forwarder = start_forwarder(endpoint_server.url)
    points = [otlp.point(otlp.with_(otlp.COMMAND, schema.SESSION_ID, f"s{n}"), 500) for n in range(201)]
    response = post_otlp(forwarder.url, otlp.metrics_request(otlp.event_metric(*points)))
    assert response.status_code == 413
    assert Status.FromString(response.content) == Status(
        code=8, message="the request holds 100500 payloads, more than 100000; send smaller batches"
    )
    assert post_metrics(forwarder.url, SKILL).status_code == 200
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]


def test_implausible_points_and_spans_are_refused_at_the_door(
    endpoint_server: EndpointProcess, start_forwarder
) -> None:
    forwarder = start_forwarder(endpoint_server.url)
    valid = otlp.COMMAND
    points = [
        otlp.point(valid),
        otlp.point(otlp.with_(valid, schema.EVENT_TIMESTAMP, 946684799)),  # 1999
        otlp.point(otlp.with_(valid, schema.EVENT_TIMESTAMP, int(time.time()) + 2 * 86400)),
        otlp.point(otlp.with_(valid, schema.SESSION_ID, "s" * 2_000_000)),  # acknowledged, then refused, before
        otlp.point(otlp.with_(valid, schema.EVENT_PROMPT_LENGTH, 2**63 - 1)),
    ]
    count, problems = rejections(post_otlp(forwarder.url, otlp.metrics_request(otlp.event_metric(*points))))
    assert count == 4
    in_time = "timestamp must be from 2020-01-01T00:00:00Z to 86400 s after this server's clock"
    for n in (1, 2):  # 1999, and two days ahead
        assert problems[n - 1].startswith(f"plugin_usage.events data point {n}: {in_time}")
    assert problems[2:] == [
        "plugin_usage.events data point 3: session_id must be at most 128 characters",
        "plugin_usage.events data point 4: prompt_length must be <= 67108864",
    ]

    def span(aggregates: SessionAggregates, start: int = otlp.SESSION.start_ns, end: int = otlp.SESSION.end_ns) -> Any:
        return otlp.session_span(otlp.session_attributes(dataclasses.replace(otlp.SESSION, aggregates=aggregates)),
                                 start, end)  # fmt: skip

    spans = [
        span(otlp.SESSION.aggregates),
        span(otlp.SESSION.aggregates, 0, 18446744073709551615),  # 1970 to 2554
        span(SessionAggregates(total_tool_calls=0, bash_call_count=50)),
        span(SessionAggregates(turn_count=2**63 - 1)),
    ]
    count, problems = rejections(post_otlp(forwarder.url, otlp.traces_request(*spans), "/v1/traces"), "/v1/traces")
    assert count == 3
    assert problems[0].startswith(f"plugin_usage.session span: start_{in_time}")
    assert f"; end_{in_time}" in problems[0]
    assert problems[1:] == [
        "plugin_usage.session span: the per-tool counts add up to 50, more than total_tool_calls (0)",
        "plugin_usage.session span: turn_count must be <= 1000000000",
    ]
    wait_for(lambda: endpoint_server.events() and endpoint_server.sessions())
    assert endpoint_server.events() == [event_payload(otlp.COMMAND_EVENT)]
    assert endpoint_server.sessions() == [session_payload(otlp.SESSION)]


def test_a_gzip_body_of_a_million_empty_members_is_refused_at_once(
    endpoint_server: EndpointProcess, start_forwarder
) -> None:
    forwarder = start_forwarder(endpoint_server.url)
    bomb = gzip.compress(b"", mtime=0) * 1_000_000  # 20 MB: minutes of CPU, quadratic in the members, before
    assert len(bomb) < 20 * 1024 * 1024
    valid = [skills(3, prefix=f"during-{n}") for n in range(10)]
    answers: List[int] = []

    def send_valid() -> None:  # other senders meanwhile
        answers.extend(post_metrics(forwarder.url, *batch).status_code for batch in valid)

    cpu_before = cpu_seconds(forwarder.proc.pid)
    sender = threading.Thread(target=send_valid)
    sender.start()
    with loopback_session() as http:
        headers = {**PROTOBUF, "Content-Encoding": "gzip"}
        response = http.post(f"{forwarder.url}/v1/metrics", data=bomb, headers=headers, timeout=60)
    sender.join(60)
    assert (response.status_code, Status.FromString(response.content).message) == (
        400,
        "the gzip body has more than 64 members",
    )
    assert cpu_seconds(forwarder.proc.pid) - cpu_before < 10  # seconds, generously: not minutes
    assert answers == [200] * 10
    wait_for(lambda: len(endpoint_server.events()) == 30)
    assert by_text(endpoint_server.events()) == by_text([event_payload(e) for batch in valid for e in batch])


def test_200_senders_connecting_at_once_are_all_answered(endpoint_server: EndpointProcess, start_forwarder) -> None:
    """Every connection fits in the listen backlog while the forwarder accepts none, then each is answered."""
    forwarder = start_forwarder(endpoint_server.url)
    connected = connect_all_while_stopped(forwarder.proc, forwarder.port, 200)
    try:
        assert len(connected) == 200
        events = skills(200, prefix="at-once")
        answers = answers_on(connected, [raw_post("/v1/metrics", otlp_metrics(event)) for event in events])
    finally:
        for sock in connected:
            sock.close()
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * 200
    wait_for(lambda: len(endpoint_server.events()) == 200)
    assert by_text(endpoint_server.events()) == by_text([event_payload(event) for event in events])


@EVENT_LOOPS
def test_slow_connections_neither_outlast_their_deadline_nor_starve_others(
    endpoint_server: EndpointProcess, start_forwarder, event_loop: str
) -> None:
    args = ["--max-connections", "50", "--request-timeout", "2", "--event-loop", event_loop]
    forwarder = start_forwarder(endpoint_server.url, args=args)
    slow = Tricklers(forwarder.port, 100)  # a byte every 0.3 s each: no read ever waits long
    try:
        wait_for(lambda: slow.open() <= 50)  # at the bound, the oldest made room for the newest
        assert post_metrics(forwarder.url, SKILL).status_code == 200  # a sender still gets in, and is answered
        wait_for(lambda: slow.open() == 0, timeout=15)  # 2 s after its first byte, however slowly it trickles
        timed_out = [answer for answer in slow.answers.values() if answer]
        assert timed_out
        assert {answer.split(b"\r\n", 1)[0] for answer in timed_out} == {b"HTTP/1.1 408 Request Timeout"}
    finally:
        slow.close()
    wait_for(lambda: endpoint_server.events())
    assert endpoint_server.events() == [event_payload(SKILL)]
