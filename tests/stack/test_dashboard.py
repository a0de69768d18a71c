"""The maintainers' view, run for real: the hooks feed the collector (otelcol.yaml + fanout.yaml), which
feeds the forwarder and endpoint, Prometheus (compose flags, deploy/prometheus) and Jaeger
(deploy/jaeger); then every query of the Grafana dashboard, with Grafana's variables filled in,
returns the numbers the traffic implies, Jaeger has one trace per session and no ids, and the
endpoint stored exactly the payloads.

Traffic, from two anonymous users: 5 x /a:x, 2 x /b:y, 3 skills (2 x c:z, 1 x d:w), and 4 sessions
(90 s, 10 min, 45 min, 2 h; exit reasons logout, other, other, clear) whose transcripts have tool
calls, a failed one, and tokens.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from otel_metrics import schema
from otel_metrics.model import SessionAggregates
from otel_metrics.payloads import validate_event_payload, validate_session_payload
from otel_metrics.report import TOOL_COLUMNS
from otel_metrics.transcript import summarize
from support.collector_process import BASE_CONFIG, FANOUT_CONFIG, CollectorProcess
from support.paths import REPO
from support.plugin_hooks import hook_env, kill_exporters, prompt_input, run_hook, session_input, skill_input
from support.processes import EndpointProcess, ForwarderProcess, wait_for
from support.stack_processes import JaegerProcess, PrometheusProcess

pytestmark = pytest.mark.stack

DASHBOARD = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "plugin-usage.json").read_text())
DEADLINE = 90.0
RANGE_SECONDS = 7 * 86400  # the dashboard's time range, now-7d .. now
BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800)  # fanout.yaml's span_metrics buckets, in seconds

# (user, hook input) in the order the hooks fire; sessions: (id, seconds, exit reason, tool calls, failed call)
SESSIONS = {
    "A": [("sess-a1", 90, "logout", ["Bash", "Read", "Read"], 0), ("sess-a2", 600, "other", ["Edit", "Grep"], None)],
    "B": [
        ("sess-b1", 2700, "other", ["Bash", "Bash", "WebFetch", "Task"], 1),
        ("sess-b2", 7200, "clear", ["Glob"], None),
    ],
}
EVENTS = {
    "A": [("/a:x", 3), ("/b:y", 1), ("c:z", 2)],
    "B": [("/a:x", 2), ("/b:y", 1), ("d:w", 1)],
}


def transcript(path: Path, session_id: str, seconds: int, tools: List[str], failed: Any) -> Path:
    """A Claude Code transcript: a prompt, one assistant message calling `tools`, their results (the
    `failed`-th one an error), and a last reply `seconds` after the first entry, ending now."""
    end = time.time()
    start = end - seconds

    def at(offset: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + offset)) + ".000Z"

    usage = {
        "input_tokens": 120,
        "output_tokens": 40,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 900,
    }
    calls = [
        {"type": "tool_use", "id": f"{session_id}-t{i}", "name": name, "input": {}} for i, name in enumerate(tools)
    ]
    results = [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "ok", "is_error": i == failed}
        for i, call in enumerate(calls)
    ]
    entries = [
        {"type": "user", "timestamp": at(0), "message": {"role": "user", "content": "please do the thing"}},
        {
            "type": "assistant",
            "timestamp": at(1),
            "requestId": f"{session_id}-r1",
            "message": {
                "id": f"{session_id}-m1",
                "role": "assistant",
                "model": "claude-test",
                "content": calls,
                "usage": usage,
            },
        },
        {"type": "user", "timestamp": at(2), "message": {"role": "user", "content": results}},
        {
            "type": "assistant",
            "timestamp": at(seconds),
            "requestId": f"{session_id}-r2",
            "message": {
                "id": f"{session_id}-m2",
                "role": "assistant",
                "model": "claude-test",
                "content": [{"type": "text", "text": "done"}],
                "usage": usage,
            },
        },
    ]
    path.write_text("".join(json.dumps({**entry, "sessionId": session_id}) + "\n" for entry in entries))
    return path


class Stack:
    def __init__(self, endpoint: EndpointProcess, prometheus: PrometheusProcess, jaeger: JaegerProcess) -> None:
        self.endpoint, self.prometheus, self.jaeger = endpoint, prometheus, jaeger
        self.users: Dict[str, str] = {}  # A/B -> anonymous id
        self.aggregates: Dict[str, SessionAggregates] = {}  # session id -> what its transcript gives
        self.durations: Dict[str, int] = {}
        self.reasons: Dict[str, str] = {}


@pytest.fixture(scope="module")
def stack(stack_binaries: Dict[str, Path], tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("stack")
    processes: List[Any] = []
    states: List[Path] = []
    try:
        endpoint = EndpointProcess(work / "endpoint.sqlite").start()
        processes.append(endpoint)
        forwarder = ForwarderProcess(endpoint.url, work / "outbox.sqlite", ["--retry-initial", "0.05"], None).start()
        processes.append(forwarder)
        jaeger = JaegerProcess(stack_binaries["jaeger"], work / "jaeger").start()
        processes.append(jaeger)
        collector = CollectorProcess(
            stack_binaries["collector"],
            [BASE_CONFIG, FANOUT_CONFIG],
            forwarder.otlp_url,
            (work / "collector").resolve(),
            {"OTEL_METRICS_JAEGER_OTLP_URL": jaeger.otlp_url, "OTEL_METRICS_SPANMETRICS_FLUSH_INTERVAL": "1s"},
        )
        (work / "collector").mkdir()
        prometheus = PrometheusProcess(
            stack_binaries["prometheus"],
            work / "prometheus",
            {"collector:8888": f"127.0.0.1:{collector.telemetry_port}", "endpoint:8080": f"127.0.0.1:{endpoint.port}"},
        ).start()
        processes.append(prometheus)
        collector.env["OTEL_METRICS_PROMETHEUS_OTLP_URL"] = prometheus.otlp_url
        collector.start()
        processes.append(collector)
        # The endpoint's counters are scraped at 0 before anything is stored (as when a stack starts).
        wait_for(lambda: prometheus.value("otel_metrics_endpoint_sessions_total") == 0, DEADLINE, 0.2)

        stack = Stack(endpoint, prometheus, jaeger)
        events_so_far = sessions_so_far = 0
        for user in ("A", "B"):
            state = work / f"state-{user}"
            state.mkdir()
            states.append(state)
            env = hook_env(state, collector.otlp_url)
            for name, times in EVENTS[user]:
                for _ in range(times):
                    hook_input = (
                        prompt_input(f"{name} some words", f"{user}-events")
                        if name.startswith("/")
                        else (skill_input(name, f"{user}-events"))
                    )
                    assert run_hook(hook_input, env).returncode == 0
            for session_id, seconds, reason, tools, failed in SESSIONS[user]:
                path = transcript(work / f"{session_id}.jsonl", session_id, seconds, tools, failed)
                stack.aggregates[session_id] = summarize(path).aggregates
                stack.durations[session_id], stack.reasons[session_id] = seconds, reason
                result = run_hook(session_input("SessionEnd", session_id, path, reason), env)
                assert (result.returncode, result.stdout) == (0, b"")
            events_so_far += sum(times for _, times in EVENTS[user])
            sessions_so_far += len(SESSIONS[user])
            # One user after the other: two writers' points racing is test_late_and_racing's subject.
            wait_for(lambda n=events_so_far: len(endpoint.events()) == n, DEADLINE)
            wait_for(lambda n=sessions_so_far: len(endpoint.sessions()) == n, DEADLINE)
            stack.users[user] = (state / ".anonymous_id").read_text().strip()
        everything = [
            ("sum(sum_over_time(plugin_usage_events_total[1h]))", 10),
            ('sum(sum_over_time(traces_span_metrics_calls_total{span_name="plugin_usage.session"}[1h]))', 4),
            ("otel_metrics_endpoint_sessions_total", 4),
        ]
        for expr, count in everything:
            wait_for(lambda expr=expr, count=count: prometheus.value(expr) == count, DEADLINE, 0.5)
        wait_for(lambda: len(jaeger.traces(schema.SERVICE_NAME, schema.SESSION_SPAN)) == 4, DEADLINE, 0.5)
        yield stack
    finally:
        for state in states:
            kill_exporters(state)
        for process in reversed(processes):
            process.stop()


def grafana_variables(expr: str, interval: str = "1m") -> str:
    """What Grafana sends for the dashboard's default time range (now-7d .. now)."""
    return (
        expr.replace("$__rate_interval", "4m")
        .replace("$__range_s", str(RANGE_SECONDS))
        .replace("$__range_ms", str(RANGE_SECONDS * 1000))
        .replace("$__range", f"{RANGE_SECONDS}s")
        .replace("$__interval_ms", str(int(seconds(interval) * 1000)))
        .replace("$__interval", interval)
    )


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(duration[:-1]) * units[duration[-1]]


