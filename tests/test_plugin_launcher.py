"""plugin/scripts/run, the plugin's one entry point, on the pythons users have: none, too old, a bare 3.9,
one whose site-packages hold an unrelated `otel_metrics`, and the plugin's own venv once it is set up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.legacy_payloads import expected_event
from support.paths import PIP_CACHE, PLUGIN
from support.plugin_hooks import hook_env, log_lines, prompt_input, run_hook, session_input
from support.processes import wait_for

PYENV = Path.home() / ".pyenv" / "versions"
RUN = PLUGIN / "scripts" / "run"


def a_python(version: str) -> Path:
    """A real CPython of that version (pyenv's, as on many users' machines)."""
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Python {version} (pyenv) is expected on CI machines")
        pytest.skip(f"no Python {version} under {PYENV}")
    return found[-1]


def plain_env(state: Path, **extra: str) -> dict:
    """A hook's environment as a user has it: no CLAUDE_METRICS_PYTHON (which the launcher would run first)."""
    env = hook_env(state, "http://127.0.0.1:9", **extra)
    del env["CLAUDE_METRICS_PYTHON"]
    return env


def path_with(tmp_path: Path, python: Path) -> str:
    """A PATH whose python3 is `python`, followed by the system's tools (without the tests' venv)."""
    bin_dir = tmp_path / "python-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(python)
    return os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])


