"""Hypothesis strategies for valid events and sessions (what the hooks can produce)."""

from __future__ import annotations

from hypothesis import strategies as st

from otel_metrics.model import COUNT_KEYS, EVENT_KINDS, OS_NAMES, Event, Session, SessionAggregates

SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
COMMAND_NAMES = st.lists(SEGMENT, min_size=1, max_size=3).map(":".join)
TEXT = st.text(min_size=1, max_size=40)
USER_IDS = st.one_of(st.none(), st.uuids().map(str))
# Unix seconds in the years 1970..9999; span times are unsigned nanoseconds, so sessions start at 1970.
SECONDS = st.integers(min_value=0, max_value=253402300799)
NANOS = st.integers(min_value=0, max_value=2**63 - 1)
REASONS = st.one_of(st.sampled_from(["clear", "logout", "prompt_input_exit", "other"]), st.text(max_size=50))


def events() -> st.SearchStrategy[Event]:
    return st.builds(
        Event,
        kind=st.sampled_from(EVENT_KINDS),
        name=COMMAND_NAMES,
        prompt_length=st.integers(min_value=0, max_value=2**31),
        session_id=TEXT,
        timestamp=SECONDS,
        user_id=USER_IDS,
        version=TEXT,
        os=st.sampled_from(OS_NAMES),
    )


def aggregates() -> st.SearchStrategy[SessionAggregates]:
    counts = st.integers(min_value=0, max_value=2**40)
    return st.fixed_dictionaries({key: counts for key in COUNT_KEYS}).map(lambda d: SessionAggregates(**d))


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    start, end = sorted([draw(NANOS), draw(NANOS)])
    return Session(
        session_id=draw(TEXT),
        user_id=draw(USER_IDS),
        exit_reason=draw(REASONS),
        start_ns=start,
        end_ns=end,
        version=draw(TEXT),
        os=draw(st.sampled_from(OS_NAMES)),
        aggregates=draw(aggregates()),
        segment=draw(st.integers(min_value=0, max_value=2**31)),
    )
