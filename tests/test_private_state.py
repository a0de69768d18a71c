"""Everything the hooks, the exporter and the local forwarder create is the user's alone (700 and 600),
whatever the umask, and a state directory that cannot be used is replaced by a fallback that delivers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import List

from otel_metrics import config
from support.plugin_hooks import hook_env, kill_exporters, prompt_input, run_hook, session_input, skill_input
from support.processes import wait_for

DEADLINE = 60.0


def shared_modes(root: Path) -> List[str]:
    """Files and directories under root that someone other than the owner could read."""
    found = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {oct(info.st_mode & 0o777)}")
    return found


def test_the_state_is_private_whatever_the_umask(state: Path, tmp_path: Path, endpoint_server) -> None:
    state.chmod(0o755)  # as Claude Code creates the data directory
    transcript = tmp_path / "s.jsonl"
    transcript.write_text(json.dumps({"type": "user", "timestamp": "2026-11-25T10:00:00.000Z"}) + "\n")
    env = hook_env(state, "", CLAUDE_METRICS_URL=endpoint_server.url, CLAUDE_METRICS_VERBOSE="1")
    del env["CLAUDE_METRICS_OTLP_ENDPOINT"]  # the embedded default: the local forwarder's files too
    previous = os.umask(0o022)
    try:
        run_hook(session_input("SessionStart", "s", transcript), env)
        run_hook(prompt_input("/jira:solve ABC-1", session_id="s"), env)
        run_hook(skill_input("pdf:make", session_id="s"), env)
        run_hook(session_input("SessionEnd", "s", transcript, "logout"), env)
        wait_for(lambda: len(endpoint_server.events()) == 2 and endpoint_server.sessions(), DEADLINE)
    finally:
        os.umask(previous)
    created = {p.name for p in state.rglob("*")}
    assert {".anonymous_id", "metrics.log", "sessions.sqlite", "exporter.lock", "spool", "forwarder"} <= created
    assert {"outbox.sqlite", "forwarder.log", "address.json"} <= created
    assert shared_modes(state) == []
    kill_exporters(state)


def test_a_state_directory_that_cannot_be_written_delivers_through_the_fallback(state: Path, tmp_path: Path, sink):
    """Records land in the fallback while the state directory is unusable; a session start in the repaired
    state directory sends what was left there."""
    broken = tmp_path / "broken"
    broken.write_text("")  # a plain file where a directory should be
    env = hook_env(broken, sink.url)
    fallback = Path(config.fallback_state_dir(env))
    sink.status = 503
    run_hook(prompt_input("/jira:solve"), env)
    wait_for(lambda: list((fallback / "spool").glob("*.json")), DEADLINE)
    kill_exporters(fallback)
    sink.status = 200
    broken.unlink()
    broken.mkdir()  # repaired
    run_hook(session_input("SessionStart", "s2", None), env)
    wait_for(lambda: sink.event_count() == 1, DEADLINE)
    assert shared_modes(fallback) == []
    kill_exporters(fallback)
    kill_exporters(broken)
