"""The reference endpoint and the forwarder as real processes on loopback, and `wait_for`.

The fixtures that start and stop them are in conftest.py (endpoint_server, forwarder_server).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import requests

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 30.0
STOP_SECONDS = 15.0
LISTENING = re.compile(r"^listening on (http://\S+:([0-9]+))$")


# One sample line of the Prometheus text format: name{labels} value
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def prometheus_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` carrying these labels, in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        sample = SAMPLE.match(line)
        if not sample or sample.group(1) != name:
            continue
        if all(f'{key}="{value}"' in (sample.group(2) or "") for key, value in labels.items()):
            total += float(sample.group(3))
    return total


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """The predicate's first truthy value; AssertionError when the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def run_cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m otel_metrics.cli <args>` to its end: exit status, stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "otel_metrics.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_process(proc: Optional[subprocess.Popen], sig: int = signal.SIGTERM) -> Optional[int]:
    """Signal a process, wait for it (killing it after STOP_SECONDS); its exit status, None if it never ran."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess:
    """`python -m otel_metrics.cli <args>` (or `python <script> <args>`); ready once it prints
    `listening on http://HOST:PORT`."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, script: str = "") -> None:
        self.args = list(args)
        self.env = env
        self.program = [script] if script else ["-m", "otel_metrics.cli"]
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.port = 0
        self._lines: List[str] = []
        self._reader: Optional[threading.Thread] = None

    def start(self) -> ServerProcess:
        self._lines = []
        ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, *self.program, *self.args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc, ready), daemon=True)
        self._reader.start()
        if not ready.wait(START_SECONDS):
            self.stop()
            raise AssertionError(f"{self.args[0]} did not start:\n{self.log()}")
        return self

    def _read_stderr(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # drained to the end, so the server never blocks on a full pipe
            self._lines.append(line)
            found = LISTENING.match(line.strip())
            if found and not ready.is_set():
                self.url, self.port = found.group(1), int(found.group(2))
                ready.set()
        ready.set()  # exited before listening: start() reports it

    def log(self) -> str:
        return "".join(self._lines)

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        """Signal the process and wait for it; its exit status (None if it never ran)."""
        status = stop_process(self.proc, sig)
        if self._reader is not None:
            self._reader.join(STOP_SECONDS)
        return status


class EndpointProcess(ServerProcess):
    """`otel-metrics endpoint`: .events() and .sessions() list what it accepted, in arrival order."""

    def __init__(self, db: Path) -> None:
        super().__init__(["endpoint", "--listen", "127.0.0.1:0", "--db", str(db)])
        self._http = requests.Session()
        self._http.trust_env = False  # tests may set proxy variables; this is loopback

    def stored(self, kind: str) -> List[Dict[str, Any]]:
        response = self._http.get(f"{self.url}/{kind}", timeout=10)
        response.raise_for_status()
        return response.json()

    def events(self) -> List[Dict[str, Any]]:
        return self.stored("events")

    def sessions(self) -> List[Dict[str, Any]]:
        return self.stored("sessions")

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        self._http.close()
        return super().stop(sig)


class ForwarderProcess(ServerProcess):
    """`otel-metrics forwarder`; .url (= .otlp_url) is the OTLP/HTTP base URL, restart() keeps the port."""

    def __init__(self, metrics_url: str, outbox: Path, args: Sequence[str], env: Optional[Dict[str, str]]) -> None:
        self.outbox = outbox
        self.options = ["--metrics-url", metrics_url, "--outbox", str(outbox), *args]
        super().__init__(["forwarder", "--listen", "127.0.0.1:0", *self.options], env)

    def exit_status(self, timeout: float = STOP_SECONDS) -> int:
        """Wait for the process to leave by itself; its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def otlp_url(self) -> str:
        """What an OTLP exporter is given as its endpoint (it appends /v1/metrics, /v1/traces)."""
        return self.url

    def restart(self, sig: int = signal.SIGTERM) -> ForwarderProcess:
        self.stop(sig)
        self.args = ["forwarder", "--listen", f"127.0.0.1:{self.port}", *self.options]
        return self.start()


class StaticServer:
    """An in-thread HTTP server on loopback answering GETs from a dict of path -> bytes (404 otherwise)."""

    def __init__(self, files: Dict[str, bytes]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        served = files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = served.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.files = files
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
