"""The embedded default: the plugin's own forwarder, on loopback, one per state directory.

When no OTLP endpoint is configured, the exporter sends its OTLP to an
`otel-metrics forwarder` it starts itself, which posts the legacy payloads to
the metrics URL. The forwarder listens on a port the OS chooses (so it never
collides with, nor is mistaken for, a collector the user runs on 4318) and
publishes its address in `<state>/forwarder/address.json`; its outbox lock
keeps it to one per state directory, even with parallel sessions; it leaves
once idle with an empty outbox. The exporter starts it again when it is needed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Dict, Mapping, Optional

from .. import address_file, config

log = logging.getLogger("otel_metrics.exporter")

FORWARDER_DIR = "forwarder"
ADDRESS_FILE = "address.json"
OUTBOX_FILE = "outbox.sqlite"
LOG_FILE = "forwarder.log"
LOG_MAX_BYTES = 1024 * 1024  # a longer log is started afresh when the forwarder starts
DEFAULT_IDLE_SECONDS = 600.0
START_SECONDS = 30.0  # a cold start imports protobuf and requests; a busy machine is slow
STOP_SECONDS = 10.0


def directory(state: str) -> str:
    return os.path.join(state, FORWARDER_DIR)


def running(state: str) -> Optional[Dict[str, object]]:
    """The published address of a live local forwarder: {"url", "pid", "metrics_url"}, or None."""
    address = address_file.read(os.path.join(directory(state), ADDRESS_FILE))
    if address is None:
        return None
    try:
        os.kill(address["pid"], 0)  # gone (killed, rebooted) leaves a stale file behind
    except OSError:
        return None
    return address


class LocalForwarder:
    def __init__(self, state: str, env: Mapping[str, str], idle_seconds: float) -> None:
        self.state = state
        self.env = env
        self.idle_seconds = idle_seconds

    def url(self, metrics_url: str) -> Optional[str]:
        """The OTLP base URL of a forwarder posting to metrics_url, started if need be; None if it cannot start."""
        address = running(self.state)
        if address is not None and address.get("metrics_url") == metrics_url:
            return str(address["url"])
        if address is not None:  # the metrics URL was changed: what waits in the outbox goes to the new one
            log.info("metrics URL changed to %s: restarting the local forwarder", metrics_url)
            self._stop(int(address["pid"]))  # type: ignore[call-overload]
        return self._start(metrics_url)

    def _start(self, metrics_url: str) -> Optional[str]:
        folder = directory(self.state)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "otel_metrics.cli",
            "forwarder",
            "--listen",
            "127.0.0.1:0",
            "--metrics-url",
            metrics_url,
            "--outbox",
            os.path.join(folder, OUTBOX_FILE),
            "--address-file",
            os.path.join(folder, ADDRESS_FILE),
            "--idle-exit",
            str(self.idle_seconds),
        ]
        log_path = os.path.join(folder, LOG_FILE)
        mode = "ab" if _size(log_path) < LOG_MAX_BYTES else "wb"
        with open(log_path, mode) as output:
            os.chmod(log_path, 0o600)
            proc = subprocess.Popen(
                argv,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                close_fds=True,
                start_new_session=True,  # outlives this exporter, which leaves when idle
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            address = running(self.state)
            if address is not None:
                return str(address["url"])
            status = proc.poll()
            if status is not None and status != config.FORWARDER_EXIT_OUTBOX_IN_USE:
                log.error("the local forwarder exited with status %s; see %s", status, log_path)
                return None
            time.sleep(0.05)  # refused as a second one: another one is starting; its address comes soon
        log.error("the local forwarder did not start within %.0f s; see %s", START_SECONDS, log_path)
        return None

    def _stop(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and running(self.state) is not None:
            time.sleep(0.05)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
