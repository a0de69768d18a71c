"""The delivery worker: outbox -> POST <metrics-url>/events or /sessions, oldest first.

A payload leaves the outbox when the endpoint accepts it (2xx), or when it
refuses it for good (a 4xx other than 408/425/429: the same bytes will never be
accepted, so it is dropped with an error in the log). Anything else (5xx, 429,
no connection) is retried with capped exponential backoff: never lost.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import List, Optional, Tuple

import requests

from ..config import is_loopback_url
from .outbox import Item, Outbox

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 425, 429)
DEFAULT_RETRY_INITIAL = 0.5  # seconds
DEFAULT_RETRY_MAX = 60.0
TIMEOUT = (5.0, 30.0)  # connect, read
IDLE_POLL = 5.0  # seconds between outbox checks when nothing wakes the worker

DELIVERED, DROPPED, RETRY = "delivered", "dropped", "retry"


class Delivery(threading.Thread):
    def __init__(
        self,
        outbox: Outbox,
        metrics_url: str,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(name="delivery", daemon=True)  # a hung POST must not block exit: the item stays
        self.outbox = outbox
        self.metrics_url = metrics_url.rstrip("/")
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._stopping = threading.Event()
        self._http = requests.Session()  # keeps the connection to the endpoint open between POSTs
        # A remote endpoint may need the company proxy; loopback never goes through one.
        self._http.trust_env = not is_loopback_url(self.metrics_url)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.outbox.added.set()
        self.join(timeout)

    def run(self) -> None:
        delay = self.retry_initial
        while not self._stopping.is_set():
            self.outbox.added.clear()  # before looking: an add from now on wakes the wait below
            try:
                items = self.outbox.oldest()
            except sqlite3.Error as error:
                log.error("cannot read the outbox: %s", error)
                items = None
            if items == []:
                self.outbox.added.wait(IDLE_POLL)
                continue
            failed, retry_after = self._deliver_all(items) if items else (True, None)
            if not failed:
                delay = self.retry_initial
                continue
            wait = min(self.retry_max, retry_after if retry_after is not None else delay)
            log.warning("retrying in %.1f s (%d payloads waiting)", wait, len(self.outbox))
            self._stopping.wait(wait)
            delay = min(self.retry_max, delay * 2)
        self._http.close()

    def _deliver_all(self, items: List[Item]) -> Tuple[bool, Optional[float]]:
        """Deliver in order; stop at the first that must be retried: (failed, Retry-After)."""
        for item in items:
            if self._stopping.is_set():
                break
            outcome, retry_after = self._deliver(item)
            if outcome == RETRY:
                return True, retry_after  # it stays the oldest: it goes first next time
            try:
                self.outbox.remove(item.id)
            except sqlite3.Error as error:  # it will be sent again: a duplicate, never a loss
                log.error("cannot remove outbox item %d: %s", item.id, error)
                return True, None
        return False, None

    def _deliver(self, item: Item) -> Tuple[str, Optional[float]]:
        url = f"{self.metrics_url}/{item.path}"
        try:
            response = self._http.post(
                url,
                data=item.body.encode("utf-8"),
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT,
                allow_redirects=False,  # a redirected POST would turn into a GET
            )
        except requests.RequestException as error:
            log.warning("cannot reach %s: %s", url, error)
            return RETRY, None
        status = response.status_code
        if 200 <= status < 300:
            log.debug("delivered outbox item %d to %s (HTTP %d)", item.id, url, status)
            return DELIVERED, None
        detail = response.text[:300].strip()
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            log.error("dropped outbox item %d: %s refused it for good (HTTP %d: %s)", item.id, url, status, detail)
            log.debug("dropped payload %d: %s", item.id, item.body)
            return DROPPED, None
        log.warning("%s answered HTTP %d: %s", url, status, detail)
        return RETRY, _retry_after(response)


def _retry_after(response: requests.Response) -> Optional[float]:
    """Retry-After in seconds (the HTTP-date form is rare enough to fall back to backoff)."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
