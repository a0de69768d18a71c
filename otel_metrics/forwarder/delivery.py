"""Delivery: outbox -> POST <metrics-url>/events or /sessions, several at once.

`workers` threads (default 10, as the collector's sending queue has consumers)
post one payload at a time each, over a pool of keep-alive connections (one
per POST in flight at most); payloads go in no particular order (the
endpoint's contract has none). Each outcome:

- 2xx: delivered, it leaves the outbox.
- a 4xx other than 408/425/429: refused for good (the same bytes will never be
  accepted): it moves to the dead letters with the status, the answer and the
  time. The log says so once per kind of refusal (path and status).
- anything else (5xx, 408/425/429, no connection, a timeout): that payload alone
  is retried after its own backoff (backoff.py; Retry-After is a floor), while
  the others go on.

A circuit guards the endpoint: after CIRCUIT_THRESHOLD failures in a row
(nothing in between reached it), no payload is sent but one probe at a time,
spaced by the same backoff; the first answer closes the circuit, and payloads
that failed meanwhile are due at once.
"""

from __future__ import annotations

import heapq
import http.client
import logging
import threading
import time
from collections import deque
from typing import Deque, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from ..backoff import Backoff, parse_retry_after, refused_for_good
from .http_client import Answer, Connection, Pool, Target, target_for
from .outbox import Item, Outbox, OutboxUnavailable
from .telemetry import KINDS, Telemetry

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 10
DEFAULT_RETRY_INITIAL = 0.5  # seconds
DEFAULT_RETRY_MAX = 60.0
DEFAULT_TIMEOUT = 10.0  # seconds for each read and write of a POST
CONNECT_TIMEOUT = 5.0
CIRCUIT_THRESHOLD = 5  # failures in a row that open the circuit
FETCH_PAGE = 200  # payloads read from the outbox at a time
IDLE_POLL = 5.0  # seconds between outbox checks when nothing wakes the workers
LOG_REPEAT_SECONDS = 60.0  # a retryable failure of one kind is logged at most this often

DELIVERED, REFUSED, RETRY = "delivered", "refused", "retry"


class Outcome(NamedTuple):
    kind: str  # DELIVERED | REFUSED | RETRY
    status: Optional[int]  # the HTTP status, None when no answer came
    detail: str  # the answer's body (text), or the error
    error_type: str  # for telemetry: the status, or the exception's name
    retry_after: Optional[float] = None


def outcome_of(answer: Answer) -> Outcome:
    status = answer.status
    detail = answer.body.decode("utf-8", "replace").strip()
    if 200 <= status < 300:
        return Outcome(DELIVERED, status, detail, "")
    if refused_for_good(status):
        return Outcome(REFUSED, status, detail, str(status))
    return Outcome(RETRY, status, detail, str(status), parse_retry_after(answer.retry_after, time.time()))


def post(connection: Connection, item: Item) -> Outcome:
    """One attempt to deliver one payload."""
    try:
        return outcome_of(connection.post(item.path, item.body.encode("utf-8")))
    except (OSError, http.client.HTTPException) as error:
        name = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        return Outcome(RETRY, None, str(error) or name, name)


