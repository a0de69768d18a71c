"""The retry policy: capped exponential backoff with jitter, and the server's Retry-After.

One policy for everything that retries a remote call: the n-th retry waits
initial * multiplier^(n-1), capped at `maximum`, spread by +-jitter so that many
senders failing together do not retry together. A Retry-After from the server
is a floor under that delay (as the collector's exporters treat it), itself
bounded so that a wrong header cannot stall delivery for days.
"""

from __future__ import annotations

import datetime
import email.utils
import random
from dataclasses import dataclass
from typing import Callable, Optional

DEFAULT_INITIAL = 0.5  # seconds
DEFAULT_MAXIMUM = 60.0
DEFAULT_MULTIPLIER = 2.0
DEFAULT_JITTER = 0.2  # each delay is drawn from [d * 0.8, d * 1.2], then capped
RETRY_AFTER_LIMIT = 600.0  # seconds: the longest Retry-After honoured as given
# Client errors that say "later", not "never": timeout, too early, too many requests.
RETRYABLE_4XX = (408, 425, 429)


def refused_for_good(status: int) -> bool:
    """Whether an HTTP answer means the same request will never be accepted: a 4xx other than
    RETRYABLE_4XX. Anything else that is not a 2xx (5xx, those 4xx, no answer) is worth a retry."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX


@dataclass(frozen=True)
class Backoff:
    initial: float = DEFAULT_INITIAL
    maximum: float = DEFAULT_MAXIMUM
    multiplier: float = DEFAULT_MULTIPLIER
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff bounds must be 0 < initial <= maximum, got {self.initial} and {self.maximum}")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff multiplier must be >= 1 and jitter in [0, 1)")

    def delay(
        self,
        attempt: int,
        retry_after: Optional[float] = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry), at least `retry_after`."""
        exponent = min(max(attempt, 1) - 1, 64)  # far past the cap already; keeps the power finite
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        delay = min(self.maximum, base * uniform(1 - self.jitter, 1 + self.jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_LIMIT))
        return delay


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """A Retry-After header (delay-seconds or HTTP-date) as seconds from `now` (a Unix time); None if absent or bad."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP-date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)