def classic_quantile(q: float, values: List[int], bounds: Tuple[int, ...]) -> float:
    """Prometheus' histogram_quantile on classic buckets: linear within the bucket holding rank q*n."""
    cumulative = [sum(1 for v in values if v <= bound) for bound in bounds]
    rank = q * len(values)
    for index, count in enumerate(cumulative):
        if count >= rank:
            lower = bounds[index - 1] if index else 0
            below = cumulative[index - 1] if index else 0
            return lower + (bounds[index] - lower) * (rank - below) / (count - below)
    raise AssertionError("rank beyond the last finite bucket")


def expected_panels(stack: Stack) -> Dict[Tuple[str, str], Dict[Tuple[str, ...], float]]:
    """(panel title, refId) -> {label values: value} for every Prometheus target of the dashboard."""
    uses = Counter()
    for user in EVENTS.values():
        for name, times in user:
            uses[("slash_command" if name.startswith("/") else "skill", name.lstrip("/"))] += times
    totals = {column: sum(getattr(a, column) for a in stack.aggregates.values()) for _, column in TOOL_COLUMNS}
    tool_calls = sum(a.total_tool_calls for a in stack.aggregates.values())
    mix = {(tool,): float(totals[column]) for tool, column in TOOL_COLUMNS}
    mix[("other",)] = float(tool_calls - sum(totals.values()))
    tokens = {
        (kind,): float(sum(getattr(a, key) for a in stack.aggregates.values()))
        for kind, key in [
            ("input", "total_input_tokens"),
            ("output", "total_output_tokens"),
            ("cache_creation", "cache_creation_tokens"),
            ("cache_read", "cache_read_tokens"),
        ]
    }
    durations = sorted(stack.durations.values())
    reasons = Counter(stack.reasons.values())
    return {
        ("Slash commands (time range)", "A"): {(n,): c for (k, n), c in uses.items() if k == "slash_command"},
        ("Skills (time range)", "A"): {(n,): c for (k, n), c in uses.items() if k == "skill"},
        ("Events per hour, by command and skill", "A"): {key: c for key, c in uses.items()},
        ("Sessions per day", "A"): {(): 4},
        ("Sessions by exit reason (time range)", "A"): {(r,): c for r, c in reasons.items()},
        ("Session duration (time range)", "A"): {(): classic_quantile(0.5, durations, BUCKETS)},
        ("Session duration (time range)", "B"): {(): classic_quantile(0.9, durations, BUCKETS)},
        ("Tool-call mix (time range)", "A"): mix,
        ("Tokens (time range)", "A"): tokens,
        ("Failed tool calls (time range)", "A"): {
            (): sum(a.tool_error_count for a in stack.aggregates.values()) / tool_calls
        },
    }


