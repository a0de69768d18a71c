"""Events per second through the forwarder into a legacy-endpoint stand-in, and the latency of each.

Real processes on loopback: `otel-metrics forwarder` (default settings: 10 delivery
workers) posting to `tests/support/legacy_sink.py` (answers 200 at once, or after 50 ms),
fed OTLP/HTTP requests of distinct events (1 per request, as a hook sends, and
100, as a collector batches) by keep-alive senders. For each run: events/s
delivered (first request sent to last 2xx), and p50/p99 latency from an event's
OTLP request to the sink's 2xx for it; beside them, what the sink itself takes
from a direct keep-alive client with as many connections as the forwarder has
workers, in the same run, and the forwarder's CPU time per event (which a busy
machine does not inflate the way it does wall time). Then a paced run at 500 events/s (p99 must stay under
1 s), the collector path (`collector -> forwarder -> sink`), measured the same
way, and the forwarder's peak RSS. The one-event runs into the immediate sink are made on each
event loop (`--event-loop asyncio` and `uvloop`), alternating; the others on the default.

    make collector && .venv/bin/python benchmarks/forwarder_throughput.py [--events 6000] [--slow-events 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from collector_throughput import request_bodies  # noqa: E402

from otel_metrics.forwarder.http_client import Connection, target_for  # noqa: E402
from support.collector_process import BASE_CONFIG, BINARY, CollectorProcess  # noqa: E402
from support.paths import REPO  # noqa: E402
from support.processes import ForwarderProcess, ServerProcess, cpu_seconds, peak_rss_mb, wait_for  # noqa: E402

SENDERS = 4  # keep-alive connections posting OTLP at once
MANY_SENDERS = 16  # a gateway forwarder's many exporters: acknowledged requests then share commits
WORKERS = 10  # the forwarder's default
LOOPS = ("asyncio", "uvloop")  # the one-event runs are made on each, side by side
SLOW_SECONDS = 0.05
PACED_RATE = 500.0  # events/s
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *([0-9]+)")


class Sender(asyncio.Protocol):
    """One keep-alive connection POSTing bodies one after another, the next once the last was answered.

    A minimal HTTP/1.1 client on an event loop, its requests rendered beforehand: the load generator
    shares the two cores with the forwarder and the sink, so it must cost little (four http.client
    threads cost more CPU per request than the forwarder itself).
    """

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = bytearray()
        self.index: Optional[int] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._next()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = int(CONTENT_LENGTH.search(head).group(1))  # type: ignore[union-attr]
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        status = int(head[9:12])
        if status in (429, 503):  # the forwarder is full: this body again, a little later
            self.load.loop.call_later(0.05, self._send)
        elif status >= 300:
            self.load.fail(f"answered {status}")
        else:
            self._next()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.index is not None:
            self.load.fail(f"the connection closed: {exc}")

    def _next(self) -> None:
        self.index = self.load.take()
        if self.index is None:
            assert self.transport is not None
            self.transport.close()
            self.load.finished()
            return
        delay = self.load.due(self.index) - time.monotonic()
        if delay > 0:
            self.load.loop.call_later(delay, self._send)
        else:
            self._send()

    def _send(self) -> None:
        assert self.transport is not None and self.index is not None
        if self.load.sent_at is not None:
            self.load.sent_at[self.index] = time.monotonic()
        self.transport.write(self.load.requests[self.index])


class Load:
    """Bodies to POST from `senders` connections (sent_at[i] = when body i went out); with `rate`
    (bodies per second), body i is sent no earlier than start + i / rate."""

    def __init__(self, url: str, path: str, bodies: Sequence[bytes], senders: int,
                 sent_at: Optional[List[float]], rate: Optional[float]) -> None:  # fmt: skip
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/x-protobuf\r\n"
        self.requests = [head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body for body in bodies]
        self.senders = senders
        self.sent_at = sent_at
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._next = 0
        self._running = senders
        self.start = 0.0

    def run(self) -> None:
        async def connect_all() -> None:
            self.start = time.monotonic()
            for _ in range(self.senders):
                await self.loop.create_connection(lambda: Sender(self), self.host, self.port)
            await self.done

        try:
            self.loop.run_until_complete(connect_all())
        finally:
            self.loop.close()

    def take(self) -> Optional[int]:
        if self._next == len(self.requests):
            return None
        self._next += 1
        return self._next - 1

    def due(self, index: int) -> float:
        return self.start + index / self.rate if self.rate else 0.0

    def finished(self) -> None:
        self._running -= 1
        if not self._running and not self.done.done():
            self.done.set_result(None)

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(SystemExit(f"{self.host}:{self.port}: {why}"))


def send_all(url: str, path: str, bodies: Sequence[bytes], threads: int,
             sent_at: Optional[List[float]] = None, rate: Optional[float] = None) -> None:  # fmt: skip
    """POST every body from `threads` keep-alive connections (503s retried)."""
    Load(url, path, bodies, threads, sent_at, rate).run()


def sink_capacity(sink_url: str, count: int) -> float:
    """Requests/s the sink answers to WORKERS keep-alive connections posting a legacy payload each,
    with the forwarder's own HTTP client (so only the forwarder's other work differs)."""
    body = json.dumps({"session_id": "capacity", "name": "bench:capacity"}).encode()
    target = target_for(sink_url)
    left = iter(range(count))

    async def post_all() -> float:
        loop = asyncio.get_running_loop()
        connections = [Connection(target, 5.0, 60.0, loop) for _ in range(WORKERS)]

        async def run(connection: Connection) -> None:
            while next(left, None) is not None:
                await connection.post("events", body)
            connection.close()

        started = time.monotonic()
        await asyncio.gather(*(run(connection) for connection in connections))
        return count / (time.monotonic() - started)

    return asyncio.run(post_all())


def answered(sink_url: str) -> Dict[str, float]:
    parts = urlsplit(sink_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", "/answered")
    document = json.loads(conn.getresponse().read())
    conn.close()
    return document


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Run:
    """One measured load: its events, when each request went out, and the results once the sink has all."""

    def __init__(self, name: str, events: int, per_request: int, senders: int = SENDERS) -> None:
        self.name = name
        self.senders = senders
        self.events = events
        self.per_request = per_request
        self.bodies = request_bodies(events, per_request, name)
        self.sent_at = [0.0] * len(self.bodies)

    def measure(
        self, forwarder_pid: int, target_url: str, sink_url: str, timeout: float, rate: Optional[float] = None
    ) -> Dict[str, float]:
        cpu_before = cpu_seconds(forwarder_pid)
        started = time.monotonic()
        bodies_per_second = rate / self.per_request if rate else None
        send_all(target_url, "/v1/metrics", self.bodies, self.senders, self.sent_at, bodies_per_second)
        prefix = f"{self.name}-"
        wait_for(lambda: sum(key.startswith(prefix) for key in answered(sink_url)) >= self.events, timeout, 0.2)
        done = answered(sink_url)
        times = [done[f"{prefix}{i}"] for i in range(self.events)]
        latencies = [done[f"{prefix}{i}"] - self.sent_at[i // self.per_request] for i in range(self.events)]
        return {
            "cpu_per_event": (cpu_seconds(forwarder_pid) - cpu_before) / self.events,
            "events_per_second": self.events / (max(times) - started),
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000, help="events per run into the immediate sink (6000)")
    parser.add_argument("--slow-events", type=int, default=1500, help="events per run into the 50 ms sink (1500)")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the 500 events/s run (10)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run (300)")
    parser.add_argument("--no-collector", action="store_true", help="skip the collector path")
    args = parser.parse_args()
    with_collector = not args.no_collector
    if with_collector and not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: run `make collector` (or pass --no-collector)")

    print(
        f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"forwarder with {WORKERS} workers, {SENDERS} OTLP senders; default event loop (and the sink's): "
        f"{'uvloop' if importlib.util.find_spec('uvloop') else 'asyncio'}"
    )
    rows: List[Tuple[str, str, float, Dict[str, float], float]] = []
    with tempfile.TemporaryDirectory(prefix="forwarder-bench-") as tmp:
        workdir = Path(tmp)
        started: List[object] = []
        try:
            sinks = {}
            for name, delay in (("immediate", 0.0), ("50 ms", SLOW_SECONDS)):
                sink = ServerProcess(["--delay", str(delay)], script=str(REPO / "tests" / "support" / "legacy_sink.py"))
                started.append(sink)
                sinks[name] = sink.start().url
            capacity = {
                "immediate": sink_capacity(sinks["immediate"], args.events),
                "50 ms": sink_capacity(sinks["50 ms"], args.slow_events),
            }

            def forwarder_to(sink: str, label: str, event_loop: str = "auto") -> ForwarderProcess:
                args = ["--event-loop", event_loop]
                process = ForwarderProcess(sinks[sink], workdir / f"outbox-{label}.sqlite", args, None)
                started.append(process)
                return process.start()

            plan = [  # sink, events per request, senders, events, event loop
                *(("immediate", 1, n, args.events, loop) for n in (SENDERS, MANY_SENDERS) for loop in LOOPS),
                ("immediate", 100, SENDERS, args.events, "auto"),
                ("50 ms", 1, SENDERS, args.slow_events, "auto"),
                ("50 ms", 100, SENDERS, args.slow_events, "auto"),
            ]
            for sink, per_request, senders, events, event_loop in plan:
                label = f"{sink.split()[0]}-{per_request}-{senders}-{event_loop}"
                forwarder = forwarder_to(sink, label, event_loop)
                result = Run(label, events, per_request, senders).measure(
                    forwarder.proc.pid, forwarder.url, sinks[sink], args.timeout
                )
                path = f"forwarder, {per_request} ev/request" + (f", {senders} senders" if senders != SENDERS else "")
                path += f", {event_loop}" if event_loop != "auto" else ""
                rows.append((path, sink, capacity[sink], result, peak_rss_mb(forwarder.proc.pid)))
                forwarder.stop()

            paced_events = int(PACED_RATE * args.paced_seconds)
            forwarder = forwarder_to("immediate", "paced")
            result = Run("paced", paced_events, 10).measure(
                forwarder.proc.pid, forwarder.url, sinks["immediate"], args.timeout, PACED_RATE
            )
            rows.append((f"forwarder, paced {PACED_RATE:.0f} ev/s", "immediate", capacity["immediate"], result,
                         peak_rss_mb(forwarder.proc.pid)))  # fmt: skip
            forwarder.stop()

            if with_collector:
                for per_request in (1, 100):
                    label = f"collector-{per_request}"
                    forwarder = forwarder_to("immediate", label)
                    collector_dir = workdir / label
                    collector_dir.mkdir()
                    collector = CollectorProcess(BINARY, [BASE_CONFIG], forwarder.url, collector_dir, {})
                    started.append(collector)
                    collector.start()
                    result = Run(label, args.events, per_request).measure(
                        forwarder.proc.pid, collector.otlp_url, sinks["immediate"], args.timeout
                    )
                    rows.append((f"collector -> forwarder, {per_request} ev/request", "immediate",
                                 capacity["immediate"], result, peak_rss_mb(forwarder.proc.pid)))  # fmt: skip
                    collector.stop()
                    forwarder.stop()
        finally:
            for process in reversed(started):
                process.stop()

    print()
    print(
        "| path | sink | sink alone (req/s) | delivered (events/s) | p50 | p99 "
        "| forwarder CPU per event | events per forwarder CPU-second | forwarder peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path, sink, alone, result, rss in rows:
        cpu = result["cpu_per_event"]
        print(
            f"| {path} | {sink} | {alone:,.0f} | {result['events_per_second']:,.0f} | "
            f"{result['p50'] * 1000:,.0f} ms | {result['p99'] * 1000:,.0f} ms | {cpu * 1e6:,.0f} µs | "
            f"{1 / cpu:,.0f} | {rss:.0f} MB |"
        )
    limit = WORKERS / SLOW_SECONDS
    print(f"\nThe 50 ms sink allows at most {limit:.0f} events/s through {WORKERS} workers (one POST each at a time).")


if __name__ == "__main__":
    main()
