"""Delivery: outbox -> POST <metrics-url>/events or /sessions, several at once, from the event loop.

At most `workers` POSTs (default 10, as the collector's sending queue has
consumers) are in flight at once, each on a keep-alive connection of its own
(http_client.py: asyncio protocols, so a POST waiting for its answer holds no
thread); payloads go in no particular order (the endpoint's contract has none).
What was just committed is handed over in memory (up to FRESH_MAX payloads);
anything beyond, and what a previous run left, is read back from the outbox.
Each outcome:

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

import asyncio
import heapq
import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Deque, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from ..backoff import Backoff, parse_retry_after, refused_for_good
from .http_client import Answer, Connection, Pool, Target, target_for
from .outbox import Commit, Item, Outbox
from .telemetry import KINDS, Telemetry

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 10
DEFAULT_RETRY_INITIAL = 0.5  # seconds
DEFAULT_RETRY_MAX = 60.0
DEFAULT_TIMEOUT = 10.0  # seconds a POST's answer may go without a byte arriving
CONNECT_TIMEOUT = 5.0
CIRCUIT_THRESHOLD = 5  # failures in a row that open the circuit
FETCH_PAGE = 200  # payloads read from the outbox at a time
FRESH_MAX = 2000  # payloads held in memory for delivery; more wait in the outbox only
READ_RETRY = 5.0  # seconds before reading the outbox again after it failed
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


def failure_of(error: BaseException) -> Outcome:
    """No answer came (no connection, a timeout, what is not HTTP): to be retried."""
    name = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
    return Outcome(RETRY, None, str(error) or name, name)


async def post(connection: Connection, item: Item) -> Outcome:
    """One attempt to deliver one payload."""
    try:
        return outcome_of(await connection.post(item.path, item.body.encode("utf-8")))
    except Exception as error:
        return failure_of(error)


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
    """What the POSTs in flight share: which payloads are taken, due, waiting their retry (on the loop)."""

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
        self.workers = workers
        self.backoff = backoff or Backoff(DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX)
        self.timeout = timeout
        self.circuit = Circuit(self.backoff)
        self.inflight = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pool: Optional[Pool] = None
        self._stopping = False  # send nothing new
        self._stopped = False  # answers after this are not waited for: their payloads stay in the outbox
        self._quiet: Optional[threading.Event] = None  # set when nothing is in flight, once stopping
        self._cursor = 0  # the highest outbox id taken into _fresh so far
        self._unread = True  # the outbox may hold payloads above the cursor that _fresh lacks
        self._fresh: Deque[Item] = deque()  # taken, not yet sent
        self._retries: List[_Retry] = []  # a heap: payloads waiting for their next attempt
        self._attempts: Dict[int, int] = {}  # failed attempts of each payload being retried
        self._timer: Optional[asyncio.TimerHandle] = None
        self._read_failed_at: Optional[float] = None
        self._refusals_logged: Set[Tuple[str, int]] = set()
        self._failures_logged: Dict[str, Tuple[float, int]] = {}  # error kind -> (last logged, suppressed since)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver from `loop` (running on another thread) from now on."""
        self._loop = loop
        self._pool = Pool(self.target, CONNECT_TIMEOUT, self.timeout, loop)
        loop.call_soon_threadsafe(self._pump)

    def idle(self) -> bool:
        """Nothing waits in the outbox and nothing is being posted."""
        return self.inflight == 0 and len(self.outbox) == 0

    def added(self, commit: Commit) -> None:
        """Payloads were just committed to the outbox (on the loop, in the order of their commits)."""
        last = commit.first_id + commit.count - 1
        if last <= self._cursor:
            return  # read from the outbox already
        if not self._unread and commit.first_id == self._cursor + 1 and len(self._fresh) + commit.count <= FRESH_MAX:
            self._fresh.extend(commit.payloads())
            self._cursor = last
        else:
            self._unread = True  # read back from the outbox once what is in memory went
        self._pump()

    def stop(self, deadline: float) -> int:
        """Send nothing new; wait until `deadline` (monotonic) for the POSTs in flight, then close every
        connection. Returns how many POSTs were still unanswered (their payloads stay in the outbox)."""
        loop = self._loop
        if loop is None:
            return 0
        quiet, closed = threading.Event(), threading.Event()
        unanswered = [0]

        def begin() -> None:
            self._stopping = True
            self._cancel_timer()
            self._quiet = quiet
            if self.inflight == 0:
                quiet.set()

        def end() -> None:
            self._stopped = True
            unanswered[0] = self.inflight
            assert self._pool is not None
            self._pool.close()
            closed.set()

        try:
            loop.call_soon_threadsafe(begin)
            quiet.wait(max(0.0, deadline - time.monotonic()))
            loop.call_soon_threadsafe(end)
        except RuntimeError:  # the loop is closed already: nothing is in flight
            return 0
        closed.wait()
        return unanswered[0]

    # On the loop.

    def _pump(self) -> None:
        """Start POSTs while fewer than `workers` are in flight and payloads are due; then wait for
        the next one due."""
        if self._stopping:
            return
        now = time.monotonic()
        while self.inflight < self.workers and self.circuit.may_send(now):
            item = self._next_item(now)
            if item is None:
                break
            probe = self.circuit.sent()
            self._post(item, probe)
            if probe:
                break
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        """A wake-up for the next payload due (a retry, the circuit's probe, a read to try again)."""
        waits = []
        if self.circuit.closed:
            if self._retries:
                waits.append(self._retries[0].due - now)
        else:
            probe_in = self.circuit.wait(now)  # None: a probe is out, its answer pumps
            if probe_in is not None:
                waits.append(probe_in)
        if self._read_failed_at is not None:
            waits.append(self._read_failed_at + READ_RETRY - now)
        self._cancel_timer()
        if waits:
            assert self._loop is not None
            self._timer = self._loop.call_later(max(0.0, min(waits)), self._woken)

    def _woken(self) -> None:
        self._timer = None
        self._pump()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        if not self._fresh and self._unread:
            self._read_outbox(now)
        return self._fresh.popleft() if self._fresh else None

    def _read_outbox(self, now: float) -> None:
        try:
            page = self.outbox.after(self._cursor, FETCH_PAGE)
        except Exception as error:  # sqlite3.Error: the disk; tried again a little later
            if self._read_failed_at is None:
                log.error("cannot read the outbox: %s", error)
            self._read_failed_at = now
            return
        self._read_failed_at = None
        self._fresh.extend(page)
        if page:
            self._cursor = page[-1].id
        self._unread = len(page) == FETCH_PAGE

    def _post(self, item: Item, probe: bool) -> None:
        assert self._pool is not None
        self.inflight += 1
        self.telemetry.inflight.add(1)
        connection = self._pool.take()
        answered = connection.post(item.path, item.body.encode("utf-8"))
        answered.add_done_callback(partial(self._answered, item, probe, connection, time.monotonic()))

    def _answered(
        self, item: Item, probe: bool, connection: Connection, started: float, answered: asyncio.Future[Answer]
    ) -> None:
        if self._stopped:
            return  # closed at shutdown: the payload stays in the outbox
        error = answered.exception()
        outcome = outcome_of(answered.result()) if error is None else failure_of(error)
        self._record_request(outcome, time.monotonic() - started)
        assert self._pool is not None
        self._pool.give_back(connection)
        self.telemetry.inflight.add(-1)
        self.inflight -= 1
        self._settle(item, probe, outcome)
        if self._quiet is not None and self.inflight == 0:
            self._quiet.set()
        self._pump()

    def _settle(self, item: Item, probe: bool, outcome: Outcome) -> None:
        kind = KINDS.get(item.path, {})
        if outcome.kind == DELIVERED:
            self.outbox.remove(item.id)
            self.telemetry.delivered.add(1, kind)
            if item.received is not None:
                self.telemetry.delivery_duration.record(max(0.0, time.time() - item.received), kind)
        elif outcome.kind == REFUSED:
            self.outbox.dead_letter(item, outcome.status or 0, outcome.detail)
            self.telemetry.dead_lettered.add(1, {**kind, "http.response.status_code": outcome.status or 0})
            self._log_refusal(item, outcome)
        if outcome.kind == RETRY:
            self._retry_later(item, probe, outcome, time.monotonic())
        else:
            self._attempts.pop(item.id, None)
            outage = self.circuit.answered()
            if outage is not None:
                self._after_outage(outage)

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
