"""Spool records <-> model objects.

The hooks write three kinds of record (event, session_start, session_end); the
exporter turns a session_end into a ready `session` record before sending. A ready
record also says where its segment ended, so the registry can be brought up to date
from it (see Exporter._queue_session).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Dict, NamedTuple, Optional

from .. import spool
from ..model import AGGREGATE_KEYS, Event, Session, SessionAggregates
from ..payloads import Refused, event_text, session_text
from ..transcript import Offsets


class BadRecord(ValueError):
    """A spool record that cannot be what its kind says."""


def required(record: Dict[str, Any], key: str, kind: type) -> Any:
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRecord(f"{record.get('record')} record: {key!r} is not {kind.__name__}")
    return value


def _optional_str(record: Dict[str, Any], key: str) -> Optional[str]:
    value = record.get(key)
    return value if isinstance(value, str) and value else None


def event_from_record(record: Dict[str, Any], user_id: Optional[str]) -> Event:
    event = Event(
        kind=required(record, "kind", str),
        name=required(record, "name", str),
        prompt_length=required(record, "prompt_length", int),
        session_id=required(record, "session_id", str),
        timestamp=required(record, "timestamp", int),
        user_id=user_id,
        version=required(record, "version", str),
        os=required(record, "os", str),
    )
    _within_the_contract(event_text, event)
    return event


def _within_the_contract(render: Callable[[Any], str], item: Any) -> None:
    """What the endpoint would refuse is not sent: it would only come back refused."""
    try:
        render(item)
    except Refused as problem:
        raise BadRecord(str(problem)) from problem


class SegmentEnd(NamedTuple):
    """Where a reported segment ended: the registry's state once it is reported."""

    offsets: Offsets
    awaiting_answer: bool


def session_to_record(session: Session, end: Optional[SegmentEnd] = None) -> Dict[str, Any]:
    record: Dict[str, Any] = {"record": spool.SESSION}
    record.update({k: v for k, v in asdict(session).items() if k != "aggregates"})
    record.update(session.aggregates.as_dict())
    if end is not None:
        record.update(segment_end=end.offsets.as_dict(), awaiting_answer=end.awaiting_answer)
    return record


def segment_end(record: Dict[str, Any]) -> Optional[SegmentEnd]:
    """Where a ready session record's segment ended; None for records that do not say (earlier versions):
    the session is sent all the same."""
    try:
        offsets = Offsets.from_dict(record.get("segment_end"))
    except ValueError:
        return None
    return SegmentEnd(offsets, record.get("awaiting_answer") is True)


def stop_offsets(record: Dict[str, Any]) -> Optional[Offsets]:
    """The sizes of a session's files when its SessionEnd hook fired, where its run's entries end.

    None (read to the end of the files) for records of hooks that did not measure them, or
    sizes that are not sizes.
    """
    if "transcript_bytes" not in record:
        return None
    main = record["transcript_bytes"]
    try:
        return Offsets.from_dict({"main": 0 if main is None else main, "subagents": record.get("subagent_bytes")})
    except ValueError:
        return None


def session_from_record(record: Dict[str, Any]) -> Session:
    session = Session(
        session_id=required(record, "session_id", str),
        user_id=_optional_str(record, "user_id"),
        exit_reason=required(record, "exit_reason", str),
        start_ns=required(record, "start_ns", int),
        end_ns=required(record, "end_ns", int),
        version=required(record, "version", str),
        os=required(record, "os", str),
        aggregates=SessionAggregates(**{key: required(record, key, int) for key in AGGREGATE_KEYS}),
        segment=required(record, "segment", int) if "segment" in record else 0,
    )
    _within_the_contract(session_text, session)
    return session
