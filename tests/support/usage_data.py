"""Generated usage, shaped like a marketplace's: many users, a few popular commands, long tails.

The payloads are built by the real payload builders (payloads.py) from model objects, so
they are what the endpoint accepts. `oracle()` computes a report's numbers from the payload
dicts in plain Python, independently of the SQL in otel_metrics/report. `report_payloads()` is
the history the report's tests share; `bounds()` a period as the report takes it.
"""

from __future__ import annotations

import functools
import json
import random
import statistics
import uuid
from collections import Counter, defaultdict
from typing import Any, Dict, Iterator, List, Optional, Tuple

from otel_metrics.model import Event, Session, SessionAggregates
from otel_metrics.payloads import event_payload, session_payload
from otel_metrics.report import TOOL_COLUMNS, parse_bound
from otel_metrics.store import PayloadStore

DAY = 86400
START = 1793491200  # 2026-11-01T00:00:00Z
REASONS = ("other", "logout", "prompt_input_exit", "clear")
Payload = Tuple[str, Dict[str, Any]]  # (kind, payload)


def generate(
    events: int, users: int = 50, days: int = 14, seed: int = 7, sessions_per_event: float = 0.1
) -> Iterator[Payload]:
    """`events` events and about events*sessions_per_event sessions, in time order per kind."""
    rng = random.Random(seed)
    user_ids: List[Optional[str]] = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(users)]
    user_ids.append(None)  # some users have no stored anonymous id
    # Users join over the period: user i is first active from day joined[i].
    joined = [rng.randrange(days) if i % 3 else 0 for i in range(len(user_ids))]
    commands = [f"plugin{i % 7}:command{i}" for i in range(40)]
    skills = [f"plugin{i % 5}:skill{i}" for i in range(25)]
    weights_commands = [1 / (rank + 1) ** 1.1 for rank in range(len(commands))]
    weights_skills = [1 / (rank + 1) ** 1.3 for rank in range(len(skills))]
    span = days * DAY
    for _ in range(events):
        who = rng.randrange(len(user_ids))
        moment = START + joined[who] * DAY + rng.randrange(span - joined[who] * DAY)
        if rng.random() < 0.7:
            kind, name = "slash_command", rng.choices(commands, weights_commands)[0]
            length = len(name) + 1 + rng.randrange(80)
        else:
            kind, name, length = "skill", rng.choices(skills, weights_skills)[0], 0
        event = Event(kind, name, length, f"s{rng.getrandbits(32):08x}", moment, user_ids[who], "1.4.0", "linux")
        yield "events", event_payload(event)
        if rng.random() < sessions_per_event:
            yield "sessions", session_payload(_session(rng, moment, user_ids[who]))


@functools.cache
def report_payloads() -> List[Payload]:
    """The history the report's tests share: 1500 events of 40 users over 10 days, and their sessions."""
    return list(generate(1500, users=40, days=10))


def bounds(since: Optional[str], until: Optional[str]) -> tuple:
    """A period as `otel-metrics report --since/--until` takes it: (start, end) in unix seconds, or None."""
    return (parse_bound(since) if since else None, parse_bound(until, end=True) if until else None)


def _session(rng: random.Random, start: int, user: Optional[str]) -> Session:
    turns = 1 + int(rng.expovariate(1 / 6))
    tools = {
        column: int(rng.expovariate(1 / (turns * share)))
        for (_, column), share in zip(TOOL_COLUMNS, (1.5, 2.0, 1.0, 0.3, 0.6, 0.4, 0.1, 0.05))
    }
    total = sum(tools.values()) + rng.randrange(3)
    errors = rng.randrange(total + 1) if total and rng.random() < 0.3 else 0
    tokens = {
        "total_input_tokens": rng.randrange(0, 20000 * turns) if rng.random() < 0.9 else 0,
        "total_output_tokens": rng.randrange(1, 4000 * turns),
        "cache_creation_tokens": rng.randrange(0, 5000),
        "cache_read_tokens": rng.randrange(0, 100000) if rng.random() < 0.8 else 0,
    }
    aggregates = SessionAggregates(
        turn_count=turns,
        user_message_count=turns,
        assistant_message_count=turns * 2,
        total_tool_calls=total,
        tool_error_count=errors,
        **tools,
        **tokens,
    )
    duration_ns = int(rng.expovariate(1 / 1500) * 1e9) + rng.randrange(10**9)
    start_ns = start * 10**9 + rng.randrange(10**9)
    return Session(
        f"s{rng.getrandbits(48):012x}",
        user,
        rng.choice(REASONS),
        start_ns,
        start_ns + duration_ns,
        "1.4.0",
        "linux",
        aggregates,
    )


