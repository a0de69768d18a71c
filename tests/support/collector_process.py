"""The real OpenTelemetry Collector (build/otelcol-metrics) as a process, and what its tests share.

CollectorProcess runs one collector with every port free and its own persistent-queue
directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

import requests

from support.paths import REPO
from support.processes import free_ports, stop_process, wait_for
from support.prometheus_text import prometheus_sum
from support.raw_http import loopback_session

CONFIG_DIR = REPO / "collector-config"
BASE_CONFIG = CONFIG_DIR / "otelcol.yaml"
FANOUT_CONFIG = CONFIG_DIR / "fanout.yaml"
BINARY = REPO / "build" / "otelcol-metrics"
START_SECONDS = 30.0


class CollectorProcess:
    """One otelcol-metrics process; restart() keeps its ports and its queue directory."""

    def __init__(
        self, binary: Path, configs: Sequence[Path], forwarder_url: str, workdir: Path, env: Dict[str, str]
    ) -> None:
        self.binary = binary
        self.configs = list(configs)
        self.storage_dir = workdir / "queue"
        self.log_path = workdir / "collector.log"
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
        self.proc: Optional[subprocess.Popen] = None
        self._http = loopback_session()

    @property
    def otlp_url(self) -> str:
        """What the hooks get as CLAUDE_METRICS_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> CollectorProcess:
        args = [str(self.binary), *(f"--config={config}" for config in self.configs)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_for(self._healthy, START_SECONDS, 0.05)
        except AssertionError:
            self.stop()
            raise AssertionError(f"the collector did not become healthy:\n{self.log()}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the collector exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self._http.get(f"http://127.0.0.1:{self.health_port}/", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        return stop_process(self.proc, sig)

    def restart(self) -> CollectorProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def telemetry(self, name: str, **labels: str) -> float:
        """The sum of the collector's own metric `name` over samples carrying these labels."""
        return prometheus_sum(
            self._http.get(f"http://127.0.0.1:{self.telemetry_port}/metrics", timeout=5).text, name, **labels
        )

    def accepted(self) -> int:
        """Data points and spans the receiver took (each is in the persistent queue by then)."""
        return int(
            self.telemetry("otelcol_receiver_accepted_metric_points")
            + self.telemetry("otelcol_receiver_accepted_spans")
        )

    def close(self) -> None:
        self.stop()
        self._http.close()
