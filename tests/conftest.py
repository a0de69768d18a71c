"""Shared fixtures: a state directory, a loopback OTLP receiver, and the reference endpoint, the
forwarder and PostgreSQL as real processes on loopback.

`state` is an empty state directory whose background processes (exporters, a local forwarder) are
killed afterwards; `sink` is an OtlpSink; `endpoint_server` is a running `otel-metrics endpoint`;
`forwarder_server` is a factory of `otel-metrics forwarder` processes, restartable on their port;
`postgres_url` is a new empty database on a real PostgreSQL server (one per test session). The
fixtures stop every process they started. Helpers (wait_for) are in servers.py, with `require`: how
a test that needs an optional toolchain skips or fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
from hooks_harness import kill_exporters
from otlp_sink import OtlpSink
from servers import EndpointProcess, ForwarderProcess, PostgresServer, postgres_bindir, require


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    yield state_dir
    kill_exporters(state_dir)


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    receiver = OtlpSink()
    yield receiver
    receiver.stop()


@pytest.fixture
def endpoint_server(tmp_path: Path) -> Iterator[EndpointProcess]:
    server = EndpointProcess(tmp_path / "endpoint.sqlite")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def forwarder_server(tmp_path: Path) -> Iterator[Callable[..., ForwarderProcess]]:
    """start(metrics_url, outbox=None, args=(), env=None): a running forwarder.

    Retries are quick (50 ms doubling to 500 ms) unless args say otherwise.
    """
    started: List[ForwarderProcess] = []

    def start(
        metrics_url: str,
        outbox: Optional[Path] = None,
        args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> ForwarderProcess:
        outbox = outbox or tmp_path / f"outbox-{len(started)}.sqlite"
        quick_retries = ["--retry-initial", "0.05", "--retry-max", "0.5"]
        forwarder = ForwarderProcess(metrics_url, outbox, [*quick_retries, *args], env)
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