def no_python(tmp_path: Path) -> str:
    """A PATH with the tools the launcher itself uses, but no python at all."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir", "grep", "date"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


@pytest.mark.parametrize(
    ("make_path", "said"),
    [
        (no_python, "no python3 on PATH: install Python 3.9 or later"),
        (lambda tmp_path: path_with(tmp_path, a_python("3.8")), "is Python 3.8: the plugin needs 3.9 or later"),
    ],
    ids=["no python3", "python3 is 3.8"],
)
def test_a_missing_or_old_python3_is_said_once_and_silently(state: Path, tmp_path: Path, make_path, said: str) -> None:
    env = plain_env(state, PATH=make_path(tmp_path))
    for _ in range(2):
        result = run_hook(prompt_input("/jira:solve"), env)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
        # (an old python3 says so from the background wake: the next hook comes once it has)
        [line] = wait_for(lambda: log_lines(state), what="the line saying what is wrong")
    assert said in line
    # Nothing can adopt the hooks' inputs: not kept (they hold prompts).
    wait_for(lambda: not list((state / "spool").glob("*.hookinput")), what="the old python3 removed the inputs")
    assert len(log_lines(state)) == 1


def test_the_plugins_own_venv_runs_the_hooks_once_it_exists(state: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    venv_bin = state / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    (venv_bin / "python").chmod(0o755)
    run_hook(prompt_input("/jira:solve"), plain_env(state))
    assert calls.read_text().split() == ["-S", str(PLUGIN / "scripts" / "run.py"), "hook"]


def test_an_unrelated_otel_metrics_package_cannot_shadow_the_plugins(state: Path, tmp_path: Path, sink) -> None:
    impostor = tmp_path / "site" / "otel_metrics"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("raise SystemExit('the wrong otel_metrics')\n")
    env = hook_env(state, sink.url, PYTHONPATH=str(impostor.parent))
    run_hook(prompt_input("/jira:solve ABC-1"), env)
    wait_for(lambda: sink.event_count() == 1, 30)


def test_a_bare_python_3_9_delivers_through_the_embedded_default(state: Path, tmp_path: Path, endpoint_server) -> None:
    """macOS's python3: the plugin installs its Python 3.9 pins and its own forwarder, with nothing given."""
    env = hook_env(state, "", PATH=path_with(tmp_path, a_python("3.9")), PIP_CACHE_DIR=str(PIP_CACHE))
    for name in ("CLAUDE_METRICS_OTLP_ENDPOINT", "CLAUDE_METRICS_PYTHON"):
        del env[name]
    env.update(CLAUDE_METRICS_URL=endpoint_server.url, CLAUDE_METRICS_FORWARDER_IDLE_SECONDS="2")
    transcript = tmp_path / "sess-39.jsonl"
    transcript.write_text(
        json.dumps({"type": "user", "timestamp": "2026-11-25T10:00:00.000Z", "message": {"content": "hi"}}) + "\n"
    )
    prompt = "/jira:solve ABC-1"
    run_hook(prompt_input(prompt, session_id="sess-39"), env)
    run_hook(session_input("SessionEnd", "sess-39", transcript, "logout"), env)
    wait_for(lambda: endpoint_server.events() and endpoint_server.sessions(), 300)
    [event], [session] = endpoint_server.events(), endpoint_server.sessions()
    assert event == expected_event("slash_command", "jira:solve", len(prompt), "sess-39", state, event["timestamp"])
    assert (session["start_timestamp"], session["user_message_count"], session["exit_reason"]) == (
        "2026-11-25T10:00:00Z",
        1,
        "logout",
    )
    probe = subprocess.run(
        [
            str(state / "venv" / "bin" / "python"),
            "-c",
            "import sys, opentelemetry.sdk.version as v; print(sys.version_info[:2], v.__version__)",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "(3, 9) 1.41.1", probe.stderr  # the 3.9 pins of requirements.txt


def test_doctor_reads_the_users_options_and_reports_what_is_missing(tmp_path: Path) -> None:
    """/metrics:doctor's shell snippet gets the plugin's directories as arguments, no CLAUDE_PLUGIN_* variables."""
    home = tmp_path / "home"
    root = home / ".claude" / "plugins" / "cache" / "acme-market" / "metrics" / "1.2.3"
    data = home / ".claude" / "plugins" / "data" / "metrics-acme-market"
    shutil.copytree(PLUGIN, root, symlinks=False)
    settings = {"pluginConfigs": {"metrics@acme-market": {"options": {"metrics_url": "http://127.0.0.1:9/acme"}}}}
    (home / ".claude" / "settings.json").write_text(json.dumps(settings))
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}

    def doctor() -> subprocess.CompletedProcess:
        command = ["sh", str(root / "scripts" / "run"), "doctor", str(root), str(data)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    out = doctor()
    report = out.stdout
    assert out.returncode == 0, report  # nothing installed yet is not a failure: the first hook does it
    assert "posts to http://127.0.0.1:9/acme/events and /sessions" in report
    assert "(metrics URL from CLAUDE_PLUGIN_OPTION_METRICS_URL)" in report
    assert f"not installed yet: the first hook installs them into {data / 'venv'}" in report
    assert "127.0.0.1:9 cannot be reached now" in report
    (data / "bootstrap.json").write_text(json.dumps({"failures": 2, "last_failure": 0, "reason": "offline, fix X"}))
    out = doctor()
    assert out.returncode == 1
    assert "FAIL  dependencies: installing them failed 2 time(s)" in out.stdout and "offline, fix X" in out.stdout


def test_doctor_reports_payloads_the_endpoint_refused_and_how_to_send_them_again(
    state: Path, tmp_path: Path, endpoint_server
) -> None:
    """The embedded default: the metrics endpoint refuses a payload (here: a URL that is not its path)."""
    env = plain_env(state, CLAUDE_METRICS_URL=endpoint_server.url + "/no-such-base")
    env["CLAUDE_METRICS_PYTHON"] = sys.executable  # the dependencies are the tests' own
    del env["CLAUDE_METRICS_OTLP_ENDPOINT"]
    run_hook(prompt_input("/jira:solve"), env)
    outbox = state / "forwarder" / "outbox.sqlite"
    wait_for(lambda: outbox.exists() and _dead_letters(outbox) == 1, 60)
    out = subprocess.run(["sh", str(RUN), "doctor"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    [line] = [line for line in out.stdout.splitlines() if line.startswith("FAIL  refused:")]
    assert "refused 1 payload(s) for good (last: HTTP 404" in line
    assert f'-m otel_metrics.cli forwarder dead-letters --outbox "{outbox}" --replay' in line


def _dead_letters(outbox: Path) -> int:
    import sqlite3

    with sqlite3.connect(outbox) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        except sqlite3.Error:
            return 0


def test_doctor_says_when_a_session_end_waits_for_an_exporter(state: Path) -> None:
    """scripts/run spooled a SessionEnd whose background wake never ran (killed with its machine, say)."""
    env = plain_env(state)
    env["CLAUDE_METRICS_PYTHON"] = sys.executable
    (state / "spool").mkdir()
    (state / "spool" / "session-end-7.hookinput").write_text("{}")
    out = subprocess.run(["sh", str(RUN), "doctor"], env=env, capture_output=True, text=True, timeout=60)
    [line] = [line for line in out.stdout.splitlines() if "spool:" in line]
    assert line == "warn  spool: 0 record(s) waiting, 1 session end(s) no exporter has taken yet"
