"""Running the plugin's hooks the way Claude Code does; what they leave (spool, log); the background
processes they start (exporters, local forwarders), waiting for them and cleaning up after them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Union

import pytest

from support.paths import FIXTURE_TRANSCRIPT, PLUGIN
from support.processes import outbox_waiting, wait_for

HOOKS_JSON = PLUGIN / "hooks" / "hooks.json"


def hook_commands() -> Dict[str, str]:
    """hook event -> the command hooks.json gives Claude Code for it."""
    hooks = json.loads(HOOKS_JSON.read_text())["hooks"]
    return {event: entry["hooks"][0]["command"] for event, [entry] in hooks.items()}


def hook_env(state_dir: Path, otlp_endpoint: str, **extra: str) -> Dict[str, str]:
    """The environment Claude Code gives a plugin hook (minus OTEL_*, which it strips).

    The background exporter runs on the tests' interpreter (CLAUDE_METRICS_PYTHON), which
    has the pinned dependencies: no test pays for the plugin's own venv unless it asks.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_METRICS_"))}
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "CLAUDE_PLUGIN_ROOT": str(PLUGIN),
            "CLAUDE_METRICS_DIR": str(state_dir),
            "CLAUDE_METRICS_OTLP_ENDPOINT": otlp_endpoint,
            "CLAUDE_METRICS_EXPORTER_IDLE_SECONDS": "2",
            "CLAUDE_METRICS_PYTHON": sys.executable,
            # The fallback state directory (config.fallback_state_dir) is the test's, not the real home's.
            "XDG_CACHE_HOME": str(state_dir.parent / "cache"),
        }
    )
    env.update(extra)
    return env


def run_hook(
    hook_input: Union[dict, bytes, str], env: Dict[str, str], timeout: float = 20, event: Optional[str] = None
) -> subprocess.CompletedProcess:
    """Run a hook as Claude Code does: `/bin/sh -c <its hooks.json command>`, JSON on stdin, stdout captured.

    The command is the one for the input's hook_event_name (or `event`, for input that is not JSON).
    """
    if isinstance(hook_input, dict):
        data = json.dumps(hook_input).encode()
        event = event or hook_input.get("hook_event_name")
    elif isinstance(hook_input, str):
        data = hook_input.encode()
    else:
        data = hook_input
    commands = hook_commands()
    command = commands.get(event or "") or commands["UserPromptExpansion"]  # every hook runs the one entry
    return subprocess.run(["/bin/sh", "-c", command], input=data, capture_output=True, env=env, timeout=timeout)


def prompt_input(prompt: object, session_id: str = "sess-1", **extra: object) -> dict:
    """What Claude Code 2.1.197 gives the hook for a typed prompt: UserPromptExpansion when it is a
    command (with its name and arguments split out), UserPromptSubmit otherwise (which the plugin
    does not listen to: fed to the hook anyway, it must record nothing)."""
    hook_input: dict = {
        "session_id": session_id,
        "transcript_path": f"/home/someone/.claude/projects/p/{session_id}.jsonl",
        "cwd": "/home/someone/project",
        "hook_event_name": "UserPromptSubmit",
        "prompt": prompt,
    }
    if isinstance(prompt, str) and prompt.startswith("/"):
        name, _, args = prompt[1:].partition(" ")
        hook_input.update(
            hook_event_name="UserPromptExpansion",
            expansion_type="slash_command",
            command_name=name,
            command_args=args,
            command_source="plugin",
        )
    hook_input.update(extra)
    return hook_input


def skill_input(skill: str, session_id: str = "sess-1", args: str = "") -> dict:
    return {
        "session_id": session_id,
        "transcript_path": f"/home/someone/.claude/projects/p/{session_id}.jsonl",
        "cwd": "/home/someone/project",
        "hook_event_name": "PreToolUse",
        "tool_name": "Skill",
        "tool_input": {"skill": skill, "args": args},
        "tool_use_id": "toolu_1",
    }


def session_input(event: str, session_id: str, transcript: Optional[Path], reason: str = "other") -> dict:
    hook_input: dict = {
        "session_id": session_id,
        "transcript_path": str(transcript) if transcript else None,
        "cwd": "/home/someone/project",
        "hook_event_name": event,
    }
    if event == "SessionEnd":
        hook_input["reason"] = reason
    else:
        hook_input["source"] = "startup"
    return hook_input


def run_command_skill_and_end(env: Dict[str, str], session_id: str, prompt: str, transcript: Path) -> None:
    """A session's hooks as Claude Code fires them: the typed command `prompt`, the skill pdf:extract
    (called with arguments), then SessionEnd (reason logout) on `transcript`; each silent, exit 0."""
    for result in (
        run_hook(prompt_input(prompt, session_id=session_id), env),
        run_hook(skill_input("pdf:extract", session_id=session_id, args="secret"), env),
        run_hook(session_input("SessionEnd", session_id, transcript, "logout"), env),
    ):
        assert (result.returncode, result.stdout) == (0, b"")


