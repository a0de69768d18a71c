"""Events and sessions -> the legacy JSON payloads of /events and /sessions, and their validation.

The forwarder builds payloads here and checks them with the same validators the
reference endpoint uses, so it never queues what the endpoint would refuse.
Validation is the contract's shape (keys, types, the MAC) and its plausibility
(limits.py): bounded identifiers, times from 2020 to a day ahead of the
validating server's clock, sessions of at most a year, bounded counts, and
per-tool counts that fit in the total.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from . import limits
from .events import is_command_name
from .model import (
    COUNT_KEYS,
    COUNTED_TOOLS,
    ENGINE,
    EVENT_KINDS,
    OS_NAMES,
    TOKEN_KEYS,
    Event,
    Session,
    normalize_exit_reason,
)

if TYPE_CHECKING:
    from typing_extensions import TypeIs

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIMESTAMP_FIELDS = ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19))  # year, month, day, hour, minute, second
_MAC = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NS_PER_SECOND = 1_000_000_000

EVENT_KEYS = ("type", "name", "engine", "version", "timestamp", "session_id", "user_id", "os", "mac", "prompt_length")
SESSION_KEYS = (
    ("session_id", "user_id", "os", "engine", "start_timestamp", "end_timestamp", "session_duration")
    + ("exit_reason", "mac")
    + COUNT_KEYS
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
    payload.update({key: counts[key] for key in COUNT_KEYS})
    payload["had_errors"] = counts["tool_error_count"] > 0
    payload.update({key: counts[key] for key in TOKEN_KEYS if counts[key] > 0})
    return payload


# Validation: a list of problems, empty when the payload is acceptable. `now` (unix
# seconds, default the clock) is what "in the future" is measured against.


def validate_event_payload(payload: object, now: Optional[float] = None) -> List[str]:
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, not {_json_type(payload)}"]
    errors = _key_set_errors(payload, set(EVENT_KEYS), set())
    _check_enum(errors, payload, "type", EVENT_KINDS)
    name = payload.get("name")
    if "name" in payload and not (isinstance(name, str) and is_command_name(name)):
        # is_command_name bounds the length too: say which rule was broken.
        too_long = isinstance(name, str) and len(name) > limits.NAME_MAX_CHARS
        errors.append(
            f"name must be at most {limits.NAME_MAX_CHARS} characters"
            if too_long
            else "name must be a command or skill name like 'jira:solve'"
        )
    _check_enum(errors, payload, "engine", (ENGINE,))
    _check_nonempty_string(errors, payload, "version", limits.VERSION_MAX_CHARS)
    _check_timestamp(errors, payload, "timestamp", now)
    _check_identifier(errors, payload, "session_id")
    _check_user_id(errors, payload)
    _check_enum(errors, payload, "os", OS_NAMES)
    _check_int(errors, payload, "prompt_length", minimum=0, maximum=limits.PROMPT_LENGTH_MAX)
    _check_mac(errors, payload, "timestamp")
    return errors


def validate_session_payload(payload: object, now: Optional[float] = None) -> List[str]:
    if not isinstance(payload, dict):
        return [f"payload must be a JSON object, not {_json_type(payload)}"]
    errors = _key_set_errors(payload, set(SESSION_KEYS), set(SESSION_OPTIONAL_KEYS))
    _check_identifier(errors, payload, "session_id")
    _check_user_id(errors, payload)
    _check_enum(errors, payload, "os", OS_NAMES)
    _check_enum(errors, payload, "engine", (ENGINE,))
    start = _check_timestamp(errors, payload, "start_timestamp", now)
    end = _check_timestamp(errors, payload, "end_timestamp", now)
    duration = _check_int(errors, payload, "session_duration", minimum=0)
    if start is not None and end is not None:
        span = end - start
        if span < 0:
            errors.append("end_timestamp is before start_timestamp")
        elif span > limits.SESSION_MAX_SECONDS:
            errors.append(f"the session lasts {span} s, more than {limits.SESSION_MAX_SECONDS} s")
        elif duration is not None and not span - 1 <= duration <= span:
            # Timestamps drop their fractions, the duration is taken before that.
            errors.append(f"session_duration {duration} does not match the timestamps ({span} s apart)")
    reason = payload.get("exit_reason")
    if "exit_reason" in payload and normalize_exit_reason(reason) != reason:
        errors.append("exit_reason must be a short lowercase identifier (a-z, 0-9, _)")
    _check_mac(errors, payload, "start_timestamp")
    counts = {key: _check_int(errors, payload, key, minimum=0, maximum=limits.COUNT_MAX) for key in COUNT_KEYS}
    for key in SESSION_OPTIONAL_KEYS:
        _check_int(errors, payload, key, minimum=1, maximum=limits.TOKENS_MAX)  # zero is sent by leaving the key out
    tools = [counts[key] for key in COUNTED_TOOLS.values()]
    total = counts["total_tool_calls"]
    if total is not None and all(count is not None for count in tools):
        tool_sum = sum(count or 0 for count in tools)
        if tool_sum > total:
            errors.append(f"the per-tool counts add up to {tool_sum}, more than total_tool_calls ({total})")
    had_errors = payload.get("had_errors")
    if "had_errors" in payload:
        if not isinstance(had_errors, bool):
            errors.append(f"had_errors must be a boolean, not {_json_type(had_errors)}")
        else:
            tool_errors = payload.get("tool_error_count")
            if _is_int(tool_errors) and had_errors != (tool_errors > 0):
                errors.append("had_errors must be true exactly when tool_error_count > 0")
    return errors


def payload_text(payload: Dict[str, Any]) -> str:
    """The JSON text POSTed to the endpoint: the contract's key order, ASCII."""
    return json.dumps(payload)


