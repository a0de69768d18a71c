"""Hypothesis strategies for valid events and sessions: what the hooks can produce, within limits.py."""

from __future__ import annotations

import time

from hypothesis import strategies as st

from otel_metrics import limits
from otel_metrics.model import (
    AGGREGATE_KEYS,
    COUNTED_TOOLS,
    EVENT_KINDS,
    OS_NAMES,
    TOKEN_KEYS,
    Event,
    Session,
    SessionAggregates,
)
from otel_metrics.payloads import NS_PER_SECOND

SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
COMMAND_NAMES = st.lists(SEGMENT, min_size=1, max_size=3).map(":".join)
TEXT = st.text(min_size=1, max_size=40)
SESSION_IDS = st.text(alphabet=sorted(limits.SESSION_ID_CHARACTERS), min_size=1, max_size=limits.SESSION_ID_MAX_CHARS)
USER_IDS = st.one_of(st.none(), st.uuids().map(str))
# Plausible times: from the earliest the contract takes to now.
NOW = int(time.time())
SECONDS = st.integers(min_value=limits.EARLIEST_TIMESTAMP, max_value=NOW)
NANOS = st.integers(min_value=limits.EARLIEST_TIMESTAMP * NS_PER_SECOND, max_value=NOW * NS_PER_SECOND)
REASONS = st.one_of(st.sampled_from(["clear", "logout", "prompt_input_exit", "other"]), st.text(max_size=50))


def events() -> st.SearchStrategy[Event]:
    return st.builds(
        Event,
        kind=st.sampled_from(EVENT_KINDS),
        name=COMMAND_NAMES,
        prompt_length=st.integers(min_value=0, max_value=limits.PROMPT_LENGTH_MAX),
        session_id=SESSION_IDS,
        timestamp=SECONDS,
        user_id=USER_IDS,
        version=TEXT,
        os=st.sampled_from(OS_NAMES),
    )


@st.composite
def aggregates(draw: st.DrawFn) -> SessionAggregates:
    """Bounded counts; the per-tool counts fit in total_tool_calls."""
    per_tool = limits.COUNT_MAX // len(COUNTED_TOOLS)
    values = {
        key: draw(st.integers(0, limits.TOKENS_MAX if key in TOKEN_KEYS else per_tool))
        for key in AGGREGATE_KEYS
        if key != "total_tool_calls"
    }
    tools = sum(values[key] for key in COUNTED_TOOLS.values())
    values["total_tool_calls"] = draw(st.integers(tools, limits.COUNT_MAX))
    return SessionAggregates(**values)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    start = draw(NANOS)
    end = draw(st.integers(start, min(start + limits.SESSION_MAX_SECONDS * NS_PER_SECOND, NOW * NS_PER_SECOND)))
    return Session(
        session_id=draw(SESSION_IDS),
        user_id=draw(USER_IDS),
        exit_reason=draw(REASONS),
        start_ns=start,
        end_ns=end,
        version=draw(TEXT),
        os=draw(st.sampled_from(OS_NAMES)),
        aggregates=draw(aggregates()),
        segment=draw(st.integers(min_value=0, max_value=2**31)),
    )
