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
import gzip
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, List

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402

from otel_metrics import __version__  # noqa: E402
from otel_metrics.emit import events_to_metrics  # noqa: E402
from otel_metrics.model import Event  # noqa: E402

COLLECTOR = REPO / "build" / "otelcol-metrics"
CONFIG = REPO / "collector-config" / "otelcol.yaml"
LISTENING = re.compile(r"listening on (http://\S+:[0-9]+)")
SENDERS = 4  # concurrent load threads: a team's hooks, not one exporter


def free_ports(count: int) -> List[int]:
    """Distinct free loopback ports (held together while the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Every process started here, stopped at the end whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: List[subprocess.Popen] = []

    def python_server(self, *args: str) -> str:
        """`otel-metrics ARGS` on a free port; its base URL once it says it listens."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_metrics.cli", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        assert proc.stderr is not None
        for line in proc.stderr:
            found = LISTENING.search(line)
            if found:
                # Keep draining its log so it never blocks on a full pipe.
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                return found.group(1)
        raise SystemExit(f"otel-metrics {args[0]} exited with {proc.wait()}")

    def collector(self, forwarder_url: str) -> str:
        ports = dict(zip(("http", "grpc", "health", "telemetry"), free_ports(4)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            OTEL_METRICS_COLLECTOR_LISTEN=f"127.0.0.1:{ports['http']}",
            OTEL_METRICS_COLLECTOR_GRPC_LISTEN=f"127.0.0.1:{ports['grpc']}",
            OTEL_METRICS_HEALTH_LISTEN=f"127.0.0.1:{ports['health']}",
            OTEL_METRICS_TELEMETRY_PORT=str(ports["telemetry"]),
            OTEL_METRICS_FORWARDER_URL=forwarder_url,
            OTEL_METRICS_STORAGE_DIR=str(self.workdir / f"queue-{len(self.started)}"),
        )
        log_path = self.workdir / f"collector-{len(self.started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(COLLECTOR), f"--config={CONFIG}"], env=env, stdout=log, stderr=log)
        self.started.append(proc)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"the collector exited with {proc.returncode}; see {log_path}")
            try:
                return requests.get(f"http://127.0.0.1:{ports['health']}/", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, 30, "the collector")
        return f"http://127.0.0.1:{ports['http']}"

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class CountingSink:
    """An OTLP/HTTP receiver that answers 200 at once and counts the data points it got."""

    def __init__(self) -> None:
        self.points = 0
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportMetricsServiceRequest.FromString(body)
                points = sum(
                    len(metric.sum.data_points)
                    for rm in request.resource_metrics
                    for sm in rm.scope_metrics
                    for metric in sm.metrics
                )
                with lock:
                    sink.points += points
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    bodies = []
    for start in range(0, count, per_request):
        [data] = events_to_metrics(events[start : start + per_request])
        bodies.append(encode_metrics(data).SerializeToString())
    return bodies


def post_all(url: str, bodies: List[bytes], timeout: float) -> float:
    """Posts every body from SENDERS threads (retrying 503s); seconds it took."""
    local = threading.local()
    deadline = time.monotonic() + timeout

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
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


def stored_events(endpoint_url: str) -> int:
    return len(requests.get(f"{endpoint_url}/events", timeout=30).json())


def through_pipeline(
    processes: Processes, endpoint_url: str, target_url: str, bodies: List[bytes], expected: int, timeout: float
) -> Dict[str, float]:
    """Posts the load to target_url; times until the endpoint holds `expected` events."""
    started = time.perf_counter()
    accepted = post_all(target_url, bodies, timeout)
    wait_until(lambda: stored_events(endpoint_url) >= expected, timeout, "the endpoint to store every event")
    return {"accepted_seconds": accepted, "delivered_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per scenario (3000)")
    parser.add_argument("--per-request", type=int, default=1, help="events per OTLP request (1, as a hook sends)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per scenario (180)")
    args = parser.parse_args()
    if not COLLECTOR.exists():
        raise SystemExit(f"{COLLECTOR} is missing: run `make collector`")

    n = args.events
    print(
        f"# {n} events, {args.per_request} per OTLP request, {SENDERS} senders; {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        workdir = Path(tmp)
        processes = Processes(workdir)
        sink = CountingSink()
        try:
            # 1. Collector alone, nothing slow behind it.
            collector_url = processes.collector(sink.url)
            bodies = request_bodies(n, args.per_request, "sink")
            started = time.perf_counter()
            accepted = post_all(collector_url, bodies, args.timeout)
            wait_until(lambda: sink.points >= n, args.timeout, "the sink to get every event")
            delivered = time.perf_counter() - started
            results["collector -> sink (200 at once)"] = {"accepted_seconds": accepted, "delivered_seconds": delivered}

            # 2. Forwarder -> endpoint, no collector (the embedded default).
            endpoint_url = processes.python_server(
                "endpoint", "--listen", "127.0.0.1:0", "--db", str(workdir / "endpoint-direct.sqlite")
            )
            forwarder_url = processes.python_server(
                "forwarder",
                "--listen",
                "127.0.0.1:0",
                "--metrics-url",
                endpoint_url,
                "--outbox",
                str(workdir / "outbox-direct.sqlite"),
            )
            results["forwarder -> endpoint"] = through_pipeline(
                processes, endpoint_url, forwarder_url, request_bodies(n, args.per_request, "direct"), n, args.timeout
            )

            # 3. Collector -> forwarder -> endpoint (docker-compose, gateway).
            endpoint_url = processes.python_server(
                "endpoint", "--listen", "127.0.0.1:0", "--db", str(workdir / "endpoint-full.sqlite")
            )
            forwarder_url = processes.python_server(
                "forwarder",
                "--listen",
                "127.0.0.1:0",
                "--metrics-url",
                endpoint_url,
                "--outbox",
                str(workdir / "outbox-full.sqlite"),
            )
            collector_url = processes.collector(forwarder_url)
            results["collector -> forwarder -> endpoint"] = through_pipeline(
                processes, endpoint_url, collector_url, request_bodies(n, args.per_request, "full"), n, args.timeout
            )
        finally:
            processes.stop_all()
            sink.stop()

    print(f"{'path':<36} {'accepted ev/s':>14} {'delivered ev/s':>15}")
    for path, result in results.items():
        print(f"{path:<36} {n / result['accepted_seconds']:>14.0f} {n / result['delivered_seconds']:>15.0f}")


if __name__ == "__main__":
    main()
