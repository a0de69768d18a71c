"""Spool records <-> model objects alone (exporter/records.py): what a record must hold to be what its
kind says, checked against the payload contract (what the endpoint would refuse is a bad record, never
sent), and the ready session record's round trip with where its segment ended."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import pytest
from hypothesis import given, settings

from otel_metrics import spool
from otel_metrics.exporter.records import (
    BadRecord,
    SegmentEnd,
    event_from_record,
    segment_end,
    session_from_record,
    session_to_record,
    stop_offsets,
)
from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.transcript import Offsets
from support.legacy_payloads import USER
from support.model_strategies import sessions

EVENT_RECORD: Dict[str, Any] = {
    "record": spool.EVENT,
    "kind": "slash_command",
    "name": "jira:solve",
    "prompt_length": 17,
    "session_id": "s1",
    "timestamp": 1761827696,
    "version": "1.0",
    "os": "linux",
    "transcript_path": None,
}
SESSION = Session(
    "s1", USER, "logout", 1761827000_500000000, 1761827696_100000000, "1.0", "darwin",
    SessionAggregates(turn_count=2, user_message_count=2, assistant_message_count=3, total_tool_calls=4,
                      bash_call_count=2, grep_call_count=1, total_output_tokens=120),
    segment=2,
)  # fmt: skip


def test_an_event_record_is_the_event_with_the_users_id() -> None:
    assert event_from_record(EVENT_RECORD, USER) == Event(
        "slash_command", "jira:solve", 17, "s1", 1761827696, USER, "1.0", "linux"
    )
    assert event_from_record(EVENT_RECORD, None).user_id is None  # no anonymous id (yet): sent without


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("kind", None, "event record: 'kind' is not str"),
        ("name", 7, "event record: 'name' is not str"),
        ("prompt_length", "17", "event record: 'prompt_length' is not int"),
        ("prompt_length", True, "event record: 'prompt_length' is not int"),  # JSON's true is no count
        ("timestamp", 1761827696.5, "event record: 'timestamp' is not int"),
        ("version", None, "event record: 'version' is not str"),
    ],
)
def test_an_event_record_of_the_wrong_shape_is_a_bad_record(key: str, value: Any, problem: str) -> None:
    with pytest.raises(BadRecord) as refused:
        event_from_record({**EVENT_RECORD, key: value}, USER)
    assert str(refused.value) == problem
    missing = {k: v for k, v in EVENT_RECORD.items() if k != key}
    with pytest.raises(BadRecord, match=f"'{key}' is not"):
        event_from_record(missing, USER)


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"name": "/usr/bin/tool"}, "name must be a command or skill name like 'jira:solve'"),
        ({"kind": "prompt"}, "type must be one of"),
        ({"os": "freebsd"}, "os must be one of"),
        ({"session_id": "s" * 129}, "session_id must be at most 128 characters"),
        ({"timestamp": 10**12}, "outside the years 1000..9999"),
    ],
)
def test_an_event_the_endpoint_would_refuse_is_a_bad_record(changes: Dict[str, Any], problem: str) -> None:
    with pytest.raises(BadRecord) as refused:
        event_from_record({**EVENT_RECORD, **changes}, USER)
    assert problem in str(refused.value)


def test_a_ready_session_record_gives_the_session_back_with_where_its_segment_ended() -> None:
    end = SegmentEnd(Offsets(1200, {"agent-a1.jsonl": 300}), awaiting_answer=True)
    record = session_to_record(SESSION, end)
    assert record["record"] == spool.SESSION
    assert session_from_record(record) == SESSION
    assert segment_end(record) == end
    assert segment_end(session_to_record(SESSION)) is None  # no end given: the session is sent all the same


@settings(max_examples=100, deadline=None)
@given(sessions())
def test_every_valid_session_survives_its_record(session: Session) -> None:
    assert session_from_record(session_to_record(session)) == session


def test_a_ready_record_of_an_earlier_version_is_a_first_run_without_an_end() -> None:
    record = session_to_record(SESSION)
    del record["segment"]
    assert session_from_record(record) == dataclasses.replace(SESSION, segment=0)
    assert segment_end({**record, "segment_end": {"main": "garbage"}}) is None
    assert segment_end({**record, "segment_end": {"main": 5, "subagents": {}}, "awaiting_answer": "yes"}) == (
        SegmentEnd(Offsets(5, {}), awaiting_answer=False)  # only true is true
    )


def test_an_empty_user_id_is_none() -> None:
    assert session_from_record({**session_to_record(SESSION), "user_id": ""}).user_id is None


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"turn_count": "2"}, "session record: 'turn_count' is not int"),
        ({"start_ns": None}, "session record: 'start_ns' is not int"),
        ({"segment": 1.0}, "session record: 'segment' is not int"),
        ({"total_tool_calls": 0}, "the per-tool counts add up to 3, more than total_tool_calls (0)"),
        ({"turn_count": -1}, "turn_count must be"),
        ({"exit_reason": 7}, "session record: 'exit_reason' is not str"),
    ],
)
def test_a_session_record_of_the_wrong_shape_or_beyond_the_contract_is_a_bad_record(
    changes: Dict[str, Any], problem: str
) -> None:
    with pytest.raises(BadRecord) as refused:
        session_from_record({**session_to_record(SESSION), **changes})
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    "sizes, offsets",
    [
        ({}, None),  # a hook of an earlier version measured nothing: read to the end
        ({"transcript_bytes": 120, "subagent_bytes": {"agent-a1.jsonl": 40}}, Offsets(120, {"agent-a1.jsonl": 40})),
        ({"transcript_bytes": None, "subagent_bytes": {}}, Offsets(0, {})),  # no transcript file then
        ({"transcript_bytes": "12", "subagent_bytes": {}}, None),
        ({"transcript_bytes": 5, "subagent_bytes": {"a": -1}}, None),
        ({"transcript_bytes": 5}, None),
    ],
)
def test_where_a_session_end_says_its_run_stops(sizes: Dict[str, Any], offsets: Any) -> None:
    record = {"record": spool.SESSION_END, "session_id": "s1", "transcript_path": "/t/s1.jsonl", **sizes}
    assert stop_offsets(record) == offsets
