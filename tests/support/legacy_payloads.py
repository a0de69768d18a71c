"""Legacy payloads as the tests expect them, written independently of the code under test: samples the
endpoint accepts (EVENT, SESSION), an event payload field by field (`legacy_event`, `expected_event`),
and the session payload `otel-metrics session-summary` prints for a transcript (`session_summary`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

# The command `pip install` puts beside the interpreter: what users and maintainers run.
OTEL_METRICS = Path(sys.executable).with_name("otel-metrics")
USER = "550e8400-e29b-41d4-a716-446655440000"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # the contract's: UTC, whole seconds


def utc(seconds: float) -> str:
    """Unix seconds as the payloads write a time."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(seconds))


def mac(session_id: str, timestamp: str) -> str:
    """The contract's MAC: sha256 of the session id and the timestamp as sent."""
    return hashlib.sha256((session_id + timestamp).encode("utf-8")).hexdigest()


EVENT = {
    "type": "skill",
    "name": "prow-job:analyze",
    "engine": "claude",
    "version": "1.0",
    "timestamp": "2025-10-30T12:34:56Z",
    "session_id": "abc123",
    "user_id": USER,
    "os": "darwin",
    "mac": mac("abc123", "2025-10-30T12:34:56Z"),
    "prompt_length": 0,
}
SESSION = {
    "session_id": "abc123",
    "user_id": None,
    "os": "linux",
    "engine": "claude",
    "start_timestamp": "2025-10-30T12:00:00Z",
    "end_timestamp": "2025-10-30T12:10:00Z",
    "session_duration": 600,
    "exit_reason": "logout",
    "mac": mac("abc123", "2025-10-30T12:00:00Z"),
    "turn_count": 1,
    "user_message_count": 1,
    "assistant_message_count": 2,
    "total_tool_calls": 1,
    "tool_error_count": 0,
    "bash_call_count": 1,
    "file_read_count": 0,
    "file_edit_count": 0,
    "file_write_count": 0,
    "grep_call_count": 0,
    "glob_call_count": 0,
    "web_fetch_call_count": 0,
    "web_search_call_count": 0,
    "had_errors": False,
    "total_output_tokens": 512,
}


def anonymous_id(state_dir: Path) -> str:
    """The anonymous id the plugin keeps in its state directory (a UUID)."""
    value = (state_dir / ".anonymous_id").read_text(encoding="ascii").strip()
    return str(uuid.UUID(value))


def legacy_event(
    kind: str,
    name: str,
    prompt_length: int,
    session_id: str,
    user_id: Optional[str],
    timestamp: str,
    version: str,
    os_name: str,
) -> Dict[str, Any]:
    """The whole legacy event payload, every key of the contract."""
    return {
        "type": kind,
        "name": name,
        "engine": "claude",
        "version": version,
        "timestamp": timestamp,
        "session_id": session_id,
        "user_id": user_id,
        "os": os_name,
        "mac": mac(session_id, timestamp),
        "prompt_length": prompt_length,
    }


def expected_event(kind: str, name: str, prompt_length: int, session_id: str, state: Path, timestamp: str) -> dict:
    """The whole event payload a hook with this state directory must produce here; the timestamp is the one sent."""
    from otel_metrics import __version__

    return legacy_event(kind, name, prompt_length, session_id, anonymous_id(state), timestamp, __version__, "linux")


def session_summary(transcript: Path, state: Path, *args: str) -> Dict[str, Any]:
    """`otel-metrics session-summary TRANSCRIPT ARGS` (the installed command) with this state directory (its
    anonymous id is the payload's user_id): the session payload it prints, checked to be printed whole,
    sorted and indented."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_METRICS_"))}
    result = subprocess.run(
        [str(OTEL_METRICS), "session-summary", str(transcript), *args],
        env=dict(env, CLAUDE_METRICS_DIR=str(state)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == json.dumps(json.loads(result.stdout), sort_keys=True, indent=2) + "\n"
    return json.loads(result.stdout)
