"""Running the plugin's hooks the way Claude Code does, and cleaning up after them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugin"
HOOKS_JSON = PLUGIN / "hooks" / "hooks.json"
FIXTURES = REPO.parent / "shared" / "fixtures" / "transcripts"


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


def exporter_pids(state_dir: Path) -> List[int]:
    """Background exporters working on this state directory (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"otel_metrics.exporter" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"CLAUDE_METRICS_DIR={state_dir}".encode() in environ:
            pids.append(int(entry.name))
    return pids


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
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline and exporter_pids(state_dir):
        time.sleep(0.05)
    return pids


def spool_records(state_dir: Path) -> Iterator[dict]:
    spool = state_dir / "spool"
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


def expected_event(kind: str, name: str, prompt_length: int, session_id: str, state: Path, timestamp: str) -> dict:
    """The whole legacy event payload a hook must produce; the timestamp is the one sent."""
    from otel_metrics import __version__

    return {
        "type": kind,
        "name": name,
        "engine": "claude",
        "version": __version__,
        "timestamp": timestamp,
        "session_id": session_id,
        "user_id": (state / ".anonymous_id").read_text().strip(),
        "os": "linux",
        "mac": hashlib.sha256((session_id + timestamp).encode()).hexdigest(),
        "prompt_length": prompt_length,
    }
