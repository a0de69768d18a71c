"""The fan-out branch (collector-config/fanout.yaml merged on otelcol.yaml), with the real collector.

Loopback OTLP servers stand where Prometheus and Jaeger stand. The branch gets the same
events and sessions without the high-cardinality keys; the forwarder still gets them whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_metrics import schema
from support.legacy_payloads import expected_event
from support.otlp_requests import attribute_values
from support.plugin_hooks import hook_env, prompt_input, run_hook, session_input
from support.processes import wait_for

pytestmark = pytest.mark.collector

DEADLINE = 60.0
SPANMETRICS_CALLS = "traces.span.metrics.calls"


def metric_points(bodies: List[bytes], name: str) -> List[Tuple[Dict[str, object], Dict[str, object], float]]:
    """(resource attributes, point attributes, value) of every data point of the sum `name`."""
    points = []
    for body in bodies:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for point in metric.sum.data_points:
                            value = getattr(point, point.WhichOneof("value"))
                            resource = attribute_values(rm.resource.attributes)
                            points.append((resource, attribute_values(point.attributes), value))
    return points


def spans(bodies: List[bytes]) -> List[Tuple[Dict[str, object], str, Dict[str, object]]]:
    """(resource attributes, name, attributes) of every span."""
    found = []
    for body in bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    resource = attribute_values(rs.resource.attributes)
                    found.append((resource, span.name, attribute_values(span.attributes)))
    return found


def test_fanout_drops_high_cardinality_keys_on_its_branch_only(
    endpoint_server, start_forwarder, start_collector, start_otlp_sink, state: Path, tmp_path: Path
) -> None:
    prometheus, jaeger = start_otlp_sink(), start_otlp_sink()
    forwarder = start_forwarder(endpoint_server.url)
    otelcol = start_collector(
        forwarder.otlp_url,
        fanout=True,
        env={
            "OTEL_METRICS_PROMETHEUS_OTLP_URL": f"{prometheus.url}/api/v1/otlp",
            "OTEL_METRICS_JAEGER_OTLP_URL": jaeger.url,
            "OTEL_METRICS_SPANMETRICS_FLUSH_INTERVAL": "1s",
        },
    )
    env = hook_env(state, otelcol.otlp_url)
    run_hook(prompt_input("/jira:solve ABC-1", session_id="fan"), env)
    run_hook(session_input("SessionEnd", "fan", tmp_path / "none.jsonl", "logout"), env)

    # The forwarder's branch: the whole payloads, session and user ids included.
    [event] = wait_for(endpoint_server.events, DEADLINE)
    assert event == expected_event(
        "slash_command", "jira:solve", len("/jira:solve ABC-1"), "fan", state, event["timestamp"]
    )
    [session] = wait_for(endpoint_server.sessions, DEADLINE)
    assert (session["session_id"], session["user_id"]) == ("fan", event["user_id"])

    # Prometheus: the event counter with only bounded attributes.
    metrics_path = "/api/v1/otlp/v1/metrics"
    [(resource, point, value)] = wait_for(
        lambda: metric_points(prometheus.bodies(metrics_path), schema.EVENT_METRIC), DEADLINE
    )
    assert point == {
        schema.EVENT_TYPE: "slash_command",
        schema.EVENT_NAME: "jira:solve",
    }
    assert value == 1
    assert set(resource) == set(schema.RESOURCE_KEYS)

    # Jaeger: the session span, without session.id and user.id.
    [(span_resource, span_name, span_attributes)] = wait_for(lambda: spans(jaeger.bodies("/v1/traces")), DEADLINE)
    assert span_name == schema.SESSION_SPAN
    assert set(span_resource) == set(schema.RESOURCE_KEYS)
    assert span_attributes[schema.SESSION_EXIT_REASON] == "logout"
    assert not set(span_attributes) & set(schema.HIGH_CARDINALITY_KEYS)
    assert set(span_attributes) <= set(schema.SESSION_AGGREGATE_ATTRIBUTES.values()) | {
        schema.SESSION_EXIT_REASON,
        schema.SESSION_SEGMENT,
    }

    # Prometheus again: the spanmetrics connector counts sessions (delta: each flush the new ones).
    def session_counts() -> List[float]:
        points = metric_points(prometheus.bodies(metrics_path), SPANMETRICS_CALLS)
        for _, call_attributes, _ in points:
            assert call_attributes["span.name"] == schema.SESSION_SPAN
            assert call_attributes[schema.SESSION_EXIT_REASON] == "logout"
            assert not set(call_attributes) & set(schema.HIGH_CARDINALITY_KEYS)
        return [count for _, _, count in points if count]

    assert set(wait_for(session_counts, DEADLINE)) == {1}
