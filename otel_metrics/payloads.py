"""Events and sessions -> the legacy JSON payloads of /events and /sessions, and their validation.

The forwarder builds payloads here and checks them with the same validators the
reference endpoint uses, so it never queues what the endpoint would refuse.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any, Dict, List, Optional

from .events import is_command_name
from .model import COUNT_KEYS, ENGINE, EVENT_KINDS, OS_NAMES, TOKEN_KEYS, Event, Session

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EXIT_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MAC = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NS_PER_SECOND = 1_000_000_000

EVENT_KEYS = ("type", "name", "engine", "version", "timestamp", "session_id", "user_id", "os", "mac", "prompt_length")
SESSION_COUNT_KEYS = tuple(key for key in COUNT_KEYS if key not in TOKEN_KEYS)
SESSION_KEYS = (
    ("session_id", "user_id", "os", "engine", "start_timestamp", "end_timestamp", "session_duration")
    + ("exit_reason", "mac")
    + SESSION_COUNT_KEYS
    + ("had_errors",)
)
SESSION_OPTIONAL_KEYS = TOKEN_KEYS  # present only when greater than zero


def mac(session_id: str, timestamp: str) -> str:
    """The integrity check of the legacy payloads: sha256 of the exact strings sent."""
    return hashlib.sha256((session_id + timestamp).encode("utf-8")).hexdigest()


def format_timestamp(unix_seconds: int) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`; ValueError outside the years 1000..9999 (four digits).

    Arithmetic from the epoch instead of gmtime(), which refuses negative times on Windows.
    """
    try:
        moment = _EPOCH + datetime.timedelta(seconds=unix_seconds)
    except OverflowError:
        moment = None
    if moment is None or moment.year < 1000:
        raise ValueError(f"unix time {unix_seconds} is outside the years 1000..9999")
    return moment.strftime(TIMESTAMP_FORMAT)


def normalize_exit_reason(reason: object) -> str:
    """The hook's reason when it is a short lowercase identifier, else "other"."""
    if isinstance(reason, str) and _EXIT_REASON.fullmatch(reason):
        return reason
    return "other"


def event_payload(event: Event) -> Dict[str, Any]:
    timestamp = format_timestamp(event.timestamp)
    return {
        "type": event.kind,
        "name": event.name,
        "engine": ENGINE,
        "version": event.version,
        "timestamp": timestamp,
        "session_id": event.session_id,
        "user_id": event.user_id,
        "os": event.os,
        "mac": mac(event.session_id, timestamp),
        "prompt_length": event.prompt_length,
    }


