"""Legacy payloads: building them from events and sessions, and validating them as the endpoint does."""

from __future__ import annotations

import copy
import time
from typing import Any, Dict

import pytest
from hypothesis import given

from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.payloads import (
    canonical_text,
    event_payload,
    format_timestamp,
    mac,
    session_payload,
    validate_event_payload,
    validate_session_payload,
)
from support.model_strategies import events, sessions

USER = "550e8400-e29b-41d4-a716-446655440000"
EVENT = Event("slash_command", "jira:solve", 42, "abc123", 1761827696, USER, "1.0", "darwin")
EVENT_PAYLOAD: Dict[str, Any] = {
    "type": "slash_command",
    "name": "jira:solve",
    "engine": "claude",
    "version": "1.0",
    "timestamp": "2025-10-30T12:34:56Z",
    "session_id": "abc123",
    "user_id": USER,
    "os": "darwin",
    "mac": "11f81b0fcc845fbdb22ed467049c591231626f1bfc2be6f3d254df74215a0a5e",
    "prompt_length": 42,
}
SESSION = Session(
    session_id="sess-1",
    user_id=None,
    exit_reason="clear",
    start_ns=1761827000_500000000,  # 12:23:20.5
    end_ns=1761827696_100000000,  # 12:34:56.1: 695.6 s later
    version="1.0",
    os="linux",
    aggregates=SessionAggregates(
        turn_count=2,
        user_message_count=3,
        assistant_message_count=4,
        total_tool_calls=9,
        tool_error_count=1,
        bash_call_count=1,
        file_read_count=2,
        file_edit_count=1,
        file_write_count=1,
        grep_call_count=1,
        glob_call_count=1,
        web_fetch_call_count=1,
        web_search_call_count=1,
        total_input_tokens=10,
        cache_read_tokens=5,
    ),
)
SESSION_PAYLOAD: Dict[str, Any] = {
    "session_id": "sess-1",
    "user_id": None,
    "os": "linux",
    "engine": "claude",
    "start_timestamp": "2025-10-30T12:23:20Z",
    "end_timestamp": "2025-10-30T12:34:56Z",
    "session_duration": 695,
    "exit_reason": "clear",
    "mac": "aba176c2d91b1e7c691252c880082f6beb0b8c6eb87592c6c6af880134d46c88",
    "turn_count": 2,
    "user_message_count": 3,
    "assistant_message_count": 4,
    "total_tool_calls": 9,
    "tool_error_count": 1,
    "bash_call_count": 1,
    "file_read_count": 2,
    "file_edit_count": 1,
    "file_write_count": 1,
    "grep_call_count": 1,
    "glob_call_count": 1,
    "web_fetch_call_count": 1,
    "web_search_call_count": 1,
    "had_errors": True,
    "total_input_tokens": 10,
    "cache_read_tokens": 5,
}


DELETE = object()


def changed(payload: Dict[str, Any], **changes: Any) -> Dict[str, Any]:
    result = copy.deepcopy(payload)
    for key, value in changes.items():
        if value is DELETE:
            del result[key]
        else:
            result[key] = value
    return result


# Building.


def test_mac_is_the_sha256_hex_of_session_id_and_timestamp() -> None:
    assert mac("abc123", "2025-10-30T12:34:56Z") == EVENT_PAYLOAD["mac"]


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "1970-01-01T00:00:00Z"),
        (1761827696, "2025-10-30T12:34:56Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (253402300799, "9999-12-31T23:59:59Z"),
    ],
)
def test_format_timestamp_is_utc_to_the_second(seconds: int, text: str) -> None:
    assert format_timestamp(seconds) == text


@pytest.mark.parametrize("seconds", [253402300800, -30610224001, 10**20])
def test_format_timestamp_refuses_years_without_four_digits(seconds: int) -> None:
    with pytest.raises(ValueError):
        format_timestamp(seconds)


def test_event_payload_has_exactly_the_ten_keys() -> None:
    assert event_payload(EVENT) == EVENT_PAYLOAD
    assert list(event_payload(EVENT)) == list(EVENT_PAYLOAD)  # the order of the legacy contract's table


