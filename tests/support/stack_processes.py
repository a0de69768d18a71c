"""Prometheus and Jaeger as real processes (the builds of `make prometheus jaeger`), configured as
docker-compose.yml runs them: the compose file's Prometheus flags, deploy/prometheus/prometheus.yml
and deploy/jaeger/config.yaml, with loopback ports in place of the compose services.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import requests
import yaml

from support.paths import REPO
from support.processes import BinaryServer, free_ports

PROMETHEUS_BINARY = REPO / "build" / "prometheus"
JAEGER_BINARY = REPO / "build" / "jaeger"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
JAEGER_CONFIG = REPO / "deploy" / "jaeger" / "config.yaml"
Labels = Dict[str, str]


def compose_prometheus_flags() -> List[str]:
    """The compose service's flags, less the two paths of its container (config file, storage)."""
    command = COMPOSE["services"]["prometheus"]["command"]
    return [flag for flag in command if not flag.startswith(("--config.file=", "--storage.tsdb.path="))]


class PrometheusProcess(BinaryServer):
    """deploy/prometheus/prometheus.yml with each compose target (`collector:8888`) replaced by a
    loopback address, scraped every `scrape_interval`; `flags` are the compose file's unless given."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        targets: Dict[str, str],
        scrape_interval: str = "1s",
        flags: Optional[List[str]] = None,
    ) -> None:
        super().__init__(workdir / "prometheus.log")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.binary = binary
        (self.port,) = free_ports(1)
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"]["scrape_interval"] = scrape_interval
        for job in config.get("scrape_configs", []):
            for static in job["static_configs"]:
                static["targets"] = [targets[target] for target in static["targets"] if target in targets]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.flags = compose_prometheus_flags() if flags is None else flags

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_url(self) -> str:
        """What the collector's fan-out is given (its exporter appends /v1/metrics)."""
        return f"{self.url}/api/v1/otlp"

    def start(self) -> PrometheusProcess:
        args = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self.flags,
        ]
        self._start(args, f"{self.url}/-/ready")
        return self

    def _api(self, path: str, **params: Any) -> Any:
        response = self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        document = response.json()
        if document.get("status") != "success":
            raise AssertionError(f"{path} {params}: {document}")
        return document["data"]

    def query(self, expr: str, at: Optional[float] = None) -> List[Tuple[Labels, float]]:
        """An instant query: (labels, value) per series."""
        data = self._api("query", query=expr, time=at if at is not None else time.time())
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> List[Tuple[Labels, List[float]]]:
        """A range query: (labels, values at each step) per series."""
        data = self._api("query_range", query=expr, start=start, end=end, step=step)
        return [(sample["metric"], [float(v) for _, v in sample["values"]]) for sample in data["result"]]

    def value(self, expr: str, at: Optional[float] = None) -> Optional[float]:
        """The one value of an expression that gives at most one series (None: no series)."""
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return result[0][1] if result else None

    def post_otlp(self, body: bytes) -> requests.Response:
        """One OTLP/HTTP metrics request (protobuf), as the collector's exporter sends it."""
        return self.http.post(
            f"{self.otlp_url}/v1/metrics", data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30
        )


class JaegerProcess(BinaryServer):
    """Jaeger v2 with deploy/jaeger/config.yaml, every port free."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__(workdir / "jaeger.log")
        self.binary = binary
        ports = free_ports(5)
        self.otlp_http, self.otlp_grpc, self.query_http, self.query_grpc, self.health = ports
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JAEGER_"))}
        self.env.update(
            {
                "JAEGER_OTLP_HTTP_LISTEN": f"127.0.0.1:{self.otlp_http}",
                "JAEGER_OTLP_GRPC_LISTEN": f"127.0.0.1:{self.otlp_grpc}",
                "JAEGER_QUERY_HTTP_LISTEN": f"127.0.0.1:{self.query_http}",
                "JAEGER_QUERY_GRPC_LISTEN": f"127.0.0.1:{self.query_grpc}",
                "JAEGER_HEALTH_LISTEN": f"127.0.0.1:{self.health}",
            }
        )

    @property
    def otlp_url(self) -> str:
        """What the collector's fan-out is given (its exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.otlp_http}"

    @property
    def query_url(self) -> str:
        """Jaeger's query API: what Grafana's Jaeger data source talks to."""
        return f"http://127.0.0.1:{self.query_http}"

    def start(self) -> JaegerProcess:
        self._start([str(self.binary), f"--config={JAEGER_CONFIG}"], f"http://127.0.0.1:{self.health}/status", self.env)
        return self

    def traces(self, service: str, operation: str, lookback_seconds: float = 86400) -> List[Dict[str, Any]]:
        """The traces the query API finds (the JSON of Jaeger's /api/traces, which the UI and Grafana use)."""
        now_us = int(time.time() * 1e6)
        response = self.http.get(
            f"{self.query_url}/api/traces",
            params={
                "service": service,
                "operation": operation,
                "start": now_us - int(lookback_seconds * 1e6),
                "end": now_us,
                "limit": 1000,
            },
            timeout=30,
        )
        response.raise_for_status()
        return response.json()["data"]
