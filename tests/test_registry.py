"""The exporter's session registry (SQLite): what has been reported of each session, and its migration."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from otel_metrics.exporter.registry import (
    FORGET_AFTER_SECONDS,
    NOTHING_REPORTED,
    REGISTRY_FILE,
    SCHEMA_VERSION,
    Progress,
    SessionRegistry,
)
from otel_metrics.transcript import Offsets
from support.transcript_entries import answer, prompt, session, write

NOW = 2_000_000_000.0
QUIET = 1800.0


@pytest.fixture
def registry(state: Path):
    opened = SessionRegistry(str(state))
    yield opened
    opened.close()


def quiet_transcript(tmp_path: Path, name: str = "s", age: float = QUIET, **subagents: list) -> Path:
    """A transcript (and subagent files) last changed `age` seconds before NOW."""
    transcript = session(tmp_path / name, [prompt("hi"), answer("m1")], **subagents)
    for path in [transcript, *(transcript.with_suffix("") / "subagents").glob("*.jsonl")]:
        os.utime(path, (NOW - age, NOW - age))
    return transcript


def test_a_new_session_has_nothing_reported(registry: SessionRegistry) -> None:
    assert registry.progress("s1") == NOTHING_REPORTED
    registry.seen("s1", "/t/s1.jsonl", NOW)
    assert registry.progress("s1") == NOTHING_REPORTED


def test_a_reported_segment_moves_the_session_on_once(registry: SessionRegistry) -> None:
    end = Offsets(120, {"agent-a1.jsonl": 40})
    assert registry.record_report("s1", 0, end, True, "/t/s1.jsonl", NOW)
    assert registry.progress("s1") == Progress(1, end, True)
    assert not registry.record_report("s1", 0, Offsets(999, {}), False, "/t/s1.jsonl", NOW)  # replayed: no-op
    assert registry.progress("s1") == Progress(1, end, True)
    later = Offsets(300, {"agent-a1.jsonl": 40, "agent-a2.jsonl": 9})
    assert registry.record_report("s1", 1, later, False, None, NOW)
    assert registry.progress("s1") == Progress(2, later, False)


def test_roots_find_the_sessions_a_fork_copied_from(registry: SessionRegistry) -> None:
    registry.record_report("parent", 0, Offsets(10, {}), False, "/t/parent.jsonl", NOW)
    registry.record_report("fork", 0, Offsets(10, {}), False, "/t/fork.jsonl", NOW)
    registry.add_roots("parent", ["u-root", "u-compact"])
    registry.add_roots("fork", ["u-root"])  # a fork's copied first entry: a fork of the fork finds both
    registry.add_roots("fork", ["u-root"])
    assert registry.transcripts_with_root("u-root", "new") == ["/t/fork.jsonl", "/t/parent.jsonl"]
    assert registry.transcripts_with_root("u-compact", "new") == ["/t/parent.jsonl"]
    assert registry.transcripts_with_root("u-root", "fork") == ["/t/parent.jsonl"]  # never itself
    assert registry.transcripts_with_root("u-other", "new") == []


# The quiet-session rule


def test_a_session_never_reported_is_quiet_once_its_files_stopped_changing(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    transcript = quiet_transcript(tmp_path)
    registry.seen("s1", str(transcript), NOW)
    assert registry.quiet_sessions(QUIET, NOW) == [("s1", str(transcript))]
    assert registry.quiet_sessions(QUIET + 1, NOW) == []


def test_a_subagent_still_writing_keeps_the_session_from_being_quiet(registry: SessionRegistry, tmp_path: Path) -> None:
    transcript = quiet_transcript(tmp_path, **{"agent-a1": [answer("x1")]})
    registry.seen("s1", str(transcript), NOW)
    os.utime(transcript.with_suffix("") / "subagents" / "agent-a1.jsonl", (NOW - 5, NOW - 5))
    assert registry.quiet_sessions(QUIET, NOW) == []


def test_a_reported_session_is_quiet_again_only_when_seen_and_grown(registry: SessionRegistry, tmp_path: Path) -> None:
    transcript = quiet_transcript(tmp_path)
    size = transcript.stat().st_size
    registry.seen("s1", str(transcript), NOW)
    registry.record_report("s1", 0, Offsets(size, {}), False, str(transcript), NOW)
    assert registry.quiet_sessions(QUIET, NOW) == []  # reported, nothing since
    registry.seen("s1", str(transcript), NOW)  # resumed (or a fork of it started)...
    assert registry.quiet_sessions(QUIET, NOW) == []  # ...but nothing was written
    with open(transcript, "ab") as out:
        out.write(b'{"type": "system"}\n')
    os.utime(transcript, (NOW - QUIET, NOW - QUIET))
    assert registry.quiet_sessions(QUIET, NOW) == [("s1", str(transcript))]
    registry.record_report("s1", 1, Offsets(transcript.stat().st_size, {}), False, str(transcript), NOW)
    assert registry.quiet_sessions(QUIET, NOW) == []


def test_growth_no_hook_saw_is_not_reported(registry: SessionRegistry, tmp_path: Path) -> None:
    """A resume with the plugin disabled: no hook saw it, so the quiet rule leaves it alone."""
    transcript = quiet_transcript(tmp_path)
    registry.seen("s1", str(transcript), NOW)
    registry.record_report("s1", 0, Offsets(10, {}), False, str(transcript), NOW)
    assert registry.quiet_sessions(QUIET, NOW) == []


def test_sessions_without_a_transcript_are_never_quiet(registry: SessionRegistry, tmp_path: Path) -> None:
    registry.seen("s1", str(tmp_path / "missing.jsonl"), NOW)
    registry.seen("s2", None, NOW)
    assert registry.quiet_sessions(0, NOW) == []


# Forgetting


def test_sessions_are_forgotten_long_after_their_last_sign(registry: SessionRegistry) -> None:
    old = NOW - FORGET_AFTER_SECONDS - 1
    registry.seen("gone", "/t/gone.jsonl", old)
    registry.record_report("gone", 0, Offsets(5, {}), False, None, old)
    registry.add_roots("gone", ["u-gone"])
    registry.seen("resumed", "/t/resumed.jsonl", old)
    registry.record_report("resumed", 0, Offsets(5, {}), False, None, old)
    registry.seen("resumed", "/t/resumed.jsonl", NOW - 60)  # seen again lately: kept
    registry.seen("unreported", "/t/unreported.jsonl", old)  # waits for its report
    registry.forget_old(NOW)
    assert registry.progress("gone") == NOTHING_REPORTED
    assert registry.transcripts_with_root("u-gone", "x") == []
    assert registry.progress("resumed").segments == 1
    kept = {session_id for (session_id,) in registry._db.execute("SELECT session_id FROM sessions")}
    assert kept == {"resumed", "unreported"}


# Damage and migration


def test_damaged_offsets_count_from_the_files_end_never_from_the_start(
    registry: SessionRegistry, tmp_path: Path
) -> None:
    transcript = session(tmp_path, [prompt("hi")], **{"agent-a1": [answer("x1")]})
    registry.record_report("s1", 0, Offsets(1, {}), False, str(transcript), NOW)
    registry._db.execute("UPDATE sessions SET reported_end = 'garbage'")
    subagent = transcript.with_suffix("") / "subagents" / "agent-a1.jsonl"
    assert registry.progress("s1") == Progress(
        1, Offsets(transcript.stat().st_size, {"agent-a1.jsonl": subagent.stat().st_size}), False
    )


PREVIOUS_LAYOUT = (
    "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, transcript_path TEXT,"
    " first_seen REAL NOT NULL, reported_at REAL)"
)


def test_a_registry_of_the_previous_layout_is_migrated(tmp_path: Path) -> None:
    """One report per session, no offsets: a session it reported counts as reported up to its files' size
    now (a later resume reports what it adds); one it had only seen is reported from the start."""
    reported = session(tmp_path / "a", [prompt("hi"), answer("m1")], **{"agent-a1": [answer("x1")]})
    seen = write(tmp_path / "b" / "s.jsonl", [prompt("hi")])
    db = sqlite3.connect(tmp_path / REGISTRY_FILE)
    db.execute(PREVIOUS_LAYOUT)
    db.executemany(
        "INSERT INTO sessions VALUES (?, ?, ?, ?)",
        [("reported", str(reported), NOW, NOW), ("seen", str(seen), NOW, None), ("gone", "/nowhere.jsonl", NOW, NOW)],
    )
    db.commit()
    db.close()

    registry = SessionRegistry(str(tmp_path))
    subagent = reported.with_suffix("") / "subagents" / "agent-a1.jsonl"
    assert registry.progress("reported") == Progress(
        1, Offsets(reported.stat().st_size, {"agent-a1.jsonl": subagent.stat().st_size}), False
    )
    assert registry.progress("seen") == NOTHING_REPORTED
    assert registry.progress("gone") == Progress(1, Offsets(0, {}), False)
    assert registry.quiet_sessions(0, NOW + QUIET) == [("seen", str(seen))]
    registry.close()

    again = SessionRegistry(str(tmp_path))  # opening a migrated registry changes nothing
    assert again.progress("reported").end.main == reported.stat().st_size
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again.close()
