"""The forwarder: OTLP/HTTP in, legacy JSON payloads out to <metrics-url>/events and /sessions.

receiver.py answers OTLP exporters (the collector) and health checks on the
routes of routes.py, in the wire format of wire.py; decode.py turns OTLP into
events and sessions and their payloads; outbox.py keeps the payloads durably,
delivery.py posts them (http_client.py: keep-alive connections, one per POST in
flight), dead_letters.py lists and replays what the endpoint refused,
telemetry.py counts it all.

Threads: one event loop (http_server.py's) reads every request, decodes the
small ones, writes every answer and runs every POST to the endpoint; the
outbox's writer commits; a decoding thread or two take the large bodies. A
request thus costs no thread hand-off but the commit's, which many share.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Tuple

from ..backoff import Backoff
from ..event_loop import AUTO
from ..http_server import DEFAULT_BOUNDS, ConnectionBounds
from .delivery import DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_TIMEOUT, DEFAULT_WORKERS, Delivery
from .outbox import DEFAULT_MAX_ITEMS, Outbox
from .receiver import DEFAULT_MAX_BODY_BYTES, Checks, OtlpReceiver
from .telemetry import Telemetry, disabled

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 10.0  # seconds for the POSTs in flight at SIGTERM


class Forwarder:
    """Receiver + outbox + delivery workers; start() returns once it is listening.

    Raises OutboxInUse when another process holds the outbox, OSError when the
    address cannot be bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics_url: str,
        outbox_path: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_outbox_items: int = DEFAULT_MAX_ITEMS,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
        workers: int = DEFAULT_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        telemetry: Optional[Telemetry] = None,
        prometheus: bool = False,
        bounds: ConnectionBounds = DEFAULT_BOUNDS,
        event_loop: str = AUTO,
    ) -> None:
        self.telemetry = telemetry or disabled()
        self.outbox = Outbox(outbox_path, max_items=max_outbox_items)
        try:
            backoff = Backoff(initial=retry_initial, maximum=retry_max)
            self.delivery = Delivery(self.outbox, metrics_url, self.telemetry, workers, backoff, timeout)
            self.server = OtlpReceiver(
                host,
                port,
                self.outbox,
                max_body_bytes,
                self.telemetry,
                self.readiness,
                prometheus,
                bounds,
                event_loop,
            )
        except BaseException:
            self.outbox.close()
            raise
        self.telemetry.observe(
            outbox_size=lambda: len(self.outbox),
            outbox_capacity=max_outbox_items,
            oldest_received=self.outbox.oldest_received,
            dead_letters=self.outbox.dead_letter_count,
            endpoint_available=lambda: self.delivery.circuit.closed,
        )

    @property
    def address(self) -> Tuple[str, int]:
        return self.server.address

    def start(self) -> None:
        self.server.on_queued = self.delivery.added
        self.delivery.start(self.server.loop)  # (its first step waits for the loop to run)
        self.server.start()

    def readiness(self) -> Checks:
        """/readyz: the outbox is writable and below its bound, and the endpoint answers."""
        outbox = self.outbox
        circuit = self.delivery.circuit
        waiting = len(outbox)
        return {
            "outbox_writable": "ok" if outbox.write_error is None else f"cannot be written: {outbox.write_error}",
            "outbox_below_bound": "ok" if waiting < outbox.max_items else f"full ({waiting} payloads waiting)",
            "endpoint": "ok"
            if circuit.open_since is None
            else f"failing for {time.monotonic() - circuit.open_since:.0f} s ({circuit.failures} failures in a row)",
        }

    def idle_seconds(self) -> float:
        """How long no OTLP request has arrived while nothing waited for delivery (0 while busy)."""
        if not self.delivery.idle():
            return 0.0
        return time.monotonic() - self.server.last_request

    def stop(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Answer 503 to new requests, let those being answered and the POSTs in flight finish
        within `timeout` seconds, then close; what is left waits in the outbox."""
        deadline = time.monotonic() + timeout
        self.server.accepting = False
        self.server.wait_quiet(deadline)
        unanswered = self.delivery.stop(deadline)
        if unanswered:
            log.warning(
                "%d POSTs still unanswered after %g s; their payloads stay in the outbox for the next start",
                unanswered,
                timeout,
            )
        self.server.stop()
        self.outbox.close()
        self.telemetry.shutdown()
        log.info("stopped; %d payloads wait in the outbox", len(self.outbox))
