"""Real processes on loopback, and waiting for them: the reference endpoint and the forwarder as
processes (`EndpointProcess`, `ForwarderProcess`), the built servers' base (`BinaryServer`: the
collector, Prometheus, Jaeger), `wait_for` a condition, `free_port(s)`, `run_cli`, `require` and
`built` (how a test that needs an optional toolchain skips or fails), and what a process costs
(CPU time, peak memory).

The fixtures that start and stop them are in tests/conftest.py (endpoint_server, start_forwarder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import pytest
import requests

from support.paths import REPO
from support.raw_http import loopback_session

START_SECONDS = 30.0
BINARY_START_SECONDS = 60.0  # Prometheus replays its storage, Jaeger opens its own: slower than ours
STOP_SECONDS = 15.0
# Generous: the product promises delivery within 5 s of a hook; a loaded CI machine gets slack.
ARRIVAL_SECONDS = 30.0
LISTENING = re.compile(r"^listening on (http://\S+:([0-9]+))$")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> Any:
    """The predicate's first truthy value; AssertionError, saying `what` was awaited, when the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
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


def require(available: object, reason: str) -> None:
    """Skip the test when something it needs is missing, saying how to get it; under CI=true, fail instead."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run)")
    pytest.skip(reason)


def built(make_target: str, path: Path, toolchain: str = "go") -> Path:
    """`make TARGET` (when the toolchain is here, so the tests run what the sources say), then PATH.

    Without the toolchain and without PATH the test skips, saying how to build it; under CI=true it fails.
    """
    if shutil.which(toolchain) and shutil.which("make"):
        made = subprocess.run(["make", "--no-print-directory", make_target], cwd=REPO, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.fail(f"make {make_target} failed:\n{made.stdout}\n{made.stderr}")
    require(
        path.exists(), f"{path.relative_to(REPO)} is missing and {toolchain} is not installed: `make {make_target}`"
    )
    return path


def free_ports(count: int) -> List[int]:
    """Distinct ports nobody listens on right now (the OS's choices for port 0, held together)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


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


def outbox_waiting(path: Path) -> int:
    """Payloads waiting for delivery in a forwarder's outbox (read-only, beside the forwarder); 0 without one."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return 0  # created, not yet set up: nothing in it
        raise


class ServerProcess:
    """`python -m otel_metrics.cli <args>` (or `python <script> <args>`); ready once it prints
    `listening on http://HOST:PORT`. Its stderr is kept (.log()), and copied to `log_path` if given."""

    def __init__(
        self,
        args: Sequence[str],
        env: Optional[Dict[str, str]] = None,
        script: str = "",
        log_path: Optional[Path] = None,
    ) -> None:
        self.args = list(args)
        self.env = env
        self.umask = -1  # the process's umask, or -1: this one's
        self.program = [script] if script else ["-m", "otel_metrics.cli"]
        self.log_path = log_path
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
            umask=self.umask,
        )
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc, ready), daemon=True)
        self._reader.start()
        if not ready.wait(START_SECONDS) or not self.url:
            self.stop()
            raise AssertionError(f"{self.args[0]} did not start:\n{self.log()}")
        return self

    def _read_stderr(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        assert proc.stderr is not None
        with open(self.log_path or os.devnull, "a", encoding="utf-8") as copy:
            for line in proc.stderr:  # drained to the end, so the server never blocks on a full pipe
                self._lines.append(line)
                copy.write(line)
                copy.flush()
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
    """`otel-metrics endpoint`: .events() and .sessions() list what it accepted, in arrival order.

    `port` 0 lets the OS choose; a port chosen in advance lets it start after the forwarder that posts there.
    """

    def __init__(
        self, db: Union[Path, str], args: Sequence[str] = (), port: int = 0, log_path: Optional[Path] = None
    ) -> None:
        """db: a SQLite file, or any --db URL (postgresql://...)."""
        super().__init__(["endpoint", "--listen", f"127.0.0.1:{port}", "--db", str(db), *args], log_path=log_path)
        self._http = loopback_session()

    def stored(self, kind: str) -> List[Dict[str, Any]]:
        response = self._http.get(f"{self.url}/{kind}", timeout=10)
        response.raise_for_status()
        return response.json()

    def events(self) -> List[Dict[str, Any]]:
        return self.stored("events")

    def sessions(self) -> List[Dict[str, Any]]:
        return self.stored("sessions")

    def exactly(
        self, kind: str, count: int, settled: Callable[[], Any], timeout: float = ARRIVAL_SECONDS
    ) -> List[Dict[str, Any]]:
        """Exactly `count` payloads of /kind: waits for them, then for `settled` (nothing is left upstream
        that could still arrive), then checks that no more came."""
        wait_for(lambda: len(self.stored(kind)) >= count, timeout, 0.1, f"{count} payload(s) at /{kind}")
        wait_for(settled, timeout, 0.1, f"nothing more on its way to /{kind}")
        payloads = self.stored(kind)
        assert len(payloads) == count, f"expected {count} payload(s) at /{kind}, got {payloads}"
        return payloads

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        self._http.close()
        return super().stop(sig)


class ForwarderProcess(ServerProcess):
    """`otel-metrics forwarder`; .url (= .otlp_url) is the OTLP/HTTP base URL, restart() keeps the port.

    `port` 0 lets the OS choose; a port chosen in advance lets a test start it where hooks already point.
    """

    def __init__(
        self,
        metrics_url: str,
        outbox: Path,
        args: Sequence[str],
        env: Optional[Dict[str, str]],
        port: int = 0,
        log_path: Optional[Path] = None,
    ) -> None:
        self.outbox = outbox
        self.options = ["--metrics-url", metrics_url, "--outbox", str(outbox), *args]
        super().__init__(["forwarder", "--listen", f"127.0.0.1:{port}", *self.options], env, log_path=log_path)

    def exit_status(self, timeout: float = STOP_SECONDS) -> int:
        """Wait for the process to leave by itself; its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def otlp_url(self) -> str:
        """What an OTLP exporter is given as its endpoint (it appends /v1/metrics, /v1/traces)."""
        return self.url

    def waiting(self) -> int:
        """Payloads in its outbox, not yet delivered (nor dead-lettered)."""
        return outbox_waiting(self.outbox)

    def restart(self, sig: int = signal.SIGTERM) -> ForwarderProcess:
        self.stop(sig)
        self.args = ["forwarder", "--listen", f"127.0.0.1:{self.port}", *self.options]
        return self.start()


class BinaryServer:
    """A server started from a built binary (the collector, Prometheus, Jaeger), its output in
    `log_path`, ready once `ready_url` answers 200. `.http` is a loopback session for talking to it
    (closing it after stop() leaves it usable after a start())."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.http = loopback_session()

    def _start(
        self, args: Sequence[str], ready_url: str, env: Optional[Dict[str, str]] = None, interval: float = 0.1
    ) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(list(args), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{args[0]} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.http.get(ready_url, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        try:
            wait_for(ready, BINARY_START_SECONDS, interval)
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{args[0]} did not become ready: {error}\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        """Signal the process and wait for it; its exit status (None if it never ran)."""
        status = stop_process(self.proc, sig)
        self.http.close()
        return status


# What a process costs.


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