def test_event_payload_without_user_id_sends_null() -> None:
    event = Event("skill", "pdf", 0, "abc123", 1761827696, None, "1.0", "windows")
    assert event_payload(event) == changed(
        EVENT_PAYLOAD, type="skill", name="pdf", user_id=None, os="windows", prompt_length=0
    )


def test_session_payload_truncates_times_and_rounds_the_duration_down() -> None:
    assert session_payload(SESSION) == SESSION_PAYLOAD


def test_session_duration_is_taken_before_the_fractions_are_dropped() -> None:
    session = Session("s", None, "other", 10_900_000_000, 11_100_000_000, "1.0", "linux")
    payload = session_payload(session)
    assert (payload["start_timestamp"], payload["end_timestamp"]) == ("1970-01-01T00:00:10Z", "1970-01-01T00:00:11Z")
    assert payload["session_duration"] == 0


def test_session_payload_leaves_out_zero_tokens_and_sets_had_errors_from_tool_errors() -> None:
    session = Session("sess-1", USER, "logout", SESSION.start_ns, SESSION.end_ns, "1.0", "linux")
    assert session_payload(session) == {
        "session_id": "sess-1",
        "user_id": USER,
        "os": "linux",
        "engine": "claude",
        "start_timestamp": "2025-10-30T12:23:20Z",
        "end_timestamp": "2025-10-30T12:34:56Z",
        "session_duration": 695,
        "exit_reason": "logout",
        "mac": SESSION_PAYLOAD["mac"],
        "turn_count": 0,
        "user_message_count": 0,
        "assistant_message_count": 0,
        "total_tool_calls": 0,
        "tool_error_count": 0,
        "bash_call_count": 0,
        "file_read_count": 0,
        "file_edit_count": 0,
        "file_write_count": 0,
        "grep_call_count": 0,
        "glob_call_count": 0,
        "web_fetch_call_count": 0,
        "web_search_call_count": 0,
        "had_errors": False,
    }


@given(events())
def test_every_valid_event_makes_a_valid_payload(event: Event) -> None:
    payload = event_payload(event)
    assert validate_event_payload(payload) == []
    assert payload["mac"] == mac(event.session_id, payload["timestamp"])


@given(sessions())
def test_every_valid_session_makes_a_valid_payload(session: Session) -> None:
    assert validate_session_payload(session_payload(session)) == []


# Validation, as the endpoint does it.


def test_valid_payloads_have_no_problems() -> None:
    assert validate_event_payload(EVENT_PAYLOAD) == []
    assert validate_session_payload(SESSION_PAYLOAD) == []


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({"mac": DELETE}, ["missing keys: mac"]),
        ({"extra": 1}, ["unexpected keys: extra"]),
        ({"type": "command"}, ["type must be one of: slash_command, skill"]),
        ({"name": "/usr/bin/tool"}, ["name must be a command or skill name like 'jira:solve'"]),
        ({"engine": "cursor"}, ["engine must be one of: claude"]),
        ({"version": ""}, ["version must be a non-empty string"]),
        ({"os": "freebsd"}, ["os must be one of: darwin, linux, windows"]),
        ({"user_id": 7}, ["user_id must be a non-empty string or null"]),
        ({"prompt_length": True}, ["prompt_length must be an integer, not a boolean"]),
        ({"prompt_length": 4.0}, ["prompt_length must be an integer, not a number"]),
        ({"prompt_length": "42"}, ["prompt_length must be an integer, not a string"]),
        ({"prompt_length": -1}, ["prompt_length must be >= 0"]),
        ({"mac": EVENT_PAYLOAD["mac"].upper()}, ["mac must be 64 lowercase hex digits (sha256)"]),
        ({"mac": "0" * 64}, ["mac is not sha256(session_id + timestamp)"]),
        ({"session_id": "abc124"}, ["mac is not sha256(session_id + timestamp)"]),
    ],
)
def test_event_payload_problems(changes: Dict[str, Any], problems: list) -> None:
    assert validate_event_payload(changed(EVENT_PAYLOAD, **changes)) == problems


