"""Fixtures for the real collector: its binary, and running collectors.

`collector_binary` is the distribution `make collector` builds; without it and without
Go the tests skip and say why, except under CI=true, where they fail. The endpoint,
forwarder, OTLP sink and hook helpers are the shared ones (tests/conftest.py, tests/support).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from support.collector_process import BASE_CONFIG, BINARY, FANOUT_CONFIG, CollectorProcess
from support.processes import built


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """build/otelcol-metrics, brought up to date by `make collector` when Go is here."""
    return built("collector", BINARY)


@pytest.fixture
def start_collector(tmp_path: Path, collector_binary: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """start(forwarder_url, fanout=False, env=None): a running collector, stopped at teardown."""
    started: List[CollectorProcess] = []

    def start(forwarder_url: str, fanout: bool = False, env: Optional[Dict[str, str]] = None) -> CollectorProcess:
        workdir = tmp_path / f"collector-{len(started)}"
        workdir.mkdir()
        configs = [BASE_CONFIG, FANOUT_CONFIG] if fanout else [BASE_CONFIG]
        process = CollectorProcess(collector_binary, configs, forwarder_url, workdir, env or {})
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
