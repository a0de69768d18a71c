"""The forwarder's own metrics, through the OpenTelemetry SDK, named by the OTel conventions.

Off unless asked for: then every instrument is the API's no-op and the SDK is
not imported. `--prometheus` serves them at GET /metrics on the OTLP port
(opentelemetry-exporter-prometheus, imported only then); `--telemetry-otlp URL`
exports them by OTLP/HTTP every OTEL_METRIC_EXPORT_INTERVAL ms (60 s by default).

The instruments (README "The forwarder's own metrics" has the table, with units and attributes):
payload.received, .delivered, .retried, .dead_lettered (counters); delivery.duration (OTLP
receipt to the endpoint's 2xx) and http.client.request.duration (histograms, seconds);
delivery.inflight; outbox.size, outbox.capacity, outbox.oldest_age, dead_letter.size,
endpoint.available (read when collected); every name but the last histogram's under
`otel_metrics.forwarder.`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, List, Optional, Tuple

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation

from .. import __version__

SCOPE = "otel_metrics.forwarder"
KIND = "otel_metrics.payload.kind"
KINDS = {"events": {KIND: "event"}, "sessions": {KIND: "session"}}
# Seconds; the conventions' buckets for HTTP durations, then longer ones for payloads that waited out an outage.
HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
DELIVERY_BUCKETS = [*HTTP_BUCKETS, 30, 60, 300, 900, 3600]
SHUTDOWN_MILLIS = 2000


class PrometheusUnavailable(Exception):
    """--prometheus without its library installed."""


class Telemetry:
    """The instruments; gauges read the outbox and the circuit when a reader collects."""

    def __init__(self, meter: Meter, shutdown: Callable[[], None] = lambda: None) -> None:
        self._shutdown = shutdown
        self.received = meter.create_counter(
            f"{SCOPE}.payload.received",
            unit="{payload}",
            description="Payloads decoded from OTLP and committed to the outbox",
        )
        self.delivered = meter.create_counter(
            f"{SCOPE}.payload.delivered", unit="{payload}", description="Payloads the endpoint accepted (2xx)"
        )
        self.retried = meter.create_counter(
            f"{SCOPE}.payload.retried", unit="{payload}", description="Failed delivery attempts that will be retried"
        )
        self.dead_lettered = meter.create_counter(
            f"{SCOPE}.payload.dead_lettered",
            unit="{payload}",
            description="Payloads the endpoint refused for good, moved to the dead letters",
        )
        self.delivery_duration = meter.create_histogram(
            f"{SCOPE}.delivery.duration",
            unit="s",
            description="Time from the payload's commit to the outbox to the endpoint's 2xx",
            explicit_bucket_boundaries_advisory=DELIVERY_BUCKETS,
        )
        self.inflight = meter.create_up_down_counter(
            f"{SCOPE}.delivery.inflight", unit="{request}", description="POSTs to the endpoint awaiting an answer"
        )
        self.request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests to the endpoint",
            explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
        )
        self._meter = meter

    def observe(
        self,
        outbox_size: Callable[[], int],
        outbox_capacity: int,
        oldest_received: Callable[[], Optional[float]],
        dead_letters: Callable[[], int],
        endpoint_available: Callable[[], bool],
    ) -> None:
        """Register the gauges (asked only when a reader collects)."""

        def gauge(read: Callable[[], Any]) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(options: CallbackOptions) -> List[Observation]:
                value = read()
                return [] if value is None else [Observation(value)]

            return callback

        def oldest_age() -> Optional[float]:
            received = oldest_received()
            return None if received is None else max(0.0, time.time() - received)

        meter = self._meter
        meter.create_observable_up_down_counter(
            f"{SCOPE}.outbox.size", [gauge(outbox_size)], unit="{payload}", description="Payloads waiting in the outbox"
        )
        meter.create_observable_up_down_counter(
            f"{SCOPE}.outbox.capacity",
            [gauge(lambda: outbox_capacity)],
            unit="{payload}",
            description="Payloads the outbox holds before the receiver answers 503",
        )
        meter.create_observable_gauge(
            f"{SCOPE}.outbox.oldest_age",
            [gauge(oldest_age)],
            unit="s",
            description="Age of the oldest payload waiting in the outbox",
        )
        meter.create_observable_up_down_counter(
            f"{SCOPE}.dead_letter.size",
            [gauge(dead_letters)],
            unit="{payload}",
            description="Payloads in the dead letters, waiting for `otel-metrics forwarder dead-letters --replay`",
        )
        meter.create_observable_gauge(
            f"{SCOPE}.endpoint.available",
            [gauge(lambda: int(endpoint_available()))],  # no unit "1": Prometheus would call it a ratio
            description="1 while deliveries reach the endpoint, 0 while its circuit is open (it is only probed)",
        )

    def shutdown(self) -> None:
        self._shutdown()


def disabled() -> Telemetry:
    return Telemetry(NoOpMeterProvider().get_meter(SCOPE))


def enabled(prometheus: bool, otlp_url: Optional[str]) -> Telemetry:
    """An SDK MeterProvider with the readers asked for; raises PrometheusUnavailable without its library."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    readers: List[MetricReader] = []
    if prometheus:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError as error:
            raise PrometheusUnavailable(
                f"--prometheus needs opentelemetry-exporter-prometheus ({error}); "
                "install it (`pip install opentelemetry-exporter-prometheus`) where otel-metrics runs"
            ) from error
        readers.append(PrometheusMetricReader())
    if otlp_url:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=otlp_url.rstrip("/") + "/v1/metrics")
        readers.append(PeriodicExportingMetricReader(exporter))
    resource = Resource.create({"service.name": "otel-metrics-forwarder", "service.version": __version__})
    provider = MeterProvider(metric_readers=readers, resource=resource)
    # At exit, a last export gets a short while: a telemetry backend that is down must not hold the exit.
    return Telemetry(provider.get_meter(SCOPE, __version__), lambda: provider.shutdown(timeout_millis=SHUTDOWN_MILLIS))


def prometheus_text(accept: str) -> Tuple[bytes, str]:
    """The current metrics in the Prometheus exposition format the scraper accepts: (body, content type)."""
    from prometheus_client import REGISTRY
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type