class Circuit:
    """Closed: post freely. Open: one probe at a time, at backoff-spaced times, until one gets an answer."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0  # in a row
        self.open_since: Optional[float] = None
        self._probes = 0  # failed probes since it opened
        self._probe_at = 0.0
        self.probing = False

    @property
    def closed(self) -> bool:
        return self.open_since is None

    def may_send(self, now: float) -> bool:
        return self.closed or (not self.probing and now >= self._probe_at)

    def wait(self, now: float) -> Optional[float]:
        """Seconds until a probe may go (None: closed, or a probe is out)."""
        return None if self.closed or self.probing else max(0.0, self._probe_at - now)

    def sent(self) -> bool:
        """A payload goes out now; True when it is the probe."""
        if self.closed:
            return False
        self.probing = True
        return True

    def answered(self) -> Optional[float]:
        """The endpoint answered: the circuit closes. Returns how long it had been open, if it was."""
        self.failures = 0
        self.probing = False
        opened, self.open_since = self.open_since, None
        return None if opened is None else time.monotonic() - opened

    def failed(self, probe: bool, now: float, retry_after: Optional[float]) -> Optional[float]:
        """A failure; returns the delay to the next probe when the circuit (re)opens now, else None."""
        self.failures += 1
        if self.closed and self.failures >= CIRCUIT_THRESHOLD:
            self.open_since = now
            self._probes = 0
        elif not probe:
            return None  # a straggler from before the circuit opened, or still closed
        else:
            self.probing = False
        self._probes += 1
        delay = self.backoff.delay(self._probes, retry_after)
        self._probe_at = now + delay
        return delay


class _Retry(NamedTuple):
    due: float
    item_id: int


class Delivery:
    """The workers, and what they share: which payloads are taken, due, waiting their retry."""

    def __init__(
        self,
        outbox: Outbox,
        metrics_url: str,
        telemetry: Telemetry,
        workers: int = DEFAULT_WORKERS,
        backoff: Optional[Backoff] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.outbox = outbox
        self.metrics_url = metrics_url.rstrip("/")
        self.target: Target = target_for(self.metrics_url)
        self.telemetry = telemetry
        self.backoff = backoff or Backoff(DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX)
        self.timeout = timeout
        self.circuit = Circuit(self.backoff)
        self._pool = Pool(self.target, CONNECT_TIMEOUT, timeout)
        self._state = threading.Condition()
        self._stopping = False
        self._cursor = 0  # the highest outbox id read so far
        self._fresh: Deque[Item] = deque()  # read, not yet sent
        self._retries: List[_Retry] = []  # a heap: payloads waiting for their next attempt
        self._attempts: Dict[int, int] = {}  # failed attempts of each payload being retried
        self.inflight = 0
        self._refusals_logged: Set[Tuple[str, int]] = set()
        self._failures_logged: Dict[str, Tuple[float, int]] = {}  # error kind -> (last logged, suppressed since)
        self._threads = [
            threading.Thread(target=self._work, name=f"delivery-{n}", daemon=True) for n in range(workers)
        ]  # daemon: a POST hanging past the shutdown deadline must not hold the exit; its payload stays
        outbox.on_added = self._wake

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def idle(self) -> bool:
        """Nothing waits in the outbox and nothing is being posted."""
        return self.inflight == 0 and len(self.outbox) == 0

    def stop(self, deadline: float) -> int:
        """Send nothing new; wait until `deadline` (monotonic) for the POSTs in flight. Returns those still out."""
        with self._state:
            self._stopping = True
            self._state.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.close()
        return sum(thread.is_alive() for thread in self._threads)

    def _wake(self) -> None:
        with self._state:
            self._state.notify()

    # The workers.

    def _work(self) -> None:
        while True:
            taken = self._wait_for_work()
            if taken is None:
                return
            item, probe = taken
            self.telemetry.inflight.add(1)
            connection = self._pool.take()
            started = time.monotonic()
            outcome = post(connection, item)
            self._record_request(outcome, time.monotonic() - started)
            self._pool.give_back(connection)
            self.telemetry.inflight.add(-1)
            self._settle(item, probe, outcome)

    def _wait_for_work(self) -> Optional[Tuple[Item, bool]]:
        """The next payload to post (and whether it is the circuit's probe); None once stopping."""
        with self._state:
            while not self._stopping:
                now = time.monotonic()
                if self.circuit.may_send(now):
                    item = self._next_item(now)
                    if item is not None:
                        self.inflight += 1
                        probe = self.circuit.sent()
                        if not probe and (self._fresh or (self._retries and self._retries[0].due <= now)):
                            self._state.notify()  # more is ready: wake one more worker (who may wake the next)
                        return item, probe
                    wait = self._retries[0].due - now if self._retries else IDLE_POLL
                else:
                    probe_in = self.circuit.wait(now)  # None: a probe is out, its answer wakes us
                    wait = IDLE_POLL if probe_in is None else probe_in
                self._state.wait(min(wait, IDLE_POLL))
        return None

    def _next_item(self, now: float) -> Optional[Item]:
        if not self.circuit.closed and self._retries:
            # The probe is the oldest payload: with one worker, the endpoint then still gets them in order.
            oldest = min(self._retries, key=lambda retry: retry.item_id)
            self._retries.remove(oldest)
            heapq.heapify(self._retries)
            item = self.outbox.get(oldest.item_id)
            if item is not None:
                return item
        while self._retries and self._retries[0].due <= now:
            item = self.outbox.get(heapq.heappop(self._retries).item_id)
            if item is not None:
                return item
        if not self._fresh:
            try:
                self._fresh.extend(self.outbox.after(self._cursor, FETCH_PAGE))
            except Exception as error:  # sqlite3.Error: the disk; the next wake-up tries again
                log.error("cannot read the outbox: %s", error)
            if self._fresh:
                self._cursor = self._fresh[-1].id
        return self._fresh.popleft() if self._fresh else None

    def _settle(self, item: Item, probe: bool, outcome: Outcome) -> None:
        kind = KINDS.get(item.path, {})
        try:
            if outcome.kind == DELIVERED:
                self.outbox.remove(item.id)
                self.telemetry.delivered.add(1, kind)
                if item.received is not None:
                    self.telemetry.delivery_duration.record(max(0.0, time.time() - item.received), kind)
            elif outcome.kind == REFUSED:
                self.outbox.dead_letter(item, outcome.status or 0, outcome.detail)
                self.telemetry.dead_lettered.add(1, {**kind, "http.response.status_code": outcome.status or 0})
                self._log_refusal(item, outcome)
        except OutboxUnavailable as error:  # it stays in the outbox: sent again after a restart
            log.error("cannot update the outbox after delivering payload %d: %s", item.id, error)
        with self._state:
            self.inflight -= 1
            now = time.monotonic()
            if outcome.kind == RETRY:
                self._retry_later(item, probe, outcome, now)
            else:
                self._attempts.pop(item.id, None)
                outage = self.circuit.answered()
                if outage is not None:
                    self._after_outage(outage)
            self._state.notify()

    def _retry_later(self, item: Item, probe: bool, outcome: Outcome, now: float) -> None:
        attempts = self._attempts.get(item.id, 0) + 1
        self._attempts[item.id] = attempts
        delay = self.backoff.delay(attempts, outcome.retry_after)
        heapq.heappush(self._retries, _Retry(now + delay, item.id))
        self.telemetry.retried.add(1, {**KINDS.get(item.path, {}), "error.type": outcome.error_type})
        next_probe = self.circuit.failed(probe, now, outcome.retry_after)
        what = f"HTTP {outcome.status}: {outcome.detail[:200]}" if outcome.status else outcome.detail
        if next_probe is not None:
            state = "still failing" if probe else f"failing ({CIRCUIT_THRESHOLD} attempts in a row)"
            log.warning(
                "%s is %s, last %s; next probe in %.1f s, %d payloads waiting",
                self.metrics_url, state, what, next_probe, len(self.outbox),
            )  # fmt: skip
        elif self.circuit.closed:
            url = f"{self.metrics_url}/{item.path}"
            self._log_failure(
                outcome.error_type, f"{url} answered {what}" if outcome.status else f"cannot reach {url}: {what}"
            )

    def _after_outage(self, seconds: float) -> None:
        """The endpoint answers again: what waited out the outage is due now."""
        now = time.monotonic()
        self._retries = [_Retry(now, retry.item_id) for retry in self._retries]
        heapq.heapify(self._retries)
        self._attempts.clear()
        self._state.notify_all()
        log.warning(
            "%s answers again after %.1f s; delivering %d waiting payloads", self.metrics_url, seconds, len(self.outbox)
        )

    # Logs and telemetry.

    def _log_refusal(self, item: Item, outcome: Outcome) -> None:
        key = (item.path, outcome.status or 0)
        if key in self._refusals_logged:
            log.debug("dead-lettered payload %d: HTTP %s", item.id, outcome.status)
            return
        self._refusals_logged.add(key)
        log.error(
            "%s/%s refused it for good (HTTP %d: %s); the payload is kept as a dead letter "
            "(`otel-metrics forwarder dead-letters` lists and replays them); further HTTP %d refusals "
            "of %s are counted, not logged",
            self.metrics_url, item.path, outcome.status, outcome.detail[:300], outcome.status, item.path,
        )  # fmt: skip

    def _log_failure(self, kind: str, message: str) -> None:
        """At most once per LOG_REPEAT_SECONDS for each kind of failure, saying how many were not logged."""
        now = time.monotonic()
        last, suppressed = self._failures_logged.get(kind, (-LOG_REPEAT_SECONDS, 0))
        if now - last < LOG_REPEAT_SECONDS:
            self._failures_logged[kind] = (last, suppressed + 1)
            return
        more = f" (and {suppressed} more like it since the last report)" if suppressed else ""
        log.warning("%s; retrying it with backoff%s", message, more)
        self._failures_logged[kind] = (now, 0)

    def _record_request(self, outcome: Outcome, seconds: float) -> None:
        attributes: Dict[str, Union[str, int]] = {"http.request.method": "POST", "server.address": self.target.host}
        if outcome.status is not None:
            attributes["http.response.status_code"] = outcome.status
        if outcome.kind != DELIVERED:
            attributes["error.type"] = outcome.error_type
        self.telemetry.request_duration.record(seconds, attributes)