class PluginProcess(NamedTuple):
    pid: int
    kind: str  # "exporter" or "forwarder"
    env: Dict[str, str]


def plugin_processes(state_dir: Path) -> List[PluginProcess]:
    """The background processes the hooks started for this state directory, as its CLAUDE_METRICS_DIR or
    CLAUDE_PLUGIN_DATA: exporters and local forwarders (Linux /proc)."""
    markers = {f"CLAUDE_METRICS_DIR={state_dir}".encode(), f"CLAUDE_PLUGIN_DATA={state_dir}".encode()}
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if b"otel_metrics.exporter" in cmdline:
            kind = "exporter"
        elif b"otel_metrics.cli" in cmdline and b"forwarder" in cmdline:
            kind = "forwarder"
        else:
            continue
        if markers & set(environ):
            env = dict(v.decode(errors="replace").split("=", 1) for v in environ if b"=" in v)
            found.append(PluginProcess(int(entry.name), kind, env))
    return found


def plugin_pids(state_dir: Path) -> List[int]:
    return [process.pid for process in plugin_processes(state_dir)]


def exporter_pids(state_dir: Path) -> List[int]:
    """Background exporters working on this state directory."""
    return [process.pid for process in plugin_processes(state_dir) if process.kind == "exporter"]


@contextmanager
def exporter_lock_held(state_dir: Path) -> Iterator[None]:
    """While held, hooks only record (the exporter lock is taken): their records wait in the spool."""
    from otel_metrics import lock

    fd = lock.try_acquire(str(state_dir))
    assert fd is not None, "an exporter holds the lock"
    try:
        yield
    finally:
        lock.release(fd)


def kill_exporters(state_dir: Path, sig: int = signal.SIGKILL) -> List[int]:
    """Kill this state directory's exporters, and the local forwarder they may have started."""
    from otel_metrics.exporter import local_forwarder

    address = local_forwarder.running(str(state_dir))
    if address is not None:
        os.kill(int(address["pid"]), signal.SIGTERM)
    pids = exporter_pids(state_dir)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if pids:
        try:
            wait_for(lambda: not exporter_pids(state_dir), 5, 0.05)
        except AssertionError:
            pass  # a zombie of ours is reaped later; the test goes on
    return pids


def stop_plugin_processes(state_dir: Path, timeout: float) -> List[int]:
    """Let this state directory's exporters and forwarders idle out; end those still running. Returns those."""
    try:
        wait_for(lambda: not plugin_pids(state_dir), timeout, 0.1, "the plugin's processes to idle out")
        return []
    except AssertionError:
        survivors = plugin_pids(state_dir)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return survivors


def delivered(state_dir: Path, *outboxes: Path) -> bool:
    """Nothing the hooks recorded in this state directory is still on its way: the spool is empty (the
    exporter removes a record once the next hop accepted it), and so are the local forwarder's outbox and
    the given forwarders' outboxes (a payload leaves an outbox once the endpoint answered)."""
    local = state_dir / "forwarder" / "outbox.sqlite"
    return not list(spool_records(state_dir)) and all(outbox_waiting(path) == 0 for path in (local, *outboxes))


def spool_records(state_dir: Path, adopted: bool = True) -> Iterator[dict]:
    """The records in the spool; with `adopted`, once the background wake has turned every hook input
    there into its record (a hook returns before that)."""
    spool = state_dir / "spool"
    if adopted and spool.is_dir():
        wait_for(lambda: not list(spool.glob("*.hookinput")), what="the background wake adopted the hook inputs")
    if spool.is_dir():
        for path in sorted(spool.glob("*.json")):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue  # exported and removed between the listing and the read
            yield json.loads(text)


def log_lines(state_dir: Path) -> List[str]:
    path = state_dir / "metrics.log"
    return path.read_text().splitlines() if path.exists() else []


def copy_fixture_transcript(directory: Path) -> Path:
    """The real session of FIXTURE_TRANSCRIPT copied into `directory`, subagent transcripts included
    (the test skips without the shared fixtures)."""
    if not FIXTURE_TRANSCRIPT.exists():
        pytest.skip(f"{FIXTURE_TRANSCRIPT} is missing (shared/ fixtures beside the repo)")
    transcript = directory / FIXTURE_TRANSCRIPT.name
    shutil.copy(FIXTURE_TRANSCRIPT, transcript)
    if FIXTURE_TRANSCRIPT.with_suffix("").is_dir():  # the session's subagent transcripts
        shutil.copytree(FIXTURE_TRANSCRIPT.with_suffix(""), transcript.with_suffix(""))
    return transcript
