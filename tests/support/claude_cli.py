"""Running the real Claude Code CLI (`claude -p`) against the loopback Messages API stand-in.

Shared by the acceptance tests (tests/acceptance/) and benchmarks/real_session.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from support.paths import PLUGIN, REPO

CLAUDE_CODE_VERSION = "2.1.197"
CLAUDE_CODE_DIR = REPO / ".cache" / "claude-code"
CLAUDE_BIN = CLAUDE_CODE_DIR / "node_modules" / ".bin" / "claude"
PLUGIN_DIR = PLUGIN
# A plugin with a command and a skill, for the sessions to use.
TEST_PLUGIN_DIR = REPO / "tests" / "acceptance" / "test-plugin"
# The interpreter running us (the venv's) must be the `python3` the hooks' `#!/usr/bin/env python3` finds.
PYTHON_BIN_DIR = Path(sys.executable).parent
# Tools the scripted model calls; -p mode denies tools that need a permission prompt.
ALLOWED_TOOLS = "Bash Skill Agent"


class ClaudeCodeUnavailable(RuntimeError):
    pass


def ensure_claude_cli() -> Path:
    """The pinned CLI, installed with `make claude-cli` when missing; raises ClaudeCodeUnavailable without npm."""
    if not _runs(CLAUDE_BIN):
        if shutil.which("npm") is None:
            raise ClaudeCodeUnavailable("npm is not installed: cannot install @anthropic-ai/claude-code")
        subprocess.run(["make", "--no-print-directory", "claude-cli"], cwd=REPO, check=True)
    if not _runs(CLAUDE_BIN):
        raise ClaudeCodeUnavailable(f"{CLAUDE_BIN} does not run after `make claude-cli`")
    return CLAUDE_BIN


def _runs(binary: Path) -> bool:
    if not binary.exists():
        return False
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.startswith(CLAUDE_CODE_VERSION)


def base_env(home: Path, api_url: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A minimal environment: nothing of the developer's own Claude Code set-up leaks in."""
    if not (PYTHON_BIN_DIR / "python3").exists():
        raise RuntimeError(f"{PYTHON_BIN_DIR} has no python3: run the tests with the venv's python")
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(PYTHON_BIN_DIR), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": api_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class ClaudeRun:
    returncode: int
    stdout: str
    stderr: str
    started: float  # unix seconds, just before the CLI started
    ended: float  # unix seconds, just after it exited
    home: Path
    cwd: Path

    @property
    def result(self) -> Dict[str, object]:
        """The `--output-format json` result object."""
        return json.loads(self.stdout)

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    @property
    def transcript(self) -> Path:
        """Where Claude Code wrote this session's transcript (exactly one file of that name)."""
        found = sorted((self.home / ".claude" / "projects").glob(f"*/{self.session_id}.jsonl"))
        if len(found) != 1:
            raise AssertionError(f"expected one transcript for {self.session_id}, found {found}")
        return found[0]


def claude_command(
    prompt: str, plugin_dirs: Sequence[Path], output_json: bool = True, args: Sequence[str] = ()
) -> List[str]:
    """`claude -p PROMPT` with our plugins; `args` such as `--resume ID` or `--fork-session`."""
    cmd = [str(CLAUDE_BIN), "-p", prompt, "--allowedTools", ALLOWED_TOOLS, *args]
    for plugin in plugin_dirs:
        cmd += ["--plugin-dir", str(plugin)]
    if output_json:
        cmd += ["--output-format", "json"]
    return cmd


def start_claude(
    prompt: str,
    env: Dict[str, str],
    cwd: Path,
    plugin_dirs: Sequence[Path],
    output_json: bool = True,
    args: Sequence[str] = (),
) -> subprocess.Popen:
    return subprocess.Popen(
        claude_command(prompt, plugin_dirs, output_json, args),
        env=env,
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_claude(proc: subprocess.Popen, started: float, env: Dict[str, str], cwd: Path, timeout: float) -> ClaudeRun:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"claude -p did not finish in {timeout} s; stderr: {stderr}") from None
    return ClaudeRun(proc.returncode, stdout, stderr, started, time.time(), Path(env["HOME"]), cwd)


def run_claude(
    prompt: str,
    env: Dict[str, str],
    cwd: Path,
    plugin_dirs: Sequence[Path] = (PLUGIN_DIR, TEST_PLUGIN_DIR),
    timeout: float = 120,
    args: Sequence[str] = (),
) -> ClaudeRun:
    started = time.time()
    proc = start_claude(prompt, env, cwd, plugin_dirs, args=args)
    return finish_claude(proc, started, env, cwd, timeout)


def transcript_session_ids(transcript: Path) -> List[str]:
    """The distinct `sessionId` values written in a transcript, in order of appearance."""
    seen: List[str] = []
    with transcript.open(encoding="utf-8") as f:
        for line in f:
            value = json.loads(line).get("sessionId")
            if isinstance(value, str) and value not in seen:
                seen.append(value)
    return seen