class Refused(ValueError):
    """What the endpoint would refuse; the message says why."""


def event_text(event: Event) -> str:
    """The event's payload text, checked as the endpoint checks it (Refused otherwise)."""
    return _checked_text(event_payload, validate_event_payload, event)


def session_text(session: Session) -> str:
    """The session's payload text, checked as the endpoint checks it (Refused otherwise)."""
    return _checked_text(session_payload, validate_session_payload, session)


def _checked_text(build: Callable[[Any], Dict[str, Any]], validate: Callable[[Any], List[str]], item: Any) -> str:
    """Rendered once: the text that is checked is the text that is sent."""
    try:
        payload = build(item)
        problems = validate(payload)
    except ValueError as error:  # e.g. a timestamp outside the years 1000..9999
        raise Refused(str(error)) from error
    if problems:
        raise Refused("; ".join(problems))
    text = payload_text(payload)
    size, most = len(text), limits.PAYLOAD_MAX_BYTES  # ASCII: characters are bytes
    if size > most:
        raise Refused(f"the payload would be {size} bytes, more than the endpoint takes ({most})")
    return text


def canonical_text(payload: Dict[str, Any]) -> str:
    """The one JSON text of a validated payload, as the endpoint stores it: keys sorted, no spaces, ASCII."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _key_set_errors(payload: Dict[str, Any], required: Set[str], optional: Set[str]) -> List[str]:
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


def _is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _check_int(
    errors: List[str], payload: Dict[str, Any], key: str, minimum: int, maximum: Optional[int] = None
) -> Optional[int]:
    if key not in payload:
        return None
    value = payload[key]
    if not _is_int(value):
        errors.append(f"{key} must be an integer, not {_json_type(value)}")
        return None
    if value < minimum:
        errors.append(f"{key} must be >= {minimum}")
        return None
    if maximum is not None and value > maximum:
        errors.append(f"{key} must be <= {maximum}")
        return None
    return value


def _check_nonempty_string(errors: List[str], payload: Dict[str, Any], key: str, max_chars: int) -> None:
    value = payload.get(key)
    if key not in payload:
        return
    if not (isinstance(value, str) and value):
        errors.append(f"{key} must be a non-empty string")
    elif len(value) > max_chars:
        errors.append(f"{key} must be at most {max_chars} characters")


def _identifier_problem(key: str, value: object) -> Optional[str]:
    """Identifiers (session and user ids) are 1..SESSION_ID_MAX_CHARS printable ASCII characters, no space."""
    if not (isinstance(value, str) and value):
        return f"{key} must be a non-empty string"
    if len(value) > limits.SESSION_ID_MAX_CHARS:
        return f"{key} must be at most {limits.SESSION_ID_MAX_CHARS} characters"
    if not limits.SESSION_ID_CHARACTERS.issuperset(value):
        return f"{key} must be printable ASCII without spaces"
    return None


def _check_identifier(errors: List[str], payload: Dict[str, Any], key: str) -> None:
    problem = _identifier_problem(key, payload[key]) if key in payload else None
    if problem:
        errors.append(problem)


def _check_user_id(errors: List[str], payload: Dict[str, Any]) -> None:
    value = payload.get("user_id")
    if "user_id" not in payload or value is None:
        return
    problem = _identifier_problem("user_id", value)
    if problem:
        errors.append(problem + " or null")


def _check_enum(errors: List[str], payload: Dict[str, Any], key: str, allowed: Tuple[str, ...]) -> None:
    if key in payload and (not isinstance(payload[key], str) or payload[key] not in allowed):
        errors.append(f"{key} must be one of: " + ", ".join(allowed))


def _check_timestamp(errors: List[str], payload: Dict[str, Any], key: str, now: Optional[float]) -> Optional[int]:
    """The time in unix seconds, when well formed and plausible."""
    if key not in payload:
        return None
    value = payload[key]
    moment = None
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        try:  # the fields by position (strptime is ten times slower); datetime checks their ranges
            year, month, day, hour, minute, second = (int(value[a:b]) for a, b in _TIMESTAMP_FIELDS)
            moment = datetime.datetime(year, month, day, hour, minute, second)
        except ValueError:
            pass
    if moment is None:
        errors.append(f"{key} must be a UTC time formatted YYYY-MM-DDTHH:MM:SSZ")
        return None
    seconds = calendar.timegm(moment.timetuple())
    latest = (time.time() if now is None else now) + limits.FUTURE_SLACK_SECONDS
    if not limits.EARLIEST_TIMESTAMP <= seconds <= latest:
        errors.append(
            f"{key} must be from {format_timestamp(limits.EARLIEST_TIMESTAMP)} to "
            f"{limits.FUTURE_SLACK_SECONDS} s after this server's clock ({format_timestamp(int(latest))})"
        )
        return None
    return seconds


def _check_mac(errors: List[str], payload: Dict[str, Any], timestamp_key: str) -> None:
    value = payload.get("mac")
    if "mac" not in payload:
        return
    if not (isinstance(value, str) and _MAC.fullmatch(value)):
        errors.append("mac must be 64 lowercase hex digits (sha256)")
        return
    session_id, timestamp = payload.get("session_id"), payload.get(timestamp_key)
    if _identifier_problem("session_id", session_id) is not None:
        return  # reported already; and a lone surrogate has no UTF-8 to hash
    if isinstance(session_id, str) and isinstance(timestamp, str) and value != mac(session_id, timestamp):
        errors.append(f"mac is not sha256(session_id + {timestamp_key})")
