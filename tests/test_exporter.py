"""The hooks' background exporter, with real processes against a real OTLP receiver.

Collector up, down then up, refusing, slow; bursts of concurrent hooks; a killed
exporter; a dead company proxy; a bounded spool.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hooks_harness import (
    exporter_pids,
    hook_env,
    kill_exporters,
    log_lines,
    prompt_input,
    run_hook,
    session_input,
    skill_input,
    spool_records,
)
from otlp_sink import OtlpSink
from servers import wait_for

from otel_metrics import schema

DEADLINE = 30.0  # generous: CI machines are slow; the latency itself is benchmarked


def test_events_arrive_and_leave_the_spool(sink: OtlpSink, state: Path) -> None:
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/jira:solve ABC-1"), env)
    run_hook(skill_input("pdf:make"), env)
    assert wait_for(lambda: sink.event_count() == 2, DEADLINE)
    assert wait_for(lambda: not list(spool_records(state)), DEADLINE)
    names = sorted(attrs[schema.EVENT_NAME] for attrs, _ in sink.event_points())
    assert names == ["jira:solve", "pdf:make"]
    user_id = (state / ".anonymous_id").read_text().strip()
    assert {attrs[schema.USER_ID] for attrs, _ in sink.event_points()} == {user_id}


def test_collector_down_then_back_loses_nothing(sink: OtlpSink, state: Path) -> None:
    port = sink.port
    sink.stop()
    env = hook_env(state, f"http://127.0.0.1:{port}")
    for i in range(3):
        run_hook(prompt_input(f"/cmd:n{i}"), env)
    assert wait_for(lambda: any("did not accept" in line for line in log_lines(state)), DEADLINE)
    assert len(list(spool_records(state))) == 3
    sink.port = port
    sink.start()
    run_hook(prompt_input("just a question"), env)  # the next hook, even a plain prompt
    assert wait_for(lambda: sink.event_count() == 3, DEADLINE)
    assert wait_for(lambda: not list(spool_records(state)), DEADLINE)
    failures = [line for line in log_lines(state) if "did not accept" in line]
    assert len(failures) == 1  # once per outage, not once per retry


def test_collector_refusing_keeps_records(sink: OtlpSink, state: Path) -> None:
    sink.status = 400  # not retryable for the SDK: still, nothing is removed
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/cmd:refused"), env)
    assert wait_for(lambda: any("did not accept" in line for line in log_lines(state)), DEADLINE)
    assert len(list(spool_records(state))) == 1
    sink.status = 200
    run_hook(prompt_input("/cmd:next"), env)
    assert wait_for(lambda: sink.event_count() == 2, DEADLINE)


def test_fifty_concurrent_hooks_arrive_exactly_once(sink: OtlpSink, state: Path) -> None:
    env = hook_env(state, sink.url)
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(
            pool.map(lambda i: run_hook(prompt_input(f"/burst:n{i}", session_id=f"s{i}"), env), range(50))
        )
    assert all(r.returncode == 0 and r.stdout == b"" for r in results)
    assert wait_for(lambda: sink.event_count() >= 50 and not list(spool_records(state)), DEADLINE)
    time.sleep(1)  # a second exporter, were there one, would send more
    sessions = [attrs[schema.SESSION_ID] for attrs, value in sink.event_points() for _ in range(value)]
    assert sorted(sessions) == sorted(f"s{i}" for i in range(50))


def test_killed_exporter_leaves_records_for_the_next(sink: OtlpSink, state: Path) -> None:
    sink.status = 503
    sink.delay = 0.5
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/cmd:survivor"), env)
    assert wait_for(lambda: exporter_pids(state), DEADLINE)
    assert kill_exporters(state, signal.SIGKILL)
    assert len(list(spool_records(state))) == 1
    sink.status, sink.delay = 200, 0.0
    run_hook(prompt_input("/cmd:after"), env)
    assert wait_for(lambda: sink.event_count() == 2, DEADLINE)
    assert sorted(a[schema.EVENT_NAME] for a, _ in sink.event_points()) == ["cmd:after", "cmd:survivor"]


def test_dead_proxy_does_not_catch_loopback_traffic(sink: OtlpSink, state: Path) -> None:
    dead_proxy = "http://127.0.0.1:9"
    env = hook_env(state, sink.url, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, http_proxy=dead_proxy)
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    run_hook(prompt_input("/cmd:proxied"), env)
    assert wait_for(lambda: sink.event_count() == 1, DEADLINE)


def test_spool_bound_drops_oldest_and_says_how_many(sink: OtlpSink, state: Path) -> None:
    port = sink.port
    sink.stop()
    env = hook_env(state, f"http://127.0.0.1:{port}", CLAUDE_METRICS_SPOOL_MAX_ITEMS="2")
    env_recording_only = dict(env, CLAUDE_METRICS_DISABLED="")
    from otel_metrics import lock

    fd = lock.try_acquire(str(state))  # hold the exporter back while five records pile up
    for i in range(5):
        run_hook(prompt_input(f"/cmd:n{i}"), env_recording_only)
    lock.release(fd)
    sink.port = port
    sink.start()
    run_hook(prompt_input("/cmd:n5"), env)
    assert wait_for(lambda: sink.event_count() >= 2 and not list(spool_records(state)), DEADLINE)
    assert any("dropped 4 oldest record(s)" in line for line in log_lines(state))
    assert sorted(a[schema.EVENT_NAME] for a, _ in sink.event_points()) == ["cmd:n4", "cmd:n5"]


def test_unreadable_spool_record_is_dropped_with_a_log_line(sink: OtlpSink, state: Path) -> None:
    (state / "spool").mkdir()
    (state / "spool" / f"{time.time_ns():020d}-1-deadbeef.json").write_text("{not json")
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/cmd:fine"), env)
    assert wait_for(lambda: sink.event_count() == 1, DEADLINE)
    assert any("dropped spool record" in line for line in log_lines(state))
    assert wait_for(lambda: not list((state / "spool").glob("*.json")), DEADLINE)


def test_session_start_sends_what_was_left(sink: OtlpSink, state: Path, tmp_path: Path) -> None:
    (state / "spool").mkdir()
    leftover = {
        "record": "event", "kind": "skill", "name": "left:over", "prompt_length": 0, "session_id": "old",
        "timestamp": 1700000000, "version": "0.1.0", "os": "linux", "transcript_path": None,
    }  # fmt: skip
    (state / "spool" / f"{time.time_ns():020d}-1-cafebabe.json").write_text(json.dumps(leftover))
    env = hook_env(state, sink.url)
    run_hook(session_input("SessionStart", "new", tmp_path / "new.jsonl"), env)
    assert wait_for(lambda: sink.event_count() == 1, DEADLINE)
    [(attrs, _)] = sink.event_points()
    assert attrs[schema.EVENT_TIMESTAMP] == 1700000000


def test_a_warm_exporter_follows_a_hook_with_other_settings(state: Path) -> None:
    """A later hook with another collector (a changed option, an updated plugin): the running exporter
    restarts itself in place with the hook's settings, and sends there."""
    first, second = OtlpSink(), OtlpSink()
    try:
        run_hook(prompt_input("/a:one"), hook_env(state, first.url, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30"))
        assert wait_for(lambda: first.event_count() == 1, DEADLINE)
        [pid] = exporter_pids(state)
        run_hook(prompt_input("/b:two"), hook_env(state, second.url, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30"))
        assert wait_for(lambda: second.event_count() == 1, DEADLINE)
        assert first.event_count() == 1
        assert exporter_pids(state) == [pid]  # the same process, re-executed: the lock never changed hands
    finally:
        first.stop()
        second.stop()


def test_a_changed_configuration_file_is_read_before_the_next_export(state: Path) -> None:
    first, second = OtlpSink(), OtlpSink()
    try:
        env = hook_env(state, "", CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30")  # no variable: the file decides
        (state / "config.json").write_text(json.dumps({"otlp_endpoint": first.url}))
        run_hook(prompt_input("/a:one"), env)
        assert wait_for(lambda: first.event_count() == 1, DEADLINE)
        (state / "config.json").write_text(json.dumps({"otlp_endpoint": second.url}))
        run_hook(prompt_input("/b:two"), env)
        assert wait_for(lambda: second.event_count() == 1, DEADLINE)
        assert first.event_count() == 1
    finally:
        first.stop()
        second.stop()