def store_all(store: PayloadStore, payloads: List[Payload]) -> None:
    for kind, payload in payloads:
        store.add(kind, json.dumps(payload), payload)


def _in(moment: str, since: Optional[str], until: Optional[str]) -> bool:
    return (since is None or moment >= since) and (until is None or moment < until)


def oracle(payloads: List[Payload], since: Optional[str] = None, until: Optional[str] = None) -> Dict[str, Any]:
    """The report's numbers, from the payloads themselves."""
    events = [p for kind, p in payloads if kind == "events" and _in(p["timestamp"], since, until)]
    sessions = [p for kind, p in payloads if kind == "sessions" and _in(p["start_timestamp"], since, until)]
    first_seen: Dict[str, str] = {}
    for kind, p in payloads:
        moment = p["timestamp"] if kind == "events" else p["start_timestamp"]
        if p["user_id"] is not None and (p["user_id"] not in first_seen or moment < first_seen[p["user_id"]]):
            first_seen[p["user_id"]] = moment
    active = {p["user_id"] for p in events + sessions} - {None}
    new = {user for user in active if _in(first_seen[user], since, until)}
    usage: Dict[Tuple[str, str], List[Optional[str]]] = defaultdict(list)
    for p in events:
        usage[(p["type"], p["name"])].append(p["user_id"])
    days: Dict[str, Counter] = defaultdict(Counter)
    day_users: Dict[str, set] = defaultdict(set)
    for p in events:
        days[p["timestamp"][:10]]["slash_commands" if p["type"] == "slash_command" else "skills"] += 1
        day_users[p["timestamp"][:10]].add(p["user_id"])
    for p in sessions:
        days[p["start_timestamp"][:10]]["sessions"] += 1
        day_users[p["start_timestamp"][:10]].add(p["user_id"])
    for user in new:
        days[first_seen[user][:10]]["new_users"] += 1
    for day, seen in day_users.items():
        days[day]["active_users"] = len(seen - {None})

    def quantiles(values: List[int]) -> Tuple[Optional[float], Optional[float]]:
        if not values:
            return None, None
        if len(values) == 1:
            return values[0], values[0]
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        return statistics.median(values), deciles[8]

    tool_calls = sum(p["total_tool_calls"] for p in sessions)
    mix = {tool: sum(p[column] for p in sessions) for tool, column in TOOL_COLUMNS}
    mix["other"] = tool_calls - sum(mix.values())
    return {
        "usage": {key: (len(users), len(set(users) - {None})) for key, users in usage.items()},
        "slash_commands": sum(1 for p in events if p["type"] == "slash_command"),
        "skills": sum(1 for p in events if p["type"] == "skill"),
        "events_without_user": sum(1 for p in events if p["user_id"] is None),
        "active_users": len(active),
        "new_users": len(new),
        "returning_users": len(active - new),
        "sessions": len(sessions),
        "duration": quantiles([p["session_duration"] for p in sessions]),
        "turns": quantiles([p["turn_count"] for p in sessions]),
        "exit_reasons": dict(Counter(p["exit_reason"] for p in sessions)),
        "tool_calls": tool_calls,
        "tool_mix": mix,
        "tool_errors": sum(p["tool_error_count"] for p in sessions),
        "sessions_with_errors": sum(1 for p in sessions if p["had_errors"]),
        "tokens": {
            key: sum(p.get(key, 0) for p in sessions)
            for key in ("total_input_tokens", "total_output_tokens", "cache_creation_tokens", "cache_read_tokens")
        },
        "days": {day: dict(counts) for day, counts in days.items()},
    }
