"""`otel-metrics report`: what a maintainer wants to know, from the endpoint's database alone.

build_report() asks the store a handful of aggregate queries (the work happens in SQLite or
PostgreSQL, not in Python, so millions of rows take seconds) and returns a Report;
render.py prints it as a table, JSON or CSV, html.py as one self-contained page.

Periods are half-open UTC intervals [since, until) over an event's `timestamp` and a
session's `start_timestamp`. Quantiles interpolate linearly between the two nearest
ranks (as PostgreSQL's percentile_cont and Python's statistics.quantiles(method="inclusive")).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Dict, List, Optional, Sequence, Set, Tuple

from ..model import COUNTED_TOOLS, TOKEN_KEYS
from ..payloads import TIMESTAMP_FORMAT
from ..store import PayloadStore

# The tools the session payload counts one by one; the rest of total_tool_calls is "other".
TOOL_COLUMNS = tuple(COUNTED_TOOLS.items())  # (tool, column)
QUANTILES = (("median", 0.5), ("p90", 0.9))


def parse_bound(text: str, end: bool = False) -> str:
    """A --since/--until value as a payload timestamp (UTC).

    YYYY-MM-DD is that day's 00:00:00Z, or with end=True the next day's, so that
    `--until 2026-11-30` includes the 30th; an instant YYYY-MM-DDTHH:MM:SSZ is taken as given.
    """
    try:
        moment = datetime.datetime.strptime(text, TIMESTAMP_FORMAT)
    except ValueError:
        try:
            moment = datetime.datetime.strptime(text, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), got {text!r}") from None
        if end:
            moment += datetime.timedelta(days=1)
    return moment.strftime(TIMESTAMP_FORMAT)


@dataclass
class Usage:
    kind: str  # slash_command | skill
    name: str
    uses: int
    users: int  # distinct anonymous ids


@dataclass
class Day:
    day: str  # YYYY-MM-DD
    slash_commands: int = 0
    skills: int = 0
    sessions: int = 0
    active_users: int = 0
    new_users: int = 0


@dataclass
class Distribution:
    median: Optional[float]
    p90: Optional[float]


@dataclass
class Report:
    since: Optional[str]
    until: Optional[str]
    slash_commands: int = 0
    skills: int = 0
    events_without_user: int = 0
    commands: List[Usage] = field(default_factory=list)  # top slash commands by uses (then users)
    skills_used: List[Usage] = field(default_factory=list)  # top skills likewise
    other_commands: int = 0  # uses of the commands beyond the top
    other_skills: int = 0
    active_users: int = 0
    new_users: int = 0  # first seen (event or session) inside the period
    returning_users: int = 0  # active in the period, first seen before it
    sessions: int = 0
    session_duration_seconds: Distribution = field(default_factory=lambda: Distribution(None, None))
    session_turns: Distribution = field(default_factory=lambda: Distribution(None, None))
    exit_reasons: Dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    tool_mix: Dict[str, int] = field(default_factory=dict)  # per tool, "other" last
    tool_errors: int = 0
    sessions_with_errors: int = 0
    tokens: Dict[str, int] = field(default_factory=dict)  # the payload's four token sums
    days: List[Day] = field(default_factory=list)

    @property
    def tool_error_rate(self) -> Optional[float]:
        return self.tool_errors / self.tool_calls if self.tool_calls else None

    @property
    def session_error_rate(self) -> Optional[float]:
        return self.sessions_with_errors / self.sessions if self.sessions else None

    def as_dict(self) -> Dict[str, Any]:
        document = asdict(self)
        document["tool_error_rate"] = self.tool_error_rate
        document["session_error_rate"] = self.session_error_rate
        return document


class Progress:
    """`[3/9] sessions` on one rewritten line of a terminal; silent when the stream is not one."""

    def __init__(self, stream: Optional[IO[str]] = None, steps: int = 0) -> None:
        self._stream = stream if stream is not None and stream.isatty() else None
        self.steps = steps
        self._done = 0
        self._started = time.monotonic()

    def step(self, label: str) -> None:
        self._done += 1
        if self._stream is not None:
            elapsed = time.monotonic() - self._started
            self._stream.write(f"\r\033[Kreport: [{self._done}/{self.steps}] {label} ({elapsed:.1f} s)")
            self._stream.flush()

    def finish(self) -> None:
        if self._stream is not None:
            self._stream.write("\r\033[K")
            self._stream.flush()


class _Period:
    """WHERE clauses (and their parameters) for one table's time column."""

    def __init__(self, since: Optional[str], until: Optional[str]) -> None:
        self.since, self.until = since, until

    def where(self, column: str, *extra: str) -> Tuple[str, List[str]]:
        clauses, params = list(extra), []
        if self.since is not None:
            clauses.append(f"{column} >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{column} < ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


STEPS = 7


def build_report(
    store: PayloadStore,
    since: Optional[str] = None,
    until: Optional[str] = None,
    top: int = 20,
    progress: Optional[Progress] = None,
) -> Report:
    """since/until: payload timestamps (parse_bound), the period [since, until)."""
    progress = progress or Progress()
    progress.steps = STEPS
    report = Report(since, until)
    period = _Period(since, until)
    events_where, events_params = period.where("occurred_at")
    sessions_where, sessions_params = period.where("started_at")
    days: Dict[str, Day] = {}

    def day(name: str) -> Day:
        return days.setdefault(name, Day(name))

    progress.step("commands and skills")
    usage = store.select(
        f"SELECT type, name, COUNT(*), COUNT(DISTINCT user_id) FROM events{events_where} GROUP BY type, name",
        events_params,
    )
    ranked = sorted((Usage(*row) for row in usage), key=lambda u: (-u.uses, -u.users, u.name))
    for kind, listed in (("slash_command", report.commands), ("skill", report.skills_used)):
        of_kind = [u for u in ranked if u.kind == kind]
        listed.extend(of_kind[:top])
        rest = sum(u.uses for u in of_kind[top:])
        total = sum(u.uses for u in of_kind)
        if kind == "slash_command":
            report.slash_commands, report.other_commands = total, rest
        else:
            report.skills, report.other_skills = total, rest
    where, params = period.where("occurred_at", "user_id IS NULL")
    report.events_without_user = store.select(f"SELECT COUNT(*) FROM events{where}", params)[0][0]

    progress.step("events per day")
    for name, kind, count in store.select(
        f"SELECT day, type, COUNT(*) FROM events{events_where} GROUP BY day, type", events_params
    ):
        setattr(day(name), "slash_commands" if kind == "slash_command" else "skills", count)

    progress.step("users")
    # (day, user) pairs of activity, each table grouped on its own index; their union is small
    # (at most users x days), so it is merged here.
    active: Dict[str, Set[str]] = {}
    for table, where, params in (
        ("events", events_where, events_params),
        ("sessions", sessions_where, sessions_params),
    ):
        known = f"{where} AND user_id IS NOT NULL" if where else " WHERE user_id IS NOT NULL"
        for name, user in store.select(f"SELECT day, user_id FROM {table}{known} GROUP BY day, user_id", params):
            active.setdefault(name, set()).add(user)
    for name, users in active.items():
        day(name).active_users = len(users)
    report.active_users = len(set().union(*active.values()))
    first_seen = (
        "SELECT user_id, MIN(seen) AS first FROM ("
        "SELECT user_id, MIN(occurred_at) AS seen FROM events WHERE user_id IS NOT NULL GROUP BY user_id"
        " UNION ALL SELECT user_id, MIN(started_at) AS seen FROM sessions WHERE user_id IS NOT NULL GROUP BY user_id"
        ") AS seen GROUP BY user_id"
    )
    first_where, first_params = period.where("first")
    for name, new in store.select(
        f"SELECT substr(first, 1, 10), COUNT(*) FROM ({first_seen}) AS firsts{first_where} GROUP BY 1", first_params
    ):
        day(name).new_users = new
    report.new_users = sum(d.new_users for d in days.values())
    report.returning_users = report.active_users - report.new_users

    progress.step("sessions")
    totals = session_totals(store, sessions_where, sessions_params)
    report.sessions, report.sessions_with_errors = totals.sessions, totals.sessions_with_errors
    report.tool_calls, report.tool_errors = totals.tool_calls, totals.tool_errors
    report.tool_mix, report.tokens = totals.tool_mix, totals.tokens

    progress.step("sessions per day and exit reasons")
    for name, count in store.select(
        f"SELECT day, COUNT(*) FROM sessions{sessions_where} GROUP BY day", sessions_params
    ):
        day(name).sessions = count
    reasons = store.select(
        f"SELECT exit_reason, COUNT(*) FROM sessions{sessions_where} GROUP BY exit_reason", sessions_params
    )
    report.exit_reasons = dict(sorted(reasons, key=lambda r: (-r[1], r[0])))

    progress.step("session durations")
    report.session_duration_seconds = _distribution(
        store, "session_duration", sessions_where, sessions_params, report.sessions
    )
    progress.step("session turns")
    report.session_turns = _distribution(store, "turn_count", sessions_where, sessions_params, report.sessions)

    report.days = [days[name] for name in sorted(days)]
    progress.finish()
    return report


@dataclass
class SessionTotals:
    sessions: int
    sessions_with_errors: int
    tool_calls: int
    tool_errors: int
    tool_mix: Dict[str, int]  # per tool of TOOL_COLUMNS, then "other"
    tokens: Dict[str, int]  # per TOKEN_KEYS


def session_totals(store: PayloadStore, where: str = "", params: Sequence[str] = ()) -> SessionTotals:
    """Sums over the sessions a WHERE clause selects (all of them without one), in one query."""
    tools = ", ".join(f"SUM({column})" for _, column in TOOL_COLUMNS)
    tokens = ", ".join(f"SUM({key})" for key in TOKEN_KEYS)
    row = store.select(
        "SELECT COUNT(*), SUM(CASE WHEN had_errors THEN 1 ELSE 0 END), SUM(total_tool_calls), SUM(tool_error_count),"
        f" {tools}, {tokens} FROM sessions{where}",
        params,
    )[0]
    values = [value or 0 for value in row]  # SUM() of no rows is NULL
    per_tool = dict(zip((tool for tool, _ in TOOL_COLUMNS), values[4 : 4 + len(TOOL_COLUMNS)]))
    per_tool["other"] = values[2] - sum(per_tool.values())
    return SessionTotals(values[0], values[1], values[2], values[3], per_tool, dict(zip(TOKEN_KEYS, values[-4:])))


def _distribution(store: PayloadStore, column: str, where: str, params: Sequence[str], count: int) -> Distribution:
    values = {name: _quantile(store, column, where, params, count, q) for name, q in QUANTILES}
    return Distribution(**values)


def _quantile(
    store: PayloadStore, column: str, where: str, params: Sequence[str], count: int, q: float
) -> Optional[float]:
    """Linear interpolation between the ranks around q*(n-1); only those two rows leave the database."""
    if count == 0:
        return None
    rank = q * (count - 1)
    low = int(rank)
    rows = store.select(f"SELECT {column} FROM sessions{where} ORDER BY {column} LIMIT 2 OFFSET ?", [*params, low])
    below = rows[0][0]
    above = rows[1][0] if len(rows) > 1 else below
    value = below + (above - below) * (rank - low)
    return int(value) if value == int(value) else round(value, 3)