@pytest.mark.parametrize(
    "timestamp", ["2025-10-30 12:34:56", "2025-10-30T12:34:56.5Z", "2025-10-30T12:34:56+00:00", "2025-13-30T12:34:56Z"]
)
def test_event_timestamp_must_be_the_exact_utc_format(timestamp: str) -> None:
    payload = changed(EVENT_PAYLOAD, timestamp=timestamp, mac=mac("abc123", timestamp))
    assert validate_event_payload(payload) == ["timestamp must be a UTC time formatted YYYY-MM-DDTHH:MM:SSZ"]


@pytest.mark.parametrize("payload", [[], "event", None, 3])
def test_payload_must_be_an_object(payload: object) -> None:
    assert validate_event_payload(payload)[0].startswith("payload must be a JSON object")
    assert validate_session_payload(payload)[0].startswith("payload must be a JSON object")


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({"turn_count": DELETE, "os": DELETE}, ["missing keys: os, turn_count"]),
        ({"prompt_length": 1}, ["unexpected keys: prompt_length"]),
        ({"cache_read_tokens": 0}, ["cache_read_tokens must be >= 1"]),
        ({"cache_creation_tokens": 3}, []),
        ({"turn_count": True}, ["turn_count must be an integer, not a boolean"]),
        ({"bash_call_count": -2}, ["bash_call_count must be >= 0"]),
        ({"had_errors": 1}, ["had_errors must be a boolean, not a number"]),
        ({"had_errors": False}, ["had_errors must be true exactly when tool_error_count > 0"]),
        ({"exit_reason": "Logout"}, ["exit_reason must be a short lowercase identifier (a-z, 0-9, _)"]),
        ({"session_duration": 697}, ["session_duration 697 does not match the timestamps (696 s apart)"]),
        ({"session_duration": 696}, []),
        (
            {"end_timestamp": "2025-10-30T12:23:19Z"},
            ["end_timestamp is before start_timestamp"],
        ),
        ({"start_timestamp": "2025-10-30T12:23:21Z"}, ["mac is not sha256(session_id + start_timestamp)"]),
    ],
)
def test_session_payload_problems(changes: Dict[str, Any], problems: list) -> None:
    assert validate_session_payload(changed(SESSION_PAYLOAD, **changes)) == problems


# Plausibility (limits.py): what no hook produces is refused, on both sides of the pipeline.

NOW = 1764000000  # 2025-11-24T16:00:00Z: the validating server's clock in these tests
EARLIEST = "2020-01-01T00:00:00Z"
TIME_RANGE = f"from {EARLIEST} to 86400 s after this server's clock (2025-11-25T16:00:00Z)"


