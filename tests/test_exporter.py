"""The hooks' background exporter, with real processes against a real OTLP receiver.

Collector up, down then up, refusing, slow; bursts of concurrent hooks; a killed
exporter; a dead company proxy; a bounded spool. Then sessions in segments (resumed,
forked, crashed in between), with the exporter in process.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from otel_metrics import schema, spool
from otel_metrics.backoff import Backoff
from otel_metrics.exporter.run import DrainSchedule, Exporter
from otel_metrics.forwarder.decode import sessions_from_traces
from otel_metrics.hook_input import record_for
from otel_metrics.model import Session, SessionAggregates
from otel_metrics.transcript import summarize
from support.otlp_sink import OtlpSink
from support.plugin_hooks import (
    exporter_lock_held,
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
from support.processes import wait_for
from support.transcript_entries import (
    answer,
    append,
    prompt,
    result_block,
    session,
    stamp,
    tool_results,
    tool_use,
    usage,
    write,
)

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


def test_a_misconfigured_collector_keeps_records(sink: OtlpSink, state: Path) -> None:
    sink.status = 401  # the collector wants credentials: the records are not at fault, nothing is removed
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/cmd:refused"), env)
    assert wait_for(lambda: any("did not accept the export (HTTP 401" in line for line in log_lines(state)), DEADLINE)
    assert len(list(spool_records(state))) == 1
    sink.status = 200
    run_hook(prompt_input("/cmd:next"), env)
    assert wait_for(lambda: sink.event_count() == 2, DEADLINE)


def test_records_refused_for_good_are_set_aside_and_the_rest_flows(sink: OtlpSink, state: Path) -> None:
    """The collector refuses the content of any request holding one record (400): that record is found
    by halving the batch and set aside; the others arrive; later records are not held up."""
    sink.refuse = lambda body: b"cmd:poison" in body
    env = hook_env(state, sink.url)
    kill_exporters(state)
    with exporter_lock_held(state):  # the records wait until all are spooled, so they go in one batch
        for name in ("cmd:one", "cmd:poison", "cmd:two", "cmd:three"):
            run_hook(prompt_input(f"/{name}"), env)
    run_hook(prompt_input("/cmd:four"), env)
    assert wait_for(lambda: sink.event_count() == 4, DEADLINE)
    arrived = sorted(a[schema.EVENT_NAME] for a, _ in sink.event_points())
    assert arrived == ["cmd:four", "cmd:one", "cmd:three", "cmd:two"]
    # Said once the batch is done, which may be after the last of it arrived.
    [line] = wait_for(lambda: [line for line in log_lines(state) if "refused 1 record(s) for good" in line], DEADLINE)
    assert "HTTP 400" in line
    [aside] = (state / "rejected").glob("*.json")
    assert json.loads(aside.read_text())["name"] == "cmd:poison"
    assert wait_for(lambda: not list(spool_records(state)), DEADLINE)


def test_fifty_concurrent_hooks_arrive_exactly_once(sink: OtlpSink, state: Path) -> None:
    env = hook_env(state, sink.url)
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda i: run_hook(prompt_input(f"/burst:n{i}", session_id=f"s{i}"), env), range(50)))
    assert all(r.returncode == 0 and r.stdout == b"" for r in results)
    assert wait_for(lambda: sink.event_count() >= 50 and not list(spool_records(state)), DEADLINE)
    wait_for(lambda: not exporter_pids(state), DEADLINE)  # every exporter left: none can send more
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
    with exporter_lock_held(state):  # hold the exporter back while five records pile up
        for i in range(5):
            run_hook(prompt_input(f"/cmd:n{i}"), env_recording_only)
    sink.port = port
    sink.start()
    run_hook(prompt_input("/cmd:n5"), env)
    assert wait_for(lambda: sink.event_count() >= 2 and not list(spool_records(state)), DEADLINE)
    assert any("dropped 4 oldest record(s)" in line for line in log_lines(state))
    assert sorted(a[schema.EVENT_NAME] for a, _ in sink.event_points()) == ["cmd:n4", "cmd:n5"]


def test_unreadable_spool_record_is_set_aside_with_a_log_line(sink: OtlpSink, state: Path) -> None:
    (state / "spool").mkdir()
    name = f"{time.time_ns():020d}-1-deadbeef.json"
    (state / "spool" / name).write_text("{not json")
    env = hook_env(state, sink.url)
    run_hook(prompt_input("/cmd:fine"), env)
    assert wait_for(lambda: sink.event_count() == 1, DEADLINE)
    assert any("set aside 1 spool record(s) that can never be sent" in line for line in log_lines(state))
    assert wait_for(lambda: not list((state / "spool").glob("*.json")), DEADLINE)
    assert (state / "rejected" / name).read_text() == "{not json"
    assert (state / "rejected" / (name + ".why")).read_text() == "unreadable\n"


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


def test_a_warm_exporter_follows_a_hook_with_other_settings(state: Path, start_otlp_sink) -> None:
    """A later hook with another collector (a changed option, an updated plugin): the running exporter
    restarts itself in place with the hook's settings, and sends there."""
    first, second = start_otlp_sink(), start_otlp_sink()
    run_hook(prompt_input("/a:one"), hook_env(state, first.url, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30"))
    assert wait_for(lambda: first.event_count() == 1, DEADLINE)
    [pid] = exporter_pids(state)
    run_hook(prompt_input("/b:two"), hook_env(state, second.url, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30"))
    assert wait_for(lambda: second.event_count() == 1, DEADLINE)
    assert first.event_count() == 1
    assert exporter_pids(state) == [pid]  # the same process, re-executed: the lock never changed hands


def test_a_changed_configuration_file_is_read_before_the_next_export(state: Path, start_otlp_sink) -> None:
    first, second = start_otlp_sink(), start_otlp_sink()
    env = hook_env(state, "", CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="30")  # no variable: the file decides
    (state / "config.json").write_text(json.dumps({"otlp_endpoint": first.url}))
    run_hook(prompt_input("/a:one"), env)
    assert wait_for(lambda: first.event_count() == 1, DEADLINE)
    (state / "config.json").write_text(json.dumps({"otlp_endpoint": second.url}))
    run_hook(prompt_input("/b:two"), env)
    assert wait_for(lambda: second.event_count() == 1, DEADLINE)
    assert first.event_count() == 1


# Sessions in segments: the exporter in process (its registry, spool and SDK real) against the sink.
# Each run's expected aggregates are those of its own lines written to a file of their own.


class Crash(Exception):
    """Stands for the exporter dying between two steps."""


def hook_record(state: Path, hook_input: dict) -> None:
    """What the hook writes for this input (SessionEnd: with the sizes of the transcripts now)."""
    record = record_for(hook_input, time.time_ns())
    spool.append(str(state), record, wake=record["record"] != spool.SESSION_START)


def drain(exporter: Exporter) -> None:
    """Rounds until the spool is empty, as the exporter's loop does (a session end queues a record for the next)."""
    for _ in range(5):
        assert exporter.drain()
        if not spool.pending(exporter.state):
            return
    raise AssertionError(f"the spool still holds {spool.pending(exporter.state)}")


def sessions_sent(sink: OtlpSink) -> List[Session]:
    return [session for request in sink.traces for session in sessions_from_traces(request).sessions]


def expected(tmp_path: Path, lines: list, segment: int, **subagents: list) -> Tuple[int, int, int, SessionAggregates]:
    """(segment, start, end, aggregates) of a run's own lines, read as a transcript of their own."""
    alone = summarize(session(tmp_path / f"alone-{next(_runs)}", lines, **subagents))
    return segment, alone.start_ns, alone.end_ns, alone.aggregates


def reported(session: Session) -> Tuple[int, int, int, SessionAggregates]:
    return session.segment, session.start_ns, session.end_ns, session.aggregates


_runs = itertools.count()


def run_lines(seconds: float, tool_id: str, failing: bool = False) -> list:
    """One run of Claude Code: a prompt answered with a Bash call and its result."""
    return [
        prompt(f"run at {seconds}", timestamp=stamp(seconds)),
        answer(f"msg-{tool_id}", tool_use(tool_id), timestamp=stamp(seconds + 1), usage=usage(10, 2)),
        tool_results(result_block(tool_id, is_error=failing), timestamp=stamp(seconds + 2)),
        answer(f"msg-{tool_id}-done", timestamp=stamp(seconds + 3), usage=usage(12, 3)),
    ]


def first_run_reported(tmp_path: Path, state: Path, exporter: Exporter) -> Tuple[Path, list, list]:
    """A session whose first run has been reported: its transcript, that run's lines, the next run's (unwritten)."""
    first, second = run_lines(0, "t1"), run_lines(100, "t2")
    transcript = session(tmp_path, first)
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    drain(exporter)
    return transcript, first, second


@pytest.fixture
def start_exporter(sink: OtlpSink, state: Path) -> Callable[[], Exporter]:
    """start(): an exporter in this process on `state`, sending to `sink` (a new one each call: a restart)."""

    def start() -> Exporter:
        # A session is quiet at once: its transcript has not changed for a nanosecond.
        env = {"CLAUDE_METRICS_OTLP_ENDPOINT": sink.url, "CLAUDE_METRICS_SESSION_QUIET_MINUTES": "1e-12"}
        return Exporter(str(state), env)

    return start


def test_each_run_of_a_resumed_session_is_reported_on_its_own(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter
) -> None:
    first, second = run_lines(0, "t1"), run_lines(100, "t2", failing=True)
    subagent = [answer("x1", tool_use("t3"), timestamp=stamp(101))]
    transcript = session(tmp_path, first)
    exporter = start_exporter()
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    drain(exporter)
    append(transcript, second)
    write(transcript.with_suffix("") / "subagents" / "agent-a1.jsonl", subagent)
    hook_record(state, session_input("SessionStart", "s1", transcript))  # source "resume" in Claude Code
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    drain(exporter)
    hook_record(state, session_input("SessionEnd", "s1", transcript))  # nothing new: nothing sent
    drain(exporter)

    assert [reported(s) for s in sessions_sent(sink)] == [
        expected(tmp_path, first, 0),
        expected(tmp_path, second, 1, **{"agent-a1": subagent}),
    ]
    assert {s.session_id for s in sessions_sent(sink)} == {"s1"}
    assert not list(spool_records(state))


def test_a_resume_that_writes_before_the_exporter_reads_belongs_to_the_next_report(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter
) -> None:
    first, second = run_lines(0, "t1"), run_lines(100, "t2")
    transcript = session(tmp_path, first)
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    append(transcript, second)  # `claude --resume` started at once: the exporter has not read yet
    exporter = start_exporter()
    drain(exporter)
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    drain(exporter)
    assert [reported(s) for s in sessions_sent(sink)] == [expected(tmp_path, first, 0), expected(tmp_path, second, 1)]


def test_a_fork_reports_only_what_it_wrote(sink: OtlpSink, state: Path, tmp_path: Path, start_exporter) -> None:
    """`claude --resume P --fork-session`: the new transcript starts with P's entries (uuids and times kept)."""
    parent_lines = run_lines(0, "t1")
    parent = session(tmp_path / "p", parent_lines)
    exporter = start_exporter()
    hook_record(state, session_input("SessionEnd", "P", parent))
    drain(exporter)
    header = {"type": "queue-operation", "operation": "enqueue", "timestamp": stamp(200), "sessionId": "F"}
    own = run_lines(201, "t2")
    fork = session(tmp_path / "f", [header, *[dict(e, sessionId="F") for e in parent_lines], *own])
    hook_record(state, session_input("SessionEnd", "F", fork))
    drain(exporter)
    own_of_fork_of_fork = run_lines(400, "t3")
    copies = [dict(e, sessionId="G") for e in [*parent_lines, *own]]  # G copied F, which had copied P
    fork_of_fork = session(tmp_path / "g", [dict(header, sessionId="G"), *copies, *own_of_fork_of_fork])
    hook_record(state, session_input("SessionEnd", "G", fork_of_fork))
    drain(exporter)

    sent = sessions_sent(sink)
    assert [s.session_id for s in sent] == ["P", "F", "G"]
    assert [reported(s) for s in sent] == [
        expected(tmp_path, parent_lines, 0),
        expected(tmp_path, [header, *own], 0),
        expected(tmp_path, [header, *own_of_fork_of_fork], 0),
    ]


@pytest.mark.parametrize("quiet_rule", [False, True], ids=["session end", "quiet rule"])
def test_a_crash_before_the_registry_notes_a_segment_reports_it_once(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter, monkeypatch: pytest.MonkeyPatch, quiet_rule: bool
) -> None:
    exporter = start_exporter()
    transcript, first, second = first_run_reported(tmp_path, state, exporter)
    append(transcript, second)
    hook_record(state, session_input("SessionStart", "s1", transcript))
    drain(exporter)
    if not quiet_rule:
        hook_record(state, session_input("SessionEnd", "s1", transcript))

    def crash(*args: object) -> None:
        raise Crash

    monkeypatch.setattr(exporter.registry, "record_report", crash)
    with pytest.raises(Crash):  # the ready record is written, the registry not told
        exporter.report_quiet_sessions() if quiet_rule else exporter.drain()
    assert any("-session-" in name for name in spool.pending(str(state)))
    restarted = start_exporter()
    drain(restarted)
    assert restarted.report_quiet_sessions() == 0
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    drain(restarted)
    assert [reported(s) for s in sessions_sent(sink)] == [expected(tmp_path, first, 0), expected(tmp_path, second, 1)]
    assert not list(spool_records(state))


def test_a_session_end_read_again_after_a_crash_reports_nothing_twice(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry noted the segment, then the exporter died before removing the SessionEnd record."""
    transcript = session(tmp_path, run_lines(0, "t1"))
    hook_record(state, session_input("SessionEnd", "s1", transcript))
    exporter = start_exporter()
    original_remove = spool.remove

    def crash_on_session_end(state_dir: str, name: str) -> None:
        if "-session-" not in name:
            raise Crash
        original_remove(state_dir, name)

    monkeypatch.setattr(spool, "remove", crash_on_session_end)
    with pytest.raises(Crash):
        exporter.drain()
    monkeypatch.setattr(spool, "remove", original_remove)
    restarted = start_exporter()
    drain(restarted)
    drain(restarted)
    assert len(sessions_sent(sink)) == 1
    assert not list(spool_records(state))


def test_the_quiet_rule_reports_a_resumed_run_that_never_ended(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter
) -> None:
    exporter = start_exporter()
    transcript, first, second = first_run_reported(tmp_path, state, exporter)
    assert exporter.report_quiet_sessions() == 0  # reported, nothing since
    hook_record(state, session_input("SessionStart", "s1", transcript))
    drain(exporter)
    append(transcript, second)  # then Ctrl+C: no SessionEnd
    assert exporter.report_quiet_sessions() == 1
    drain(exporter)
    assert exporter.report_quiet_sessions() == 0
    sent = sessions_sent(sink)
    assert [reported(s) for s in sent] == [expected(tmp_path, first, 0), expected(tmp_path, second, 1)]
    assert sent[1].exit_reason == "other"


@pytest.mark.parametrize(
    "sizes",
    [{}, {"transcript_bytes": "12", "subagent_bytes": {}}, {"transcript_bytes": 5, "subagent_bytes": {"a": -1}}],
    ids=["earlier hook", "not a size", "negative"],
)
def test_a_session_end_without_usable_sizes_reads_to_the_end(
    sink: OtlpSink, state: Path, tmp_path: Path, start_exporter, sizes: dict
) -> None:
    lines = run_lines(0, "t1")
    transcript = session(tmp_path, lines)
    record = {"record": "session_end", "session_id": "s1", "transcript_path": str(transcript), "reason": "logout"}
    spool.append(str(state), {**record, **sizes})
    drain(start_exporter())
    [sent] = sessions_sent(sink)
    assert reported(sent) == expected(tmp_path, lines, 0)
    assert sent.exit_reason == "logout"


def test_a_ready_record_of_an_earlier_version_is_sent_as_a_first_run(
    sink: OtlpSink, state: Path, start_exporter
) -> None:
    start = 1761827000 * 10**9  # a plausible time: the forwarder's decoder, which reads what was sent, checks it
    record = {
        "record": "session",
        "session_id": "s1",
        "user_id": None,
        "exit_reason": "other",
        "start_ns": start,
        "end_ns": start + 5,
        "version": "0.1.0",
        "os": "linux",
        **SessionAggregates(turn_count=2).as_dict(),
    }
    spool.write(str(state), f"{time.time_ns():020d}-session-0123.json", record)
    drain(start_exporter())
    [sent] = sessions_sent(sink)
    assert (sent.segment, sent.aggregates.turn_count) == (0, 2)


def _poisoned_transcript(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    elif kind == "device":
        path.symlink_to("/dev/zero")  # an endless line
    else:  # a timestamp of year 1: such a session could not be sent
        path.write_text(
            json.dumps({"type": "user", "timestamp": "0001-01-01T00:00:00.000Z", "message": {"content": "hi"}}) + "\n"
        )
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "year 1"])
def test_a_poisoned_transcript_blocks_nothing(sink: OtlpSink, state: Path, tmp_path: Path, kind: str) -> None:
    """The session is reported from what could be read (here: nothing), the log says why, later records flow."""
    env = hook_env(state, sink.url)
    transcript = _poisoned_transcript(kind, tmp_path)
    run_hook(session_input("SessionEnd", "poisoned", transcript, "logout"), env)
    run_hook(prompt_input("/cmd:after", session_id="next"), env)
    assert wait_for(lambda: sink.event_count() == 1 and len(sink.spans()) == 1, DEADLINE)
    [span] = sink.spans()
    assert span.start_time_unix_nano > 1_577_836_800 * 10**9  # the hook's time, not year 1
    if kind != "year 1":
        assert any("transcript" in line and "is not a regular file" in line for line in log_lines(state))
    assert wait_for(lambda: not list(spool_records(state)), DEADLINE)


def test_the_drain_schedule_waits_for_quiet_hooks_but_not_forever() -> None:
    schedule = DrainSchedule(Backoff(1.0, 30.0, jitter=0.0), now=100.0)
    assert not schedule.due(100.4) and schedule.due(100.5)  # a cold start lets the starting hook pass
    for t in (101.0, 101.3, 101.6):  # hooks keep firing: each pushes the drain half a second on
        schedule.hook_fired(t)
    assert not schedule.due(102.0) and schedule.due(102.1)
    for t in range(200, 207):  # a busy stretch: deferred at most LONGEST_DEFERRAL_SECONDS
        schedule.hook_fired(float(t))
    assert schedule.next_try == 204.5 and schedule.due(204.5)


def test_the_drain_schedule_backs_off_while_failing_and_retries_when_a_hook_fires() -> None:
    schedule = DrainSchedule(Backoff(1.0, 30.0, jitter=0.0), now=0.0)
    assert [schedule.failed(t) for t in (10.0, 11.0, 13.0)] == [0.0, 1.0, 3.0]  # failing for
    assert schedule.next_try == 13.0 + 4.0  # the third retry waits 4 s
    schedule.hook_fired(14.0)
    assert schedule.due(14.5)  # the collector may be back
    schedule.succeeded()
    assert schedule.failed(20.0) == 0.0 and schedule.next_try == 21.0
