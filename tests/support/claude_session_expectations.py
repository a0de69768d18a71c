"""The payloads a real Claude Code session must produce, computed independently of the code under test.

Only `otel-metrics session-summary` is reused: the session scenario's very claim
is that what arrives equals what it computes on the transcript Claude Code wrote.
"""

from __future__ import annotations

import calendar
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from support.claude_cli import PLUGIN_DIR, ClaudeRun
from support.legacy_payloads import TIMESTAMP_FORMAT, legacy_event, mac, session_summary


def plugin_manifest() -> Dict[str, Any]:
    return json.loads((PLUGIN_DIR / ".claude-plugin" / "plugin.json").read_text(encoding="utf-8"))


def plugin_data_dir(home: Path) -> Path:
    """CLAUDE_PLUGIN_DATA that Claude Code 2.1.197 gives a --plugin-dir plugin (observed: `<name>-inline`)."""
    return home / ".claude" / "plugins" / "data" / f"{plugin_manifest()['name']}-inline"


def expected_os() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    return "darwin" if sys.platform == "darwin" else "linux"


def unix_seconds(timestamp: str) -> int:
    return calendar.timegm(time.strptime(timestamp, TIMESTAMP_FORMAT))


def assert_within(timestamp: str, run: ClaudeRun) -> None:
    """A payload time lies within the session's run (whole seconds, as sent)."""
    moment = unix_seconds(timestamp)
    assert math.floor(run.started) <= moment <= math.ceil(run.ended), (timestamp, run.started, run.ended)


def expected_event(
    payload: Dict[str, Any],
    run: ClaudeRun,
    kind: str,
    name: str,
    prompt_length: int,
    user_id: str,
    version: Optional[str] = None,
) -> Dict[str, Any]:
    """The whole event payload; its timestamp is taken from the payload once checked against the run.

    The version is the plugin's (its plugin.json), unless the test released another.
    """
    timestamp = payload.get("timestamp")
    assert isinstance(timestamp, str), payload
    assert_within(timestamp, run)
    version = version or plugin_manifest()["version"]
    return legacy_event(kind, name, prompt_length, run.session_id, user_id, timestamp, version, expected_os())


def expected_session(
    run: ClaudeRun, user_id: str, scratch: Path, exit_reason: str = "other", transcript: Optional[Path] = None
) -> Dict[str, Any]:
    """The session payload: the summary of the transcript Claude Code wrote (or of `transcript`, the part of
    it that `run` wrote), with user_id and exit_reason as sent."""
    summary = session_summary(transcript or run.transcript, scratch, "--reason", "other")
    assert summary["session_id"] == run.session_id, summary
    assert_within(summary["start_timestamp"], run)
    assert_within(summary["end_timestamp"], run)
    assert summary["mac"] == mac(run.session_id, summary["start_timestamp"]), summary
    return dict(summary, user_id=user_id, exit_reason=exit_reason)


# The parts of a transcript each run wrote, cut out with plain byte and timestamp arithmetic.


def file_sizes(transcript: Path) -> Dict[str, int]:
    """Bytes of a session's main transcript (key "") and of each subagent transcript, now."""
    sizes = {"": transcript.stat().st_size}
    for subagent in sorted((transcript.with_suffix("") / "subagents").glob("*.jsonl")):
        sizes[subagent.name] = subagent.stat().st_size
    return sizes


def run_part(transcript: Path, before: Dict[str, int], after: Dict[str, int], into: Path) -> Path:
    """The bytes a run appended to each file of a session (between two `file_sizes`), laid out as a
    session of their own in `into` (same file names)."""
    for name, end in after.items():
        source = transcript if name == "" else transcript.with_suffix("") / "subagents" / name
        target = into / transcript.name if name == "" else into / transcript.stem / "subagents" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as f:
            f.seek(before.get(name, 0))
            target.write_bytes(f.read(end - before.get(name, 0)))
    return into / transcript.name


def written_since(transcript: Path, started: float, into: Path) -> Path:
    """A forked session's transcript without the history it copied: the lines stamped at or after the run's
    start, or not stamped at all (copies keep the times they were first written)."""
    kept = []
    for line in transcript.read_bytes().splitlines(keepends=True):
        stamp = json.loads(line).get("timestamp")
        if stamp is None or iso_seconds(stamp) >= started:
            kept.append(line)
    into.mkdir(parents=True, exist_ok=True)
    (into / transcript.name).write_bytes(b"".join(kept))
    return into / transcript.name


def iso_seconds(stamp: str) -> float:
    """Claude Code's `2026-11-25T06:45:19.325Z` as unix seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))


def counts(payload: Dict[str, Any]) -> Dict[str, int]:
    """The additive counts of a session payload (tokens absent mean 0)."""
    keys = [k for k, v in payload.items() if type(v) is int and k != "session_duration"]
    tokens = ("total_input_tokens", "total_output_tokens", "cache_creation_tokens", "cache_read_tokens")
    return {**dict.fromkeys(tokens, 0), **{k: payload[k] for k in keys}}


def in_order(payloads: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Payloads in a canonical order, to compare lists of them whatever order they arrived in."""
    return sorted(payloads, key=lambda p: json.dumps(p, sort_keys=True))


def by_session(payloads: Iterable[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Payloads keyed by session_id; a session appearing twice is a failure."""
    keyed: Dict[str, Dict[str, Any]] = {}
    for payload in payloads:
        assert payload["session_id"] not in keyed, f"two payloads for one session: {payload}"
        keyed[payload["session_id"]] = payload
    return keyed


def requests_mentioning(requests: Iterable[Any], marker: str) -> List[Any]:
    return [r for r in requests if marker in json.dumps(r.body)]
