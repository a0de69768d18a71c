"""A Report as one self-contained HTML page: inline CSS and SVG charts, no script, no network.

The page has the tables of the text report (each with an id, numbers in their cells as the
table format prints them) and three charts: the slash-command and skill rankings (uses and
distinct users) and the daily trend (commands, skills, sessions, active users).
"""

from __future__ import annotations

import datetime
import os
from html import escape
from typing import List, Sequence, Tuple

from . import Report, Usage
from .render import Table, number, period_text, tables

COLORS = {
    "uses": "#3b6fd4",
    "users": "#e08a1e",
    "slash_commands": "#3b6fd4",
    "skills": "#2e9e6b",
    "sessions": "#c4453b",
    "active_users": "#7d55c7",
}
LABELS = {
    "uses": "uses",
    "users": "distinct users",
    "slash_commands": "slash commands",
    "skills": "skills",
    "sessions": "sessions",
    "active_users": "active users",
}
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#1d232b;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.period{color:#5a6472;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d8dde4;border-radius:8px;padding:10px 14px;flex:1 1 0;min-width:120px}
.card b{display:block;font-size:21px;white-space:nowrap}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:20px}
table{border-collapse:collapse;margin:4px 0 12px}
th,td{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:right}
th:first-child,td:first-child{text-align:left}
th{font-weight:600;color:#3a4350}
svg text{font:12px system-ui,sans-serif;fill:#1d232b}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
footer{margin-top:28px;color:#8a93a0;font-size:12px}
"""


def write_html(report: Report, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(page(report))
    os.replace(tmp, path)


def page(report: Report) -> str:
    duration = report.session_duration_seconds
    cards = [
        ("slash commands", number(report.slash_commands)),
        ("skills", number(report.skills)),
        ("active users", number(report.active_users)),
        ("new / returning", f"{number(report.new_users)} / {number(report.returning_users)}"),
        ("sessions", number(report.sessions)),
        ("median session", _duration(duration.median)),
    ]
    shown = {t.id: _table(t) for t in tables(report)}
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Plugin usage report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Plugin usage report</h1>",
        f'<div class="period" id="period">{escape(period_text(report))}</div>',
        '<div class="cards" id="summary">',
        *(f'<div class="card">{escape(label)}<b>{escape(value)}</b></div>' for label, value in cards),
        "</div>",
        '<div class="grid"><div>',
        "<h2>Slash commands by uses</h2>",
        _legend(("uses", "users")),
        ranking_chart(report.commands),
        shown["commands"],
        "</div><div>",
        "<h2>Skills by uses</h2>",
        _legend(("uses", "users")),
        ranking_chart(report.skills_used),
        shown["skills"],
        "</div></div>",
        "<h2>Per day</h2>",
        _legend(("slash_commands", "skills", "sessions", "active_users")),
        trend_chart(report),
        shown["days"],
        '<div class="grid"><div>',
        "<h2>Users</h2>",
        shown["users"],
        "<h2>Sessions</h2>",
        shown["sessions"],
        shown["exit-reasons"],
        "</div><div>",
        "<h2>Tool calls</h2>",
        shown["tools"],
        "<h2>Tokens</h2>",
        shown["tokens"],
        "</div></div>",
        f"<footer>otel-metrics report, generated {generated}; events by their timestamp, sessions by their start."
        "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cells in table.body)
    return f'<table id="{table.id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _legend(series: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{COLORS[s]}"></i>{escape(LABELS[s])}</span>' for s in series)
    return f'<div class="legend">{items}</div>'


def ranking_chart(listed: List[Usage], width: int = 520) -> str:
    """Horizontal bars, one pair (uses, users) per name, on one scale."""
    if not listed:
        return '<p class="empty">none in this period</p>'
    label_width, bar_height, gap = 150, 9, 8
    row_height = 2 * bar_height + gap
    height = row_height * len(listed) + 4
    scale = max(max(u.uses, u.users) for u in listed) or 1
    room = width - label_width - 60
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for index, usage in enumerate(listed):
        y = index * row_height + 2
        parts.append(
            f'<text x="{label_width - 6}" y="{y + bar_height + 4}" text-anchor="end">{escape(usage.name)}</text>'
        )
        for offset, (measure, value) in enumerate((("uses", usage.uses), ("users", usage.users))):
            bar = max(1.0, room * value / scale)
            top = y + offset * bar_height
            parts.append(
                f'<rect x="{label_width}" y="{top}" width="{bar:.1f}" height="{bar_height - 1}" '
                f'fill="{COLORS[measure]}"><title>{escape(usage.name)}: {value} {LABELS[measure]}</title></rect>'
            )
            parts.append(f'<text x="{label_width + bar + 4:.1f}" y="{top + bar_height - 1}">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend_chart(report: Report, width: int = 1060, height: int = 240) -> str:
    """One line per measure over the days of the period, with a dot per day."""
    days = report.days
    if not days:
        return '<p class="empty">no data in this period</p>'
    series: List[Tuple[str, List[int]]] = [
        (measure, [getattr(d, measure) for d in days])
        for measure in ("slash_commands", "skills", "sessions", "active_users")
    ]
    left, right, top, bottom = 44, 30, 10, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(max(values) for _, values in series) or 1
    step = plot_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return left + (i * step if len(days) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / peak

    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for fraction in (0, 0.5, 1):
        value = peak * fraction
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e6e9ee"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{number(round(value))}</text>')
    label_every = max(1, len(days) // 10)
    for i, d in enumerate(days):
        if i % label_every == 0 or i == len(days) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 18}" text-anchor="middle">{d.day[5:]}</text>')
    for measure, values in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{COLORS[measure]}" stroke-width="2" points="{points}"/>')
        for i, v in enumerate(values):
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{COLORS[measure]}">'
                f"<title>{days[i].day}: {v} {LABELS[measure]}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)
