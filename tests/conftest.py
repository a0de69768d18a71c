"""Shared fixtures: a state directory, loopback OTLP receivers, and the reference endpoint, the
forwarder and PostgreSQL as real processes on loopback.

`state` is an empty state directory whose background processes (exporters, a local forwarder) are
killed afterwards; `sink` is an OtlpSink and `start_otlp_sink` makes more; `endpoint_server` is a
running `otel-metrics endpoint`; `start_forwarder` starts `otel-metrics forwarder` processes,
restartable on their port; `postgres_url` is a new empty database on a real PostgreSQL server (one
per test session). The fixtures stop every process they started; the servers' output is also kept
in tmp_path (*.log). Helpers are in tests/support (wait_for in support.processes, with `require`:
how a test that needs an optional toolchain skips or fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

from support.otlp_sink import OtlpSink
from support.plugin_hooks import kill_exporters
from support.postgres_server import PostgresServer, postgres_bindir
from support.processes import EndpointProcess, ForwarderProcess, require


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    yield state_dir
    kill_exporters(state_dir)


@pytest.fixture
def start_otlp_sink() -> Iterator[Callable[..., OtlpSink]]:
    """start(delay=0.0): a running OtlpSink, stopped at teardown."""
    started: List[OtlpSink] = []

    def start(delay: float = 0.0) -> OtlpSink:
        started.append(OtlpSink(delay=delay))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def sink(start_otlp_sink: Callable[..., OtlpSink]) -> OtlpSink:
    return start_otlp_sink()


@pytest.fixture
def endpoint_server(tmp_path: Path) -> Iterator[EndpointProcess]:
    server = EndpointProcess(tmp_path / "endpoint.sqlite", log_path=tmp_path / "endpoint.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_forwarder(tmp_path: Path) -> Iterator[Callable[..., ForwarderProcess]]:
    """start(metrics_url, outbox=None, args=(), env=None, port=0): a running forwarder.

    Retries are quick (50 ms doubling to 500 ms) unless args say otherwise; port 0 lets the OS choose.
    """
    started: List[ForwarderProcess] = []

    def start(
        metrics_url: str,
        outbox: Optional[Path] = None,
        args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        port: int = 0,
    ) -> ForwarderProcess:
        number = len(started)
        outbox = outbox or tmp_path / f"outbox-{number}.sqlite"
        quick_retries = ["--retry-initial", "0.05", "--retry-max", "0.5"]
        log_path = tmp_path / f"forwarder-{number}.log"
        forwarder = ForwarderProcess(metrics_url, outbox, [*quick_retries, *args], env, port, log_path)
        started.append(forwarder)
        forwarder.start()
        return forwarder

    yield start
    for forwarder in started:
        forwarder.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    require(bindir, "PostgreSQL is not installed: `make postgres` installs Debian's package")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require(False, "psycopg is missing: `make install` installs the dev extras")
    assert bindir is not None
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """postgresql://... of a new empty database."""
    return postgres_server.create_database()
