"""The reference endpoint and the forwarder as real processes on loopback, and the hooks' exporters.

Payloads arrive asynchronously (the hooks hand off to a detached exporter), so
readers poll with a deadline instead of sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from claude_cli import PYTHON_BIN_DIR

OTEL_METRICS = str(PYTHON_BIN_DIR / "otel-metrics")
START_SECONDS = 30.0
# Generous: the product promises delivery within 5 s of a hook; a loaded CI machine gets slack.
ARRIVAL_SECONDS = 30.0
# After the expected payloads arrived, how long to keep looking for duplicates.
SETTLE_SECONDS = 1.5
# What `otel-metrics endpoint|forwarder` print once they accept connections.
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:([0-9]+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Service:
    """One `otel-metrics` server subcommand as a process on 127.0.0.1 (port 0: the OS chooses)."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, port: int = 0) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [OTEL_METRICS, name, "--listen", f"127.0.0.1:{port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.port = int(wait_until(self._announced_port, START_SECONDS, f"{name} to listen"))
        except AssertionError:
            self.stop()
            raise AssertionError(f"{name} did not start; its output:\n{self.output()}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def _announced_port(self) -> Optional[str]:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
        found = LISTENING.search(self.output())
        return found.group(1) if found else None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Endpoint(Service):
    """`otel-metrics endpoint`: GET /events and GET /sessions list what was accepted, in arrival order."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("endpoint", ["--db", str(workdir / "endpoint.sqlite")], workdir / "endpoint.log")

    def stored(self, kind: str) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/{kind}", timeout=10) as response:
            payloads = json.loads(response.read())
        assert isinstance(payloads, list), payloads
        return payloads

    def wait_for(self, kind: str, count: int, timeout: float = ARRIVAL_SECONDS) -> List[Dict[str, Any]]:
        """Exactly `count` payloads of /kind: waits for them, then a little longer for duplicates."""
        wait_until(lambda: len(self.stored(kind)) >= count, timeout, f"{count} payload(s) at /{kind}")
        time.sleep(SETTLE_SECONDS)
        payloads = self.stored(kind)
        assert len(payloads) == count, f"expected {count} payload(s) at /{kind}, got {payloads}"
        return payloads


class Forwarder(Service):
    """`otel-metrics forwarder` posting to `metrics_url`; a given port lets a test start it where hooks point."""

    def __init__(self, workdir: Path, metrics_url: str, port: int = 0) -> None:
        run_dir = Path(tempfile.mkdtemp(prefix="forwarder-", dir=workdir))
        args = ["--metrics-url", metrics_url, "--outbox", str(run_dir / "outbox.sqlite")]
        super().__init__("forwarder", args, run_dir / "forwarder.log", port)


def plugin_pids(state_dir: Path) -> List[int]:
    """Processes the hooks started for this state directory: exporters and local forwarders (Linux /proc)."""
    markers = {f"CLAUDE_METRICS_DIR={state_dir}".encode(), f"CLAUDE_PLUGIN_DATA={state_dir}".encode()}
    pids = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        ours = b"otel_metrics.exporter" in cmdline or (b"otel_metrics.cli" in cmdline and b"forwarder" in cmdline)
        if ours and markers & set(environ):
            pids.append(int(entry.name))
    return pids


def stop_plugin_processes(state_dir: Path, timeout: float) -> List[int]:
    """Let this state directory's exporters and forwarders idle out; end those still running. Returns those."""
    try:
        wait_until(lambda: not plugin_pids(state_dir), timeout, "the plugin's processes to idle out")
        return []
    except AssertionError:
        survivors = plugin_pids(state_dir)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return survivors