PROMETHEUS_TARGETS = [
    (panel["title"], target)
    for panel in DASHBOARD["panels"]
    if panel["datasource"]["type"] == "prometheus"
    for target in panel["targets"]
]


def test_every_prometheus_target_of_the_dashboard_is_checked(stack: Stack) -> None:
    assert sorted((title, t["refId"]) for title, t in PROMETHEUS_TARGETS) == sorted(expected_panels(stack))
    assert {panel["datasource"]["type"] for panel in DASHBOARD["panels"]} == {"prometheus", "jaeger"}


@pytest.mark.parametrize("title, target", PROMETHEUS_TARGETS, ids=[f"{t}-{q['refId']}" for t, q in PROMETHEUS_TARGETS])
def test_the_dashboard_query_returns_the_traffic(stack: Stack, title: str, target: Dict[str, Any]) -> None:
    expected = expected_panels(stack)[(title, target["refId"])]
    legend_labels = [part.strip(" {}") for part in target.get("legendFormat", "").split("}}") if "{{" in part]
    now = time.time()
    if target["instant"]:
        results = stack.prometheus.query(grafana_variables(target["expr"]), now)
        got = {tuple(labels[name] for name in legend_labels): value for labels, value in results}
    else:
        # A range query as the time series panels run it; its windows ([1h] at a 1h step) do not
        # overlap, so the values over the last two days add up to the traffic.
        step = seconds(target["interval"])
        expr = grafana_variables(target["expr"], target["interval"])
        results = stack.prometheus.query_range(expr, now - 2 * 86400, now, step)
        got = {tuple(labels[name] for name in legend_labels): sum(values) for labels, values in results}
    assert got == pytest.approx(expected), f"{title}: {target['expr']}"