def session_payload(session: Session) -> Dict[str, Any]:
    start = format_timestamp(session.start_ns // NS_PER_SECOND)
    end = format_timestamp(session.end_ns // NS_PER_SECOND)
    counts = session.aggregates.as_dict()
    payload: Dict[str, Any] = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "os": session.os,
        "engine": ENGINE,
        "start_timestamp": start,
        "end_timestamp": end,
        # Whole seconds between the full-precision instants, rounded down.
        "session_duration": (session.end_ns - session.start_ns) // NS_PER_SECOND,
        "exit_reason": normalize_exit_reason(session.exit_reason),
        "mac": mac(session.session_id, start),
    }
    payload.update({key: counts[key] for key in SESSION_COUNT_KEYS})
    payload["had_errors"] = counts["tool_error_count"] > 0
    payload.update({key: counts[key] for key in TOKEN_KEYS if counts[key] > 0})
    return payload


# Validation: a list of problems, empty when the payload is acceptable.


def validate_event_payload(payload: object) -> List[str]:
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, not {_json_type(payload)}"]
    errors = _key_set_errors(payload, set(EVENT_KEYS), set())
    _check_enum(errors, payload, "type", EVENT_KINDS)
    name = payload.get("name")
    if "name" in payload and not (isinstance(name, str) and is_command_name(name)):
        errors.append("name must be a command or skill name like 'jira:solve'")
    _check_enum(errors, payload, "engine", (ENGINE,))
    _check_nonempty_string(errors, payload, "version")
    _check_timestamp(errors, payload, "timestamp")
    _check_nonempty_string(errors, payload, "session_id")
    _check_user_id(errors, payload)
    _check_enum(errors, payload, "os", OS_NAMES)
    _check_int(errors, payload, "prompt_length", minimum=0)
    _check_mac(errors, payload, "timestamp")
    return errors


def validate_session_payload(payload: object) -> List[str]:
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, not {_json_type(payload)}"]
    errors = _key_set_errors(payload, set(SESSION_KEYS), set(SESSION_OPTIONAL_KEYS))
    _check_nonempty_string(errors, payload, "session_id")
    _check_user_id(errors, payload)
    _check_enum(errors, payload, "os", OS_NAMES)
    _check_enum(errors, payload, "engine", (ENGINE,))
    start = _check_timestamp(errors, payload, "start_timestamp")
    end = _check_timestamp(errors, payload, "end_timestamp")
    duration = _check_int(errors, payload, "session_duration", minimum=0)
    if start is not None and end is not None:
        span = int((end - start).total_seconds())
        if span < 0:
            errors.append("end_timestamp is before start_timestamp")
        elif duration is not None and not span - 1 <= duration <= span:
            # Timestamps drop their fractions, the duration is taken before that.
            errors.append(f"session_duration {duration} does not match the timestamps ({span} s apart)")
    reason = payload.get("exit_reason")
    if "exit_reason" in payload and normalize_exit_reason(reason) != reason:
        errors.append("exit_reason must be a short lowercase identifier (a-z, 0-9, _)")
    _check_mac(errors, payload, "start_timestamp")
    for key in SESSION_COUNT_KEYS:
        _check_int(errors, payload, key, minimum=0)
    for key in SESSION_OPTIONAL_KEYS:
        _check_int(errors, payload, key, minimum=1)  # zero is sent by leaving the key out
    had_errors = payload.get("had_errors")
    if "had_errors" in payload:
        if not isinstance(had_errors, bool):
            errors.append(f"had_errors must be a boolean, not {_json_type(had_errors)}")
        else:
            tool_errors = payload.get("tool_error_count")
            if _is_int(tool_errors) and had_errors != (tool_errors > 0):
                errors.append("had_errors must be true exactly when tool_error_count > 0")
    return errors


def _key_set_errors(payload: Dict[str, Any], required: set, optional: set) -> List[str]:
    errors = []
    missing = sorted(required - payload.keys())
    unexpected = sorted(payload.keys() - required - optional)
    if missing:
        errors.append("missing keys: " + ", ".join(missing))
    if unexpected:
        errors.append("unexpected keys: " + ", ".join(unexpected))
    return errors


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _check_int(errors: List[str], payload: Dict[str, Any], key: str, minimum: int) -> Optional[int]:
    if key not in payload:
        return None
    value = payload[key]
    if not _is_int(value):
        errors.append(f"{key} must be an integer, not {_json_type(value)}")
        return None
    if value < minimum:
        errors.append(f"{key} must be >= {minimum}")
        return None
    return value


def _check_nonempty_string(errors: List[str], payload: Dict[str, Any], key: str) -> None:
    if key in payload and not (isinstance(payload[key], str) and payload[key]):
        errors.append(f"{key} must be a non-empty string")


def _check_user_id(errors: List[str], payload: Dict[str, Any]) -> None:
    value = payload.get("user_id")
    if "user_id" in payload and value is not None and not (isinstance(value, str) and value):
        errors.append("user_id must be a non-empty string or null")


def _check_enum(errors: List[str], payload: Dict[str, Any], key: str, allowed: tuple) -> None:
    if key in payload and (not isinstance(payload[key], str) or payload[key] not in allowed):
        errors.append(f"{key} must be one of: " + ", ".join(allowed))


def _check_timestamp(errors: List[str], payload: Dict[str, Any], key: str) -> Optional[datetime.datetime]:
    if key not in payload:
        return None
    value = payload[key]
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        try:
            return datetime.datetime.strptime(value, TIMESTAMP_FORMAT)
        except ValueError:
            pass
    errors.append(f"{key} must be a UTC time formatted YYYY-MM-DDTHH:MM:SSZ")
    return None


def _check_mac(errors: List[str], payload: Dict[str, Any], timestamp_key: str) -> None:
    value = payload.get("mac")
    if "mac" not in payload:
        return
    if not (isinstance(value, str) and _MAC.fullmatch(value)):
        errors.append("mac must be 64 lowercase hex digits (sha256)")
        return
    session_id, timestamp = payload.get("session_id"), payload.get(timestamp_key)
    if isinstance(session_id, str) and isinstance(timestamp, str) and value != mac(session_id, timestamp):
        errors.append(f"mac is not sha256(session_id + {timestamp_key})")
