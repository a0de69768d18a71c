"""The forwarder: OTLP/HTTP in, legacy JSON payloads out to <metrics-url>/events and /sessions.

receiver.py answers OTLP exporters (the collector), decode.py turns OTLP into
events and sessions, outbox.py keeps their payloads durably, delivery.py posts them.
"""

from __future__ import annotations

import threading
import time

from .delivery import DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, Delivery
from .outbox import DEFAULT_MAX_ITEMS, Outbox, OutboxLocked
from .receiver import DEFAULT_MAX_BODY_BYTES, OtlpServer

__all__ = ["Forwarder", "OutboxLocked"]

SHUTDOWN_POLL_SECONDS = 0.1  # how long stop() may wait for the accept loop to notice


class Forwarder:
    """Receiver + outbox + delivery worker; start() returns once it is listening."""

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
    ) -> None:
        self.outbox = Outbox(outbox_path, max_items=max_outbox_items)
        try:
            self.server = OtlpServer(host, port, self.outbox, max_body_bytes)
        except OSError:
            self.outbox.close()
            raise
        self.delivery = Delivery(self.outbox, metrics_url, retry_initial, retry_max)
        self._serving = threading.Thread(
            target=self.server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), name="otlp-receiver", daemon=True
        )

    @property
    def address(self) -> tuple:
        return self.server.server_address[:2]

    def is_idle(self, seconds: float) -> bool:
        """No OTLP request for this long, and nothing left to deliver."""
        return time.monotonic() - self.server.last_request >= seconds and len(self.outbox) == 0

    def start(self) -> None:
        self.delivery.start()
        self._serving.start()

    def stop(self) -> None:
        """Stop taking requests, then stop delivering; what is left waits in the outbox."""
        self.server.shutdown()
        self.server.server_close()
        self.delivery.stop()
        self.outbox.close()
