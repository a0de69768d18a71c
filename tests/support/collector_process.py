"""The real OpenTelemetry Collector (build/otelcol-metrics) as a process, and what its tests share.

CollectorProcess runs one collector with every port free and its own persistent-queue
directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence

from support.paths import REPO
from support.processes import BinaryServer, free_ports
from support.prometheus_text import prometheus_sum

CONFIG_DIR = REPO / "collector-config"
BASE_CONFIG = CONFIG_DIR / "otelcol.yaml"
FANOUT_CONFIG = CONFIG_DIR / "fanout.yaml"
BINARY = REPO / "build" / "otelcol-metrics"


class CollectorProcess(BinaryServer):
    """One otelcol-metrics process; restart() keeps its ports and its queue directory."""

    def __init__(
        self, binary: Path, configs: Sequence[Path], forwarder_url: str, workdir: Path, env: Dict[str, str]
    ) -> None:
        super().__init__(workdir / "collector.log")
        self.binary = binary
        self.configs = list(configs)
        self.storage_dir = workdir / "queue"
        self.http_port, self.grpc_port, self.health_port, self.telemetry_port = free_ports(4)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env.update(
            {
                "OTEL_METRICS_COLLECTOR_LISTEN": f"127.0.0.1:{self.http_port}",
                "OTEL_METRICS_COLLECTOR_GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}",
                "OTEL_METRICS_HEALTH_LISTEN": f"127.0.0.1:{self.health_port}",
                "OTEL_METRICS_TELEMETRY_HOST": "127.0.0.1",
                "OTEL_METRICS_TELEMETRY_PORT": str(self.telemetry_port),
                "OTEL_METRICS_FORWARDER_URL": forwarder_url,
                "OTEL_METRICS_STORAGE_DIR": str(self.storage_dir),
                **env,
            }
        )

    @property
    def otlp_url(self) -> str:
        """What the hooks get as CLAUDE_METRICS_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> CollectorProcess:
        args = [str(self.binary), *(f"--config={config}" for config in self.configs)]
        self._start(args, f"http://127.0.0.1:{self.health_port}/", self.env, interval=0.05)
        return self

    def restart(self) -> CollectorProcess:
        self.stop()
        return self.start()

    def telemetry(self, name: str, **labels: str) -> float:
        """The sum of the collector's own metric `name` over samples carrying these labels."""
        return prometheus_sum(
            self.http.get(f"http://127.0.0.1:{self.telemetry_port}/metrics", timeout=5).text, name, **labels
        )

    def drained(self) -> bool:
        """Nothing waits in its sending queues and nothing is being sent: all it took has been handed on."""
        waiting = self.telemetry("otelcol_exporter_queue_size")
        return waiting + self.telemetry("otelcol_exporter_in_flight_requests") == 0

    def accepted(self) -> int:
        """Data points and spans the receiver took (each is in the persistent queue by then)."""
        return int(
            self.telemetry("otelcol_receiver_accepted_metric_points")
            + self.telemetry("otelcol_receiver_accepted_spans")
        )
