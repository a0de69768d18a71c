"""Spool records <-> model objects.

The hooks write three kinds of record (event, session_start, session_end); the
exporter turns a session_end into a ready `session` record before sending.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Optional

from ..model import COUNT_KEYS, Event, Session, SessionAggregates

EVENT = "event"
SESSION_START = "session_start"
SESSION_END = "session_end"
SESSION = "session"


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
    return Event(
        kind=required(record, "kind", str),
        name=required(record, "name", str),
        prompt_length=required(record, "prompt_length", int),
        session_id=required(record, "session_id", str),
        timestamp=required(record, "timestamp", int),
        user_id=user_id,
        version=required(record, "version", str),
        os=required(record, "os", str),
    )


def session_to_record(session: Session) -> Dict[str, Any]:
    record: Dict[str, Any] = {"record": SESSION}
    record.update({k: v for k, v in asdict(session).items() if k != "aggregates"})
    record.update(session.aggregates.as_dict())
    return record


def session_from_record(record: Dict[str, Any]) -> Session:
    return Session(
        session_id=required(record, "session_id", str),
        user_id=_optional_str(record, "user_id"),
        exit_reason=required(record, "exit_reason", str),
        start_ns=required(record, "start_ns", int),
        end_ns=required(record, "end_ns", int),
        version=required(record, "version", str),
        os=required(record, "os", str),
        aggregates=SessionAggregates(**{key: required(record, key, int) for key in COUNT_KEYS}),
    )
