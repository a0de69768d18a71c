"""Real processes on loopback: the reference endpoint, the forwarder, PostgreSQL; `wait_for`, `free_ports`;
and what tests do to servers from outside: raw connections, simultaneous ones, slow ones, and the
processes' CPU time and peak memory.

The fixtures that start and stop them are in conftest.py (endpoint_server, forwarder_server,
postgres_url).
"""

from __future__ import annotations

import glob
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

import pytest
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


class ServerProcess:
    """`python -m otel_metrics.cli <args>` (or `python <script> <args>`); ready once it prints
    `listening on http://HOST:PORT`."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, script: str = "") -> None:
        self.args = list(args)
        self.env = env
        self.umask = -1  # the process's umask, or -1: this one's
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

    def __init__(self, db: Union[Path, str], args: Sequence[str] = ()) -> None:
        """db: a SQLite file, or any --db URL (postgresql://...)."""
        super().__init__(["endpoint", "--listen", "127.0.0.1:0", "--db", str(db), *args])
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


def postgres_bindir() -> Optional[Path]:
    """Where Debian's PostgreSQL server programs are (newest major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port, trust authentication, no unix socket.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (Debian's package
    creates it), in a directory under the temp dir that user can reach (pytest's are private).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.root = Path(tempfile.mkdtemp(prefix="otel-metrics-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._as_user: Dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self._databases = 0

    def start(self) -> PostgresServer:
        """initdb, then start_server()."""
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._as_user,
        )
        return self.start_server()

    def start_server(self) -> PostgresServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **self._as_user,
            )
        try:
            wait_for(self._accepting, START_SECONDS, 0.1)
        except AssertionError:
            self.stop()
            raise AssertionError(f"PostgreSQL did not start:\n{self.log()}") from None
        return self

    def stop_server(self) -> None:
        """The server process only; start_server() brings it back on the same port and data."""
        stop_process(self.proc, signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
        self.proc = None

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"PostgreSQL exited with {self.proc.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
        )
        return ready.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)


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


# Raw connections: what no well-behaved client sends.


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    except ConnectionResetError:
        return received


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a new connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def connect_all_while_stopped(
    proc: subprocess.Popen, port: int, count: int, seconds: float = 2.0
) -> List[socket.socket]:
    """Open `count` connections while the server process is stopped (SIGSTOP), so that none is
    accepted and each must wait in its listen backlog; the connections whose handshake completed.

    Beyond the backlog the kernel drops the SYNs (the client retries after 1 s, 3 s...), so those
    stay unconnected for `seconds`. The process is resumed before returning; the caller closes them.
    """
    sockets = []
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
        connected: List[socket.socket] = []
        pending = list(sockets)
        deadline = time.monotonic() + seconds
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
            for sock in writable:
                pending.remove(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(sock)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    for sock in sockets:
        if sock not in connected:
            sock.close()
    return connected


def answers_on(sockets: List[socket.socket], requests: List[bytes], timeout: float = 30.0) -> List[bytes]:
    """Send each connection its request (with `Connection: close`), all at once; each one's answer."""
    for sock, request in zip(sockets, requests):
        sock.setblocking(True)
        sock.sendall(request)
    results: List[bytes] = [b""] * len(sockets)

    def read(index: int) -> None:
        results[index] = read_until_closed(sockets[index], timeout)

    readers = [threading.Thread(target=read, args=(index,)) for index in range(len(sockets))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return results


class Tricklers:
    """Connections that send a request head one byte at a time, every `interval` seconds, forever:
    each read arrives well within any per-read timeout. .open() says how many the server has not
    closed; .answers holds what the server sent on each before closing it."""

    HEAD = b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nX-Slow: "

    def __init__(self, port: int, count: int, interval: float = 0.3) -> None:
        self.interval = interval
        self.sockets: List[socket.socket] = []
        self.answers: Dict[socket.socket, bytes] = {}
        self.closed: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(self.HEAD)
            self.sockets.append(sock)
            self._check(sock)
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def open(self) -> int:
        with self._lock:
            for sock in self.sockets:
                self._check(sock)
            return len(self.sockets) - len(self.closed)

    def _check(self, sock: socket.socket) -> None:
        if sock in self.closed:
            return
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        self.answers[sock] = self.answers.get(sock, b"") + data
        if not data:
            self.closed.add(sock)

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for sock in self.sockets:
                    if sock in self.closed:
                        continue
                    try:
                        sock.send(b"x")
                    except OSError:
                        self.closed.add(sock)
                    self._check(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()
