"""Events per second through one collector and one forwarder to the reference endpoint, on loopback.

Processes as deployed: build/otelcol-metrics (collector-config/otelcol.yaml, persistent
queue on disk), `otel-metrics forwarder`, `otel-metrics endpoint` (SQLite). A load
generator posts OTLP/HTTP requests of distinct events, encoded by the same SDK code the
hooks use, from a few threads; the clock runs until the endpoint has stored every event.
The same load is also sent straight to the forwarder, and to the collector with nothing
slow behind it (an OTLP sink answering 200), to show which stage sets the pace.

Bounded: --events events per scenario (default 3000), --timeout seconds each (default 180).

    make collector && .venv/bin/python benchmarks/collector_throughput.py [--events 3000] [--per-request 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from otel_metrics import __version__  # noqa: E402
from otel_metrics.model import Event  # noqa: E402
from support.collector_process import BASE_CONFIG, BINARY, CollectorProcess  # noqa: E402
from support.otlp_requests import otlp_metrics  # noqa: E402
from support.otlp_sink import OtlpSink  # noqa: E402
from support.processes import EndpointProcess, ForwarderProcess, ServerProcess, wait_for  # noqa: E402
from support.raw_http import loopback_session  # noqa: E402

SENDERS = 4  # concurrent load threads: a team's hooks, not one exporter


class Processes:
    """Every process started here, stopped at the end whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: List[ServerProcess | CollectorProcess] = []

    def _start(self, process: ServerProcess | CollectorProcess):
        self.started.append(process)
        return process.start()

    def endpoint_and_forwarder(self, name: str) -> tuple:
        """A reference endpoint and a forwarder posting to it: (endpoint, forwarder URL)."""
        endpoint = self._start(EndpointProcess(self.workdir / f"endpoint-{name}.sqlite"))
        forwarder = self._start(ForwarderProcess(endpoint.url, self.workdir / f"outbox-{name}.sqlite", [], None))
        return endpoint, forwarder.otlp_url

    def collector(self, forwarder_url: str) -> str:
        workdir = self.workdir / f"collector-{len(self.started)}"
        workdir.mkdir()
        return self._start(CollectorProcess(BINARY, [BASE_CONFIG], forwarder_url, workdir, {})).otlp_url

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def request_bodies(count: int, per_request: int, run: str) -> List[bytes]:
    """OTLP protobuf bodies holding `count` distinct slash-command events."""
    now = int(time.time())
    events = [
        Event(
            kind="slash_command",
            name=f"bench:command-{i % 20}",
            prompt_length=10 + i % 90,
            session_id=f"{run}-{i}",
            timestamp=now,
            user_id="00000000-0000-4000-8000-000000000000",
            version=__version__,
            os="linux",
        )
        for i in range(count)
    ]
    return [otlp_metrics(*events[start : start + per_request]) for start in range(0, count, per_request)]


def post_all(url: str, bodies: List[bytes], timeout: float) -> float:
    """Posts every body from SENDERS threads (retrying 503s); seconds it took."""
    local = threading.local()
    deadline = time.monotonic() + timeout

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = loopback_session()
        while True:
            response = session.post(
                f"{url}/v1/metrics", data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=30
            )
            if response.status_code == 200:
                return
            if response.status_code not in (429, 503) or time.monotonic() > deadline:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text[:200]}")
            time.sleep(0.1)

    started = time.perf_counter()
    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(post, bodies))
    return time.perf_counter() - started


def through_pipeline(
    endpoint: EndpointProcess, target_url: str, bodies: List[bytes], expected: int, timeout: float
) -> Dict[str, float]:
    """Posts the load to target_url; times until the endpoint holds `expected` events."""
    started = time.perf_counter()
    accepted = post_all(target_url, bodies, timeout)
    wait_for(lambda: len(endpoint.events()) >= expected, timeout, 0.05)
    return {"accepted_seconds": accepted, "delivered_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per scenario (3000)")
    parser.add_argument("--per-request", type=int, default=1, help="events per OTLP request (1, as a hook sends)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per scenario (180)")
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: run `make collector`")

    n = args.events
    print(
        f"# {n} events, {args.per_request} per OTLP request, {SENDERS} senders; {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        processes = Processes(Path(tmp))
        sink = OtlpSink()
        try:
            # 1. Collector alone, nothing slow behind it.
            collector_url = processes.collector(sink.url)
            bodies = request_bodies(n, args.per_request, "sink")
            started = time.perf_counter()
            accepted = post_all(collector_url, bodies, args.timeout)
            wait_for(lambda: sink.event_count() >= n, args.timeout, 0.05)
            delivered = time.perf_counter() - started
            results["collector -> sink (200 at once)"] = {"accepted_seconds": accepted, "delivered_seconds": delivered}

            # 2. Forwarder -> endpoint, no collector (the embedded default).
            endpoint, forwarder_url = processes.endpoint_and_forwarder("direct")
            bodies = request_bodies(n, args.per_request, "direct")
            results["forwarder -> endpoint"] = through_pipeline(endpoint, forwarder_url, bodies, n, args.timeout)

            # 3. Collector -> forwarder -> endpoint (docker-compose, gateway).
            endpoint, forwarder_url = processes.endpoint_and_forwarder("full")
            collector_url = processes.collector(forwarder_url)
            bodies = request_bodies(n, args.per_request, "full")
            results["collector -> forwarder -> endpoint"] = through_pipeline(
                endpoint, collector_url, bodies, n, args.timeout
            )
        finally:
            processes.stop_all()
            sink.stop()

    print(f"{'path':<36} {'accepted ev/s':>14} {'delivered ev/s':>15}")
    for path, result in results.items():
        print(f"{path:<36} {n / result['accepted_seconds']:>14.0f} {n / result['delivered_seconds']:>15.0f}")


if __name__ == "__main__":
    main()
