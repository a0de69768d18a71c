"""Fixtures for driving the real Claude Code CLI with our plugin against loopback services.

The endpoint is the shared `endpoint_server` (tests/conftest.py); `forwarder` is a forwarder posting to it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

from support.claude_cli import ClaudeCodeUnavailable, base_env, ensure_claude_cli
from support.claude_session_expectations import plugin_data_dir
from support.fake_messages_api import FakeMessagesAPI
from support.plugin_hooks import delivered, stop_plugin_processes
from support.processes import EndpointProcess, ForwarderProcess

# Exporters and local forwarders started by the hooks stay this long after their last item; short, so
# each test ends them.
IDLE_SECONDS = "1"
PLUGIN_STOP_SECONDS = 40.0
CALL_FAILED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.acceptance)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    try:
        return ensure_claude_cli()
    except ClaudeCodeUnavailable as reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real Claude Code CLI is required under CI=true: {reason}")
        pytest.skip(f"the real Claude Code CLI is unavailable: {reason}")


@pytest.fixture
def fake_api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as api:
        yield api


@pytest.fixture
def forwarder(start_forwarder: Callable[..., ForwarderProcess], endpoint_server: EndpointProcess) -> ForwarderProcess:
    return start_forwarder(endpoint_server.url)


@dataclass
class Workspace:
    """A user's machine in miniature: HOME, a project directory, the plugin's state directory."""

    root: Path  # where the test's forwarders keep their outboxes (start_forwarder: outbox-N.sqlite)
    home: Path
    project: Path
    state: Path
    scratch: Path  # a state directory for `otel-metrics session-summary`, apart from the hooks'

    def delivered(self) -> bool:
        """Nothing the hooks recorded is still on its way: the spools of both state directories (as
        CLAUDE_METRICS_DIR, or the CLAUDE_PLUGIN_DATA Claude Code gives) are empty, and so are the
        local forwarders' outboxes and the outboxes of the forwarders the test started."""
        outboxes = sorted(self.root.glob("outbox-*.sqlite"))
        return all(delivered(state, *outboxes) for state in (self.state, plugin_data_dir(self.home)))

    def env(self, api: FakeMessagesAPI, otlp_url: Optional[str], state_in_env: bool = True) -> Dict[str, str]:
        extra = {
            "CLAUDE_METRICS_EXPORTER_IDLE_SECONDS": IDLE_SECONDS,
            "CLAUDE_METRICS_FORWARDER_IDLE_SECONDS": IDLE_SECONDS,
            # The tests' interpreter has the plugin's pinned dependencies: no venv to build per test.
            "CLAUDE_METRICS_PYTHON": sys.executable,
        }
        if otlp_url:
            extra["CLAUDE_METRICS_OTLP_ENDPOINT"] = otlp_url
        if state_in_env:
            extra["CLAUDE_METRICS_DIR"] = str(self.state)
        return base_env(self.home, api.base_url, extra)


@pytest.fixture
def workspace(request: pytest.FixtureRequest, tmp_path: Path, state: Path, claude_cli: Path) -> Iterator[Workspace]:
    home, project, scratch = (tmp_path / name for name in ("home", "project", "scratch"))
    for directory in (home, project, scratch):
        directory.mkdir()
    space = Workspace(tmp_path, home, project, state, scratch)
    yield space
    if request.node.stash.get(CALL_FAILED, False):
        _show_logs(tmp_path)
    # The hooks' detached processes are this test's doing: see them end before the next test.
    for state_dir in (state, plugin_data_dir(home)):
        leftover = stop_plugin_processes(state_dir, PLUGIN_STOP_SECONDS)
        assert not leftover, f"processes {leftover} for {state_dir} did not idle out; terminated"


def _show_logs(tmp_path: Path) -> None:
    """On failure: the hooks' log and the servers' output (pytest shows them under the teardown)."""
    for log in sorted(tmp_path.rglob("*.log")):
        print(f"----- {log.relative_to(tmp_path)}\n{log.read_text(errors='replace')[-6000:]}")