def test_jaeger_has_one_trace_per_session_and_no_ids(stack: Stack) -> None:
    traces = stack.jaeger.traces(schema.SERVICE_NAME, schema.SESSION_SPAN)
    text = json.dumps(traces)
    for secret in [*stack.aggregates, *stack.users.values(), "A-events", "B-events"]:
        assert secret not in text  # neither session ids nor anonymous user ids
    found = []
    for trace in traces:
        [span] = trace["spans"]
        tags = {tag["key"]: tag["value"] for tag in span["tags"]}
        assert not set(tags) & set(schema.HIGH_CARDINALITY_KEYS)
        process = trace["processes"][span["processID"]]
        assert process["serviceName"] == schema.SERVICE_NAME
        found.append(
            (
                tags[schema.SESSION_EXIT_REASON],
                round(span["duration"] / 1e6),
                tags[schema.SESSION_AGGREGATE_ATTRIBUTES["total_tool_calls"]],
            )
        )
    expected = [(stack.reasons[s], stack.durations[s], stack.aggregates[s].total_tool_calls) for s in stack.aggregates]
    assert sorted(found) == sorted(expected)


def test_the_endpoint_stored_every_payload_whole(stack: Stack) -> None:
    events = stack.endpoint.events()
    assert all(validate_event_payload(event) == [] for event in events)
    got = Counter((e["user_id"], e["type"], e["name"], e["session_id"]) for e in events)
    expected = Counter()
    for user, names in EVENTS.items():
        for name, times in names:
            kind = "slash_command" if name.startswith("/") else "skill"
            expected[(stack.users[user], kind, name.lstrip("/"), f"{user}-events")] += times
    assert got == expected
    sessions = {s["session_id"]: s for s in stack.endpoint.sessions()}
    assert all(validate_session_payload(s) == [] for s in sessions.values())
    for user, listed in SESSIONS.items():
        for session_id, seconds_, reason, _, _ in listed:
            stored = sessions[session_id]
            assert (stored["user_id"], stored["exit_reason"], stored["session_duration"]) == (
                stack.users[user],
                reason,
                seconds_,
            )
            counts = stack.aggregates[session_id].as_dict()
            assert {k: stored.get(k, 0) for k in counts} == counts
