"""The plugin as users get it: added from a marketplace, installed, and run with nothing but a bare python3.

The repository is served over git's smart HTTP protocol on loopback (support/git_marketplace.py); the real
Claude Code CLI adds it as a marketplace and installs the metrics plugin and a test plugin from
it. PATH's python3 is a fresh venv with nothing installed; the test starts no collector and no
forwarder, only the reference endpoint, named by CLAUDE_METRICS_URL. Everything else (the
plugin's own Python dependencies, its forwarder) the plugin does by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from support.claude_cli import CLAUDE_BIN, base_env, run_claude, transcript_session_ids
from support.claude_session_expectations import by_session, expected_event, expected_session
from support.fake_messages_api import Script, ToolCall, text, tools
from support.git_marketplace import MARKETPLACE_NAME, PLUGIN_ID, Marketplace
from support.legacy_payloads import anonymous_id
from support.paths import PIP_CACHE
from support.plugin_hooks import delivered, log_lines, plugin_processes, spool_records, stop_plugin_processes
from support.processes import free_port, wait_for

# The first session's payloads wait for the plugin to install its dependencies from the package index.
BOOTSTRAP_SECONDS = 300.0
DATA_DIR = Path(".claude") / "plugins" / "data" / f"metrics-{MARKETPLACE_NAME}"
SETUP_FAILED = "cannot set up the plugin's Python dependencies yet"


@pytest.fixture
def marketplace(tmp_path: Path, claude_cli: Path):
    served = Marketplace(tmp_path / "marketplace")
    served.publish()
    yield served
    served.stop()


@pytest.fixture
def user(tmp_path: Path, fake_api, endpoint_server):
    """A user's machine: a HOME, a project, and a python3 with nothing installed first on PATH."""
    home, project, scratch = tmp_path / "home", tmp_path / "project", tmp_path / "scratch"
    for directory in (home, project, scratch):
        directory.mkdir()
    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    env = base_env(
        home,
        fake_api.base_url,
        {
            "CLAUDE_METRICS_URL": endpoint_server.url,
            "PIP_CACHE_DIR": str(PIP_CACHE),
            # The plugin's processes leave soon after their work, so each test ends them; a test that
            # needs one warm says so.
            "CLAUDE_METRICS_EXPORTER_IDLE_SECONDS": "1",
            "CLAUDE_METRICS_FORWARDER_IDLE_SECONDS": "1",
        },
    )
    env["PATH"] = os.pathsep.join([str(bare / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    yield User(home, project, scratch, env)
    leftover = stop_plugin_processes(home / DATA_DIR, 60)
    assert not leftover, f"the plugin's processes {leftover} did not leave by themselves"


class User:
    def __init__(self, home: Path, project: Path, scratch: Path, env: Dict[str, str]) -> None:
        self.home, self.project, self.env = home, project, env
        self.scratch = scratch  # a state directory for `otel-metrics session-summary`, apart from the plugin's

    @property
    def data(self) -> Path:
        return self.home / DATA_DIR

    def claude(self, *args: str) -> str:
        out = subprocess.run(
            [str(CLAUDE_BIN), *args], env=self.env, cwd=self.project, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, f"claude {' '.join(args)} failed: {out.stdout}\n{out.stderr}"
        return out.stdout

    def install(self, marketplace_url: str) -> None:
        self.claude("plugin", "marketplace", "add", marketplace_url)
        self.claude("plugin", "install", PLUGIN_ID)
        self.claude("plugin", "install", f"testkit@{MARKETPLACE_NAME}")

    def session(self, prompt: str, **extra: str):
        run = run_claude(prompt, dict(self.env, **extra), self.project, plugin_dirs=())
        assert run.returncode == 0, f"claude -p failed ({run.returncode}): {run.stderr}"
        assert transcript_session_ids(run.transcript) == [run.session_id]
        return run

    def delivered(self) -> bool:
        """Nothing the hooks recorded is still on its way (spool and local forwarder's outbox empty)."""
        return delivered(self.data)


def _hello_with_a_skill_and_a_failing_tool(name: str) -> Script:
    return Script(
        {
            f"Say hello to {name}": [
                tools(ToolCall("Skill", {"skill": "testkit:summarize", "args": "private words"})),
                tools(ToolCall("Bash", {"command": "exit 3", "description": "Fail on purpose"})),
                text(f"Hello, {name}!"),
            ]
        }
    )


def _exporter_roots(data: Path) -> List[str]:
    """CLAUDE_PLUGIN_ROOT of the plugin's running exporters."""
    exporters = [process for process in plugin_processes(data) if process.kind == "exporter"]
    return [process.env["CLAUDE_PLUGIN_ROOT"] for process in exporters if "CLAUDE_PLUGIN_ROOT" in process.env]


def test_installed_plugin_delivers_with_a_bare_python_and_keeps_its_state_across_an_update(
    fake_api, endpoint_server, marketplace, user
):
    user.install(marketplace.url)
    cached = user.home / ".claude" / "plugins" / "cache" / MARKETPLACE_NAME / "metrics"
    [version_dir] = cached.iterdir()
    assert (version_dir / "otel_metrics" / "hook" / "main.py").is_file()  # the link became the package's files
    assert not (version_dir / "otel_metrics").is_symlink()

    fake_api.script = _hello_with_a_skill_and_a_failing_tool("Ada Lovelace")
    prompt = "/testkit:hello Ada Lovelace"
    # Warm long enough to be running when the updated plugin's first hook pokes it.
    run = user.session(prompt, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="90")

    events = endpoint_server.exactly("events", 2, user.delivered, timeout=BOOTSTRAP_SECONDS)
    arrived = time.time()
    user_id = anonymous_id(user.data)
    skill = next(e for e in events if e["type"] == "skill")
    command = next(e for e in events if e["type"] == "slash_command")
    assert command == expected_event(command, run, "slash_command", "testkit:hello", len(prompt), user_id)
    assert skill == expected_event(skill, run, "skill", "testkit:summarize", 0, user_id)
    [session] = endpoint_server.exactly("sessions", 1, user.delivered)
    assert session == expected_session(run, user_id, user.scratch)
    assert (session["total_tool_calls"], session["tool_error_count"], session["had_errors"]) == (2, 1, True)
    built = json.loads((user.data / "bootstrap.json").read_text())["built"]
    print(f"\nfirst session: its payloads arrived {arrived - run.ended:.1f} s after it ended (dependencies installed)")
    assert (user.data / "venv").is_dir()
    assert not [line for line in log_lines(user.data) if "ERROR" in line or "hook:" in line], log_lines(user.data)

    # A new release: `claude plugin update` keeps the data directory (anonymous id, venv, spool, outbox).
    marketplace.publish(version="0.1.1")
    user.claude("plugin", "marketplace", "update", MARKETPLACE_NAME)
    user.claude("plugin", "update", PLUGIN_ID)
    assert (cached / "0.1.1" / "otel_metrics").is_dir()
    second_prompt = "/testkit:hello Grace"
    fake_api.script = Script({"Say hello to Grace": [text("Hello, Grace!")]})
    second = user.session(second_prompt, CLAUDE_METRICS_EXPORTER_IDLE_SECONDS="20")

    events = endpoint_server.exactly("events", 3, user.delivered, timeout=60)
    [new] = [e for e in events if e["session_id"] == second.session_id]
    assert new == expected_event(new, second, "slash_command", "testkit:hello", len(second_prompt), user_id, "0.1.1")
    sessions = by_session(endpoint_server.exactly("sessions", 2, user.delivered, timeout=60))
    assert sessions[second.session_id] == expected_session(second, user_id, user.scratch)
    assert anonymous_id(user.data) == user_id
    assert json.loads((user.data / "bootstrap.json").read_text())["built"] == built  # same pins: not rebuilt
    # The exporter warm from the first session restarted itself on the new release's code.
    assert _exporter_roots(user.data) == [str(cached / "0.1.1")]

    # /metrics:doctor, as a user types it: the cached plugin reports to the model what works.
    fake_api.script = Script({"self-check printed": [text("All good.")]})
    user.session("/metrics:doctor")
    [request] = fake_api.matched("self-check printed")
    report = json.dumps(request.body)
    assert "otel-metrics doctor (plugin 0.1.1)" in report and "everything needed works" in report, report
    assert f"ok    dependencies: ready in {user.data / 'venv'}" in report

    # Uninstalling removes the data directory (once the plugin's processes have left).
    wait_for(lambda: not plugin_processes(user.data), 60, 0.1, "the plugin's processes to leave")
    user.claude("plugin", "uninstall", PLUGIN_ID)
    assert not user.data.exists()


def test_unreachable_package_index_keeps_events_until_the_dependencies_install(
    fake_api, endpoint_server, marketplace, user
):
    user.install(marketplace.url)
    dead_index = {
        "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",  # nothing listens there
        "CLAUDE_METRICS_BOOTSTRAP_RETRY_SECONDS": "1",
        "CLAUDE_METRICS_EXPORTER_IDLE_SECONDS": "5",  # retries within 5 s, then leaves it to a later hook
    }
    fake_api.script = Script(
        {"Say hello to Offline": [text("Hello, Offline!")], "Say hello to Online": [text("Hello, Online!")]}
    )
    offline = user.session("/testkit:hello Offline", **dead_index)
    wait_for(lambda: any(SETUP_FAILED in line for line in log_lines(user.data)), 120, 0.1, "the bootstrap to fail")
    wait_for(lambda: not plugin_processes(user.data), 120, 0.1, "the exporter to give up for now")
    [line] = [line for line in log_lines(user.data) if SETUP_FAILED in line]  # tried again, said once
    assert json.loads((user.data / "bootstrap.json").read_text())["failures"] >= 2
    assert "package index (http://127.0.0.1:" in line and "PIP_INDEX_URL" in line, line
    kept = [record["name"] for record in spool_records(user.data) if record["record"] == "event"]
    assert kept == ["testkit:hello"]  # kept, not lost
    assert endpoint_server.stored("events") == []

    # The index is reachable again: the next session's hooks install the dependencies, and all is sent.
    online = user.session("/testkit:hello Online", CLAUDE_METRICS_BOOTSTRAP_RETRY_SECONDS="1")
    events = by_session(endpoint_server.exactly("events", 2, user.delivered, timeout=BOOTSTRAP_SECONDS))
    sessions = by_session(endpoint_server.exactly("sessions", 2, user.delivered))
    assert set(events) == set(sessions) == {offline.session_id, online.session_id}
    user_id = anonymous_id(user.data)
    assert events[offline.session_id] == expected_event(
        events[offline.session_id], offline, "slash_command", "testkit:hello", len("/testkit:hello Offline"), user_id
    )
    assert any("installed now: sending what was kept" in line for line in log_lines(user.data)), log_lines(user.data)
