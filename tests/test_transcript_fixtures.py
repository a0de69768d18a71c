"""Real Claude Code transcripts (shared/fixtures/transcripts) against their NAME.expected.json.

Each expected file holds what the session payload says about the transcript (exit
reason "other"): start/end/duration and every count; token keys only when > 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import pytest

from otel_metrics.model import TOKEN_KEYS
from otel_metrics.transcript import TranscriptSummary, summarize
from support.legacy_payloads import session_summary
from support.paths import FIXTURES

EXPECTED: List[Path] = sorted(FIXTURES.glob("*/*.expected.json")) if FIXTURES.is_dir() else []
# What the payload carries besides the expected keys: who and where, not the transcript.
PAYLOAD_IDENTITY_KEYS = {"session_id", "user_id", "os", "engine", "mac"}

pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"no transcript fixtures at {FIXTURES} (shared/ beside the repo)"
)


def transcript_of(expected: Path) -> Path:
    return expected.with_name(expected.name[: -len(".expected.json")] + ".jsonl")


def utc_seconds_text(unix_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_ns // 1_000_000_000))


def as_expected_payload(summary: TranscriptSummary) -> Dict[str, object]:
    """The fields of the session payload the expected files hold (the CLI test checks the real one)."""
    assert summary.start_ns is not None and summary.end_ns is not None
    fields: Dict[str, object] = {
        key: value for key, value in summary.aggregates.as_dict().items() if key not in TOKEN_KEYS or value > 0
    }
    fields.update(
        had_errors=summary.aggregates.tool_error_count > 0,
        start_timestamp=utc_seconds_text(summary.start_ns),
        end_timestamp=utc_seconds_text(summary.end_ns),
        session_duration=(summary.end_ns - summary.start_ns) // 1_000_000_000,
        exit_reason="other",
    )
    return fields


def test_fixtures_are_there() -> None:
    assert len(EXPECTED) >= 6, f"expected transcripts missing from {FIXTURES}"
    for expected in EXPECTED:
        assert transcript_of(expected).is_file(), expected


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_summarize_gives_the_expected_aggregates(expected: Path) -> None:
    summary = summarize(transcript_of(expected))
    assert as_expected_payload(summary) == json.loads(expected.read_text(encoding="utf-8"))
    assert summary.skipped_lines == 0
    assert summary.session_id is not None


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_session_summary_command_prints_the_expected_payload(expected: Path, state: Path) -> None:
    transcript = transcript_of(expected)
    payload = session_summary(transcript, state, "--reason", "other")  # an empty state: no user id of the machine's
    identity = {key: payload.pop(key) for key in PAYLOAD_IDENTITY_KEYS}
    assert payload == json.loads(expected.read_text(encoding="utf-8"))
    assert identity["session_id"] == summarize(transcript).session_id
    assert identity["user_id"] is None
