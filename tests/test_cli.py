"""`otel-metrics` itself: argument parsing and what session-summary fills in besides the transcript."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from otel_metrics.cli import listen_address
from otel_metrics.model import COUNT_KEYS
from otel_metrics.payloads import format_timestamp, mac
from support.legacy_payloads import USER, session_summary


def test_a_transcript_without_session_id_or_times_is_named_by_its_file(tmp_path: Path) -> None:
    transcript = tmp_path / "3c5e1b0a-session.jsonl"
    transcript.write_text('{"type": "system"}\n', encoding="utf-8")
    (tmp_path / ".anonymous_id").write_text(USER + "\n", encoding="ascii")
    payload = session_summary(transcript, tmp_path, "--reason", "Not An Identifier")
    now = payload["start_timestamp"]  # no timestamps: the session starts and ends when asked
    assert payload == {
        "session_id": "3c5e1b0a-session",
        "user_id": USER,
        "os": payload["os"],
        "engine": "claude",
        "start_timestamp": now,
        "end_timestamp": now,
        "session_duration": 0,
        "exit_reason": "other",
        "mac": mac("3c5e1b0a-session", now),
        **{key: 0 for key in COUNT_KEYS},
        "had_errors": False,
    }
    assert payload["os"] in ("darwin", "linux", "windows")


def test_the_session_id_comes_from_the_transcript_and_the_reason_is_kept(tmp_path: Path) -> None:
    transcript = tmp_path / "renamed.jsonl"
    transcript.write_text(
        '{"type": "user", "sessionId": "real-id", "timestamp": "2025-10-30T12:00:00.750Z",'
        ' "message": {"content": "hello"}}\n',
        encoding="utf-8",
    )
    payload = session_summary(transcript, tmp_path, "--reason", "logout")
    assert (payload["session_id"], payload["user_id"], payload["exit_reason"]) == ("real-id", None, "logout")
    assert payload["start_timestamp"] == payload["end_timestamp"] == format_timestamp(1761825600)
    assert payload["mac"] == mac("real-id", "2025-10-30T12:00:00Z")


@pytest.mark.parametrize(
    "text, address",
    [("127.0.0.1:4318", ("127.0.0.1", 4318)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:4319", ("::1", 4319))],
)
def test_listen_addresses(text: str, address: tuple) -> None:
    assert listen_address(text) == address


@pytest.mark.parametrize("text", ["4318", ":4318", "localhost:http", "127.0.0.1:65536", "127.0.0.1:-1"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        listen_address(text)