def signed(payload: Dict[str, Any], timestamp_key: str, **changes: Any) -> Dict[str, Any]:
    """The payload with these changes and the MAC they call for."""
    result = changed(payload, **changes)
    if result["session_id"].isascii():  # else it has no MAC: a lone surrogate is not UTF-8
        result["mac"] = mac(result["session_id"], result[timestamp_key])
    return result


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({"timestamp": EARLIEST}, []),
        ({"timestamp": "2025-11-25T16:00:00Z"}, []),  # a day ahead: a clock may run fast
        ({"timestamp": "2019-12-31T23:59:59Z"}, [f"timestamp must be {TIME_RANGE}"]),
        ({"timestamp": "0001-01-01T00:00:00Z"}, [f"timestamp must be {TIME_RANGE}"]),
        ({"timestamp": "2025-11-25T16:00:01Z"}, [f"timestamp must be {TIME_RANGE}"]),
        ({"session_id": "s" * 128}, []),
        ({"session_id": "s" * 129}, ["session_id must be at most 128 characters"]),
        ({"session_id": "two words"}, ["session_id must be printable ASCII without spaces"]),
        ({"session_id": "caf\u00e9"}, ["session_id must be printable ASCII without spaces"]),
        ({"session_id": "\ud800"}, ["session_id must be printable ASCII without spaces"]),
        ({"session_id": "tab\there"}, ["session_id must be printable ASCII without spaces"]),
        ({"user_id": "u" * 129}, ["user_id must be at most 128 characters or null"]),
        ({"user_id": "<script>"}, []),  # printable: the contract says nothing more of it
        ({"user_id": "new\nline"}, ["user_id must be printable ASCII without spaces or null"]),
        ({"name": "p:" + "n" * 126}, []),
        ({"name": "p:" + "n" * 127}, ["name must be at most 128 characters"]),
        ({"version": "v" * 64}, []),
        ({"version": "v" * 65}, ["version must be at most 64 characters"]),
        ({"prompt_length": 64 * 1024 * 1024}, []),
        ({"prompt_length": 64 * 1024 * 1024 + 1}, ["prompt_length must be <= 67108864"]),
        ({"prompt_length": 2**63 - 1}, ["prompt_length must be <= 67108864"]),
    ],
)
def test_implausible_events_are_refused(changes: Dict[str, Any], problems: list) -> None:
    assert validate_event_payload(signed(EVENT_PAYLOAD, "timestamp", **changes), now=NOW) == problems


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({"start_timestamp": "1970-01-01T00:00:00Z", "end_timestamp": "2554-07-21T23:34:33Z"},
         [f"start_timestamp must be {TIME_RANGE}", f"end_timestamp must be {TIME_RANGE}"]),
        ({"end_timestamp": "2025-11-25T16:00:01Z"}, [f"end_timestamp must be {TIME_RANGE}"]),
        ({"start_timestamp": "2024-10-30T12:34:56Z", "end_timestamp": "2025-10-30T12:34:56Z",
          "session_duration": 365 * 86400}, []),
        ({"start_timestamp": "2024-10-29T12:34:55Z", "end_timestamp": "2025-10-30T12:34:56Z",
          "session_duration": 366 * 86400 + 1}, ["the session lasts 31622401 s, more than 31622400 s"]),
        ({"turn_count": 10**9}, []),
        ({"turn_count": 2**63 - 1}, ["turn_count must be <= 1000000000"]),
        ({"tool_error_count": 10**9 + 1, "had_errors": True}, ["tool_error_count must be <= 1000000000"]),
        ({"total_input_tokens": 10**13}, []),
        ({"total_input_tokens": 10**13 + 1}, ["total_input_tokens must be <= 10000000000000"]),
        ({"total_tool_calls": 0, "bash_call_count": 50, "file_read_count": 0, "file_edit_count": 0,
          "file_write_count": 0, "grep_call_count": 0, "glob_call_count": 0, "web_fetch_call_count": 0,
          "web_search_call_count": 0}, ["the per-tool counts add up to 50, more than total_tool_calls (0)"]),
        ({"total_tool_calls": 8}, ["the per-tool counts add up to 9, more than total_tool_calls (8)"]),
        ({"total_tool_calls": 100}, []),  # other tools (Task, TodoWrite...) count in the total only
        # A run answers prompts and tool calls of the run before it: these need not add up.
        ({"turn_count": 5, "user_message_count": 1, "tool_error_count": 12, "had_errors": True}, []),
        ({"session_id": "x" * 129}, ["session_id must be at most 128 characters"]),
    ],
)  # fmt: skip
def test_implausible_sessions_are_refused(changes: Dict[str, Any], problems: list) -> None:
    assert validate_session_payload(signed(SESSION_PAYLOAD, "start_timestamp", **changes), now=NOW) == problems


def test_the_clock_is_the_validating_servers_own() -> None:
    tomorrow = format_timestamp(int(time.time()) + 86400 - 60)
    assert validate_event_payload(signed(EVENT_PAYLOAD, "timestamp", timestamp=tomorrow)) == []
    in_two_days = format_timestamp(int(time.time()) + 2 * 86400)
    assert validate_event_payload(signed(EVENT_PAYLOAD, "timestamp", timestamp=in_two_days)) != []


def test_canonical_text_is_sorted_compact_ascii() -> None:
    assert canonical_text({"b": "\u00e9", "a": None, "c": [1, True]}) == '{"a":null,"b":"\\u00e9","c":[1,true]}'
