"""The retry policy alone: exponential growth, the cap, the jitter's spread, Retry-After as a floor."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_metrics.backoff import RETRY_AFTER_LIMIT, Backoff, parse_retry_after, refused_for_good


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def middle(a: float, b: float) -> float:
    return (a + b) / 2


def test_delays_double_from_the_initial_one_up_to_the_cap() -> None:
    policy = Backoff(initial=0.5, maximum=10.0, multiplier=2.0, jitter=0.2)
    assert [policy.delay(n, uniform=middle) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_spreads_each_delay_around_its_base_and_never_past_the_cap() -> None:
    policy = Backoff(initial=1.0, maximum=4.0, multiplier=2.0, jitter=0.25)
    assert [policy.delay(n, uniform=low) for n in (1, 2, 3)] == [0.75, 1.5, 3.0]
    assert [policy.delay(n, uniform=high) for n in (1, 2, 3)] == [1.25, 2.5, 4.0]  # 5.0 capped


@given(st.integers(min_value=-3, max_value=10_000), st.floats(min_value=0.01, max_value=5), st.floats(0, 0.99))
def test_every_delay_is_within_its_bounds(attempt: int, initial: float, jitter: float) -> None:
    policy = Backoff(initial=initial, maximum=initial * 50, jitter=jitter)
    delay = policy.delay(attempt)
    assert initial * (1 - jitter) <= delay <= policy.maximum


def test_many_senders_failing_together_do_not_retry_together() -> None:
    policy = Backoff(initial=1.0, maximum=60.0)
    rng = random.Random(7)
    delays = {round(policy.delay(3, uniform=rng.uniform), 3) for _ in range(100)}
    assert len(delays) > 90
    assert min(delays) >= 3.2 and max(delays) <= 4.8


def test_retry_after_is_a_floor_bounded_by_its_limit() -> None:
    policy = Backoff(initial=0.5, maximum=60.0)
    assert policy.delay(1, retry_after=7.0, uniform=middle) == 7.0
    assert policy.delay(1, retry_after=0.0, uniform=middle) == 0.5
    assert policy.delay(1, retry_after=86_400.0, uniform=middle) == RETRY_AFTER_LIMIT


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"), [(0, 1, 2, 0.2), (2, 1, 2, 0.2), (1, 2, 0.5, 0.2), (1, 2, 2, 1.0)]
)
def test_nonsense_bounds_are_refused(initial: float, maximum: float, multiplier: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial=initial, maximum=maximum, multiplier=multiplier, jitter=jitter)


def test_retry_after_as_seconds_or_as_an_http_date() -> None:
    now = 1_761_827_696.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0  # already past
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo"):
        assert parse_retry_after(bad, now) is None


def test_refused_for_good_is_a_4xx_that_does_not_say_later() -> None:
    assert [status for status in (200, 400, 401, 404, 408, 413, 425, 429, 500, 503) if refused_for_good(status)] == [
        400,
        401,
        404,
        413,
    ]
