"""Fixtures of the stack tests: the Prometheus and Jaeger builds (`make prometheus jaeger`), and
starting their processes. Without Go and without the builds the tests skip and say why, except
under CI=true, where they fail. The collector, endpoint, forwarder and hook helpers are the shared
ones (tests/support).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from support.collector_process import BINARY as COLLECTOR_BINARY
from support.processes import built
from support.stack_processes import JAEGER_BINARY, PROMETHEUS_BINARY, PrometheusProcess


@pytest.fixture(scope="session")
def stack_binaries() -> Dict[str, Path]:
    return {
        "collector": built("collector", COLLECTOR_BINARY),
        "prometheus": built("prometheus", PROMETHEUS_BINARY),
        "jaeger": built("jaeger", JAEGER_BINARY),
    }


@pytest.fixture
def start_prometheus(stack_binaries: Dict[str, Path], tmp_path: Path) -> Iterator[Callable[..., PrometheusProcess]]:
    """start(targets={}, flags=None): a running Prometheus, stopped at teardown."""
    started: List[PrometheusProcess] = []

    def start(targets: Dict[str, str] = {}, flags=None) -> PrometheusProcess:  # noqa: B006 - never mutated
        process = PrometheusProcess(
            stack_binaries["prometheus"], tmp_path / f"prometheus-{len(started)}", targets, flags=flags
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
