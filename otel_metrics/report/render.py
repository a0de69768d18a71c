"""A Report as text: an aligned table for people, JSON and CSV for other tools."""

from __future__ import annotations

import csv
import io
import json
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from . import Report, Usage

Row = Tuple[str, str, str, object]  # (section, item, measure, value): the CSV's columns


def render(report: Report, layout: str) -> str:
    if layout == "json":
        return json.dumps(report.as_dict(), indent=2) + "\n"
    if layout == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("section", "item", "measure", "value"))
        writer.writerows(rows(report))
        return out.getvalue()
    return table(report)


def period_text(report: Report) -> str:
    first = report.days[0].day if report.days else None
    last = report.days[-1].day if report.days else None
    since = report.since or (f"{first} (first record)" if first else "the first record")
    until = f"{report.until} (excluded)" if report.until else (f"{last} (last record)" if last else "the last record")
    return f"{since} .. {until}"


def percent(rate: Optional[float]) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def rows(report: Report) -> Iterator[Row]:
    """Every number of the report, one per row (also what the table and the page show)."""
    yield ("events", "slash_command", "uses", report.slash_commands)
    yield ("events", "skill", "uses", report.skills)
    yield ("events", "without user id", "uses", report.events_without_user)
    for section, listed in (("slash_command", report.commands), ("skill", report.skills_used)):
        for usage in listed:
            yield (section, usage.name, "uses", usage.uses)
            yield (section, usage.name, "users", usage.users)
    yield ("slash_command", "(others)", "uses", report.other_commands)
    yield ("skill", "(others)", "uses", report.other_skills)
    yield ("users", "active", "users", report.active_users)
    yield ("users", "new", "users", report.new_users)
    yield ("users", "returning", "users", report.returning_users)
    yield ("sessions", "all", "sessions", report.sessions)
    for measure in ("median", "p90"):
        yield ("sessions", "duration_seconds", measure, getattr(report.session_duration_seconds, measure))
        yield ("sessions", "turns", measure, getattr(report.session_turns, measure))
    yield ("sessions", "with tool errors", "sessions", report.sessions_with_errors)
    yield ("sessions", "with tool errors", "rate", report.session_error_rate)
    for reason, count in report.exit_reasons.items():
        yield ("exit_reason", reason, "sessions", count)
    yield ("tool_calls", "all", "calls", report.tool_calls)
    for tool, count in report.tool_mix.items():
        yield ("tool_calls", tool, "calls", count)
    yield ("tool_calls", "errors", "calls", report.tool_errors)
    yield ("tool_calls", "errors", "rate", report.tool_error_rate)
    for key, total in report.tokens.items():
        yield ("tokens", key, "tokens", total)
    for day in report.days:
        for measure in ("slash_commands", "skills", "sessions", "active_users", "new_users"):
            yield ("day", day.day, measure, getattr(day, measure))


class Table(NamedTuple):
    id: str  # also the HTML table's id
    title: str
    header: List[str]
    body: List[List[str]]


def _ranking(table_id: str, title: str, listed: List[Usage], others: int, total: int) -> Table:
    body = [[u.name, number(u.uses), number(u.users)] for u in listed]
    if others:
        body.append(["(others)", number(others), ""])
    body.append(["total", number(total), ""])
    return Table(table_id, f"{title} by uses", ["name", "uses", "users"], body)


def tables(report: Report) -> List[Table]:
    """The report's tables, as the text format prints them and the HTML page shows them."""
    duration, turns = report.session_duration_seconds, report.session_turns
    share = [percent(count / report.tool_calls if report.tool_calls else None) for count in report.tool_mix.values()]
    return [
        _ranking("commands", "Slash commands", report.commands, report.other_commands, report.slash_commands),
        _ranking("skills", "Skills", report.skills_used, report.other_skills, report.skills),
        Table(
            "users",
            "Users",
            ["", "users"],
            [
                ["active", number(report.active_users)],
                ["new (first seen in the period)", number(report.new_users)],
                ["returning", number(report.returning_users)],
                ["events without an anonymous id", number(report.events_without_user)],
            ],
        ),
        Table(
            "sessions",
            "Sessions",
            ["", "value"],
            [
                ["sessions", number(report.sessions)],
                ["duration median (s)", number(duration.median)],
                ["duration p90 (s)", number(duration.p90)],
                ["turns median", number(turns.median)],
                ["turns p90", number(turns.p90)],
                ["sessions with tool errors", number(report.sessions_with_errors)],
                ["share of sessions with tool errors", percent(report.session_error_rate)],
            ],
        ),
        Table(
            "exit-reasons",
            "Exit reasons",
            ["exit reason", "sessions"],
            [[reason, number(count)] for reason, count in report.exit_reasons.items()],
        ),
        Table(
            "tools",
            "Tool calls",
            ["tool", "calls", "share"],
            [[tool, number(count), part] for (tool, count), part in zip(report.tool_mix.items(), share)]
            + [
                ["all", number(report.tool_calls), ""],
                ["errors", number(report.tool_errors), percent(report.tool_error_rate)],
            ],
        ),
        Table("tokens", "Tokens", ["", "tokens"], [[key, number(total)] for key, total in report.tokens.items()]),
        Table(
            "days",
            "Per day",
            ["day", "commands", "skills", "sessions", "active users", "new users"],
            [
                [
                    d.day,
                    number(d.slash_commands),
                    number(d.skills),
                    number(d.sessions),
                    number(d.active_users),
                    number(d.new_users),
                ]
                for d in report.days
            ],
        ),
    ]


def _aligned(table: Table) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(table.header, *table.body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([table.title, line(table.header), *(line(cells) for cells in table.body)]) + "\n"


def table(report: Report) -> str:
    return "\n".join([f"otel-metrics report: {period_text(report)}\n", *(_aligned(t) for t in tables(report))])
