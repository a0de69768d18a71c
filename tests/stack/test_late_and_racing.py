"""What Prometheus counts and what it drops when delta points arrive late or race, in the compose
file's configuration (native delta ingestion) and, for comparison, with delta-to-cumulative
conversion. README "What Prometheus counts" states the outcome.

The points are what the collector's fan-out sends: OTLP delta points of the event counter, one
series (the fan-out removed every id, so every user's hooks write into it), from two writers.
"""

from __future__ import annotations

import time
from typing import List, Tuple

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otel_metrics import schema
from support.otlp_requests import key_values
from support.stack_processes import PrometheusProcess, compose_prometheus_flags

pytestmark = pytest.mark.stack

NATIVE_DELTA = "--enable-feature=otlp-native-delta-ingestion"
DELTA_TO_CUMULATIVE = "--enable-feature=otlp-deltatocumulative"
Point = Tuple[float, int]  # (seconds before now, events)
HOUR = 3600


def otlp_request(name: str, points: List[Point], now: float) -> bytes:
    """One request of delta points of plugin_usage.events for one command, each covering the second before it."""

    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend(
        key_values(
            {
                schema.RESOURCE_SERVICE_NAME: schema.SERVICE_NAME,
                schema.RESOURCE_OS_TYPE: "linux",
                schema.RESOURCE_SERVICE_VERSION: "1.0",
                schema.RESOURCE_ENGINE: "claude",
            }
        )
    )
    scope = resource.scope_metrics.add()
    scope.scope.name = schema.SCOPE_NAME
    metric = scope.metrics.add()
    metric.name, metric.unit = schema.EVENT_METRIC, schema.EVENT_UNIT
    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    metric.sum.is_monotonic = True
    for ago, events in points:
        point = metric.sum.data_points.add()
        point.time_unix_nano = int((now - ago) * 1e9)
        point.start_time_unix_nano = point.time_unix_nano - 10**9
        point.as_int = events
        point.attributes.extend(key_values({schema.EVENT_TYPE: "slash_command", schema.EVENT_NAME: name}))
    return request.SerializeToString()


# (what happens, the points of one request, events the collector sent so far)
SCENARIO = [
    ("writer A", [(60, 3)]),
    ("writer B, 10 s later", [(50, 2)]),
    ("late by 2 h (an outage between collector and Prometheus)", [(2 * HOUR, 4)]),
    ("late by 26 h, with a point of now in the same request", [(26 * HOUR, 7), (20, 1)]),
    ("writer C, the same millisecond as A, another count", [(60, 5)]),
    ("writer D, the same millisecond as B, the same count", [(50, 2)]),
    ("writers E and F in one request", [(40, 6), (30, 8)]),
]


def run(prometheus: PrometheusProcess, count_expr: str) -> List[Tuple[str, int, float, float]]:
    """Post the scenario; after each request (its status, events counted in the last 1 h and 3 h)."""
    now = round(time.time(), 3)
    outcome = []
    for name, points in SCENARIO:
        status = prometheus.post_otlp(otlp_request("race:x", points, now)).status_code
        counted = [prometheus.value(count_expr.format(range=r), now + 1) or 0 for r in ("1h", "3h")]
        outcome.append((name, status, *counted))
    return outcome


def test_native_delta_counts_every_point_in_its_own_time_and_drops_only_the_unstorable(start_prometheus) -> None:
    assert NATIVE_DELTA in compose_prometheus_flags()
    native = start_prometheus()
    outcome = run(native, 'sum(sum_over_time(plugin_usage_events_total{{plugin_usage_event_name="race:x"}}[{range}]))')
    assert outcome == [
        ("writer A", 200, 3, 3),
        ("writer B, 10 s later", 200, 5, 5),
        # Counted in its own hour, not in the last one.
        ("late by 2 h (an outage between collector and Prometheus)", 200, 5, 9),
        # Beyond out_of_order_time_window (1d) Prometheus refuses the whole request with 400, which
        # the collector does not retry: the fresh point in it is lost with the old one.
        ("late by 26 h, with a point of now in the same request", 400, 5, 9),
        # A second sample at a timestamp the series has is dropped, whatever its value, with a 200.
        ("writer C, the same millisecond as A, another count", 200, 5, 9),
        ("writer D, the same millisecond as B, the same count", 200, 5, 9),
        ("writers E and F in one request", 200, 19, 23),
    ]


def test_delta_to_cumulative_loses_first_points_late_points_and_older_writers(start_prometheus) -> None:
    flags = [DELTA_TO_CUMULATIVE if flag == NATIVE_DELTA else flag for flag in compose_prometheus_flags()]
    converted = start_prometheus(flags=flags)
    expr = 'sum(increase(plugin_usage_events_total{{plugin_usage_event_name="race:x"}}[{range}] anchored))'
    assert run(converted, expr) == [
        # The first point only starts the cumulative series: increase() never sees its 3 events.
        ("writer A", 200, 0, 0),
        ("writer B, 10 s later", 200, 2, 2),
        # Older than the series' start: dropped, with a 200.
        ("late by 2 h (an outage between collector and Prometheus)", 200, 2, 2),
        ("late by 26 h, with a point of now in the same request", 200, 3, 3),
        ("writer C, the same millisecond as A, another count", 200, 3, 3),
        ("writer D, the same millisecond as B, the same count", 200, 3, 3),
        # Both older than the point of now in the 26 h request: out of order, dropped.
        ("writers E and F in one request", 200, 3, 3),
    ]
