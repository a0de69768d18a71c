"""The exporter's loop: spool -> model -> OTLP, removing only what the collector accepted."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from .. import config, lock, spool
from ..identity import anonymous_id
from ..model import Event, Session
from . import records
from .registry import SessionRegistry
from .sessions import SessionReports

log = logging.getLogger("otel_metrics.exporter")

BATCH = 500  # records per export: bounded memory, and below the SDK's cardinality limit
QUIET_CHECK_SECONDS = 60.0


@dataclass(frozen=True)
class Settings:
    otlp_endpoint: str
    idle_seconds: float = 120.0  # stay warm this long after the last item
    poll_seconds: float = 0.2
    max_items: int = 10000
    max_age_seconds: float = 30 * 86400.0
    session_quiet_seconds: float = 30 * 60.0
    export_timeout: float = 10.0
    give_up_seconds: float = 600.0  # an unreachable collector: leave the spool to a later hook

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: str) -> Settings:
        return cls(
            otlp_endpoint=config.otlp_endpoint(env, state_dir),
            idle_seconds=config.number(env, config.ENV_EXPORTER_IDLE_SECONDS, cls.idle_seconds),
            max_items=int(config.number(env, config.ENV_SPOOL_MAX_ITEMS, cls.max_items)),
            max_age_seconds=3600 * config.number(env, config.ENV_SPOOL_MAX_AGE_HOURS, cls.max_age_seconds / 3600),
            session_quiet_seconds=60
            * config.number(env, config.ENV_SESSION_QUIET_MINUTES, cls.session_quiet_seconds / 60),
            export_timeout=config.number(env, config.ENV_EXPORT_TIMEOUT_SECONDS, cls.export_timeout),
        )


class Exporter:
    def __init__(self, state_dir: str, settings: Settings) -> None:
        self.state = state_dir
        self.settings = settings
        self.registry = SessionRegistry(state_dir)
        self.sessions = SessionReports(state_dir, self.registry)
        self._sender = None
        self._failing = False

    @property
    def sender(self):
        if self._sender is None:  # the SDK import is the expensive part: only when there is work
            from ..emit import OtlpSender

            self._sender = OtlpSender(self.settings.otlp_endpoint, self.settings.export_timeout)
        return self._sender

    def housekeeping(self) -> int:
        """Queue what sessions wrote in runs that ended without SessionEnd; return how many were queued."""
        queued = self.sessions.queue_quiet(self.settings.session_quiet_seconds)
        self.registry.forget_old()
        return queued

    def drain(self) -> bool:
        """One round: enforce the spool's bounds, read up to BATCH records, export them. True when nothing failed."""
        dropped = spool.enforce_bounds(self.state, self.settings.max_items, self.settings.max_age_seconds)
        if dropped:
            log.error("spool over its bounds: dropped %d oldest record(s)", dropped)
        events: List[Tuple[str, Event]] = []
        sessions: List[Tuple[str, Session]] = []
        user_id = anonymous_id(self.state)
        for name in spool.pending(self.state)[:BATCH]:
            record = spool.read(self.state, name)
            try:
                if record is None:
                    raise records.BadRecord("unreadable")
                self._take(name, record, user_id, events, sessions)
            except (records.BadRecord, TypeError, ValueError) as error:
                log.error("dropped spool record %s: %s", name, error)
                spool.remove(self.state, name)
        return self._send(events, sessions)

    def _take(self, name: str, record: Dict, user_id: Optional[str], events: List, sessions: List) -> None:
        kind = record.get("record")
        if kind == records.EVENT:
            events.append((name, records.event_from_record(record, user_id)))
            self._seen(record)
        elif kind == records.SESSION_START:
            self._seen(record)
            spool.remove(self.state, name)
        elif kind == records.SESSION_END:
            session_id = records.required(record, "session_id", str)
            order_ns = int(name.split("-", 1)[0])
            hook_ns = record.get("time_ns") if isinstance(record.get("time_ns"), int) else order_ns
            stop = records.stop_offsets(record)
            self.sessions.queue(session_id, _path(record), record.get("reason"), hook_ns, order_ns, stop)
            spool.remove(self.state, name)
        elif kind == records.SESSION:
            session = records.session_from_record(record)
            self.sessions.note_queued(session, record)
            sessions.append((name, session))
        else:
            raise records.BadRecord(f"unknown record kind {kind!r}")

    def _seen(self, record: Dict) -> None:
        session_id = record.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.registry.seen(session_id, _path(record))

    def _send(self, events: List[Tuple[str, Event]], sessions: List[Tuple[str, Session]]) -> bool:
        ok = True
        for batch, send in ((events, self.sender.send_events), (sessions, self.sender.send_sessions)):
            if not batch:
                continue
            if send([item for _, item in batch]):
                for name, _ in batch:
                    spool.remove(self.state, name)
                log.info("exported %d record(s) to %s", len(batch), self.settings.otlp_endpoint)
            else:
                ok = False
        if ok and self._failing:
            log.error("collector at %s reachable again", self.settings.otlp_endpoint)
        elif not ok and not self._failing:  # once per outage, not once per retry
            log.error("collector at %s did not accept the export; records kept", self.settings.otlp_endpoint)
        self._failing = not ok
        return ok

    def run(self, lock_fd: int) -> None:
        settings = self.settings
        last_work = time.monotonic()
        failing_since: Optional[float] = None
        next_try, backoff = 0.0, 0.0
        next_housekeeping = 0.0
        known: set = set()
        last_poke = spool.last_poke(self.state)
        while True:
            now = time.monotonic()
            names = spool.pending(self.state)
            poked = spool.last_poke(self.state)
            if set(names) - known or poked != last_poke:
                next_try = now  # a hook just fired: try at once, the collector may be back
                last_poke = poked
            if names and now >= next_try:
                if self.drain():
                    failing_since, backoff, last_work = None, 0.0, time.monotonic()
                else:
                    failing_since = failing_since or now
                    if now - failing_since > settings.give_up_seconds:
                        return
                    backoff = min(max(1.0, backoff * 2), 30.0)
                    next_try = time.monotonic() + backoff
                names = spool.pending(self.state)
            if now >= next_housekeeping:  # after a drain, so sessions just seen are known
                if self.housekeeping():
                    next_try = now  # a quiet session was queued: send it on the next round
                next_housekeeping = now + QUIET_CHECK_SECONDS
                names = spool.pending(self.state)
            known = set(names)
            if not names and time.monotonic() - last_work > settings.idle_seconds:
                lock.release(lock_fd)
                # A hook that wrote just before the release saw the lock held and left
                # its record to us: look once more, and stay if we can keep the lock.
                if not spool.pending(self.state):
                    return
                lock_fd = lock.try_acquire(self.state)
                if lock_fd is None:
                    return
                last_work = time.monotonic()
            time.sleep(settings.poll_seconds)


def _path(record: Dict) -> Optional[str]:
    path = record.get("transcript_path")
    return path if isinstance(path, str) and path else None


def _adopt_lock(env: Mapping[str, str]) -> Optional[int]:
    """The lock descriptor the hook handed over, if it is really ours."""
    try:
        fd = int(env.get(lock.ENV_LOCK_FD, ""))
        os.fstat(fd)
    except (ValueError, OSError):
        return None
    os.set_inheritable(fd, False)
    return fd


def _setup_logging(state_dir: str, verbose: bool) -> None:
    handler = logging.FileHandler(os.path.join(state_dir, config.LOG_FILE), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s exporter[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.ERROR)
    # The SDK logs every failed attempt; our own line per outage says it once.
    logging.getLogger("opentelemetry").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def main(env: Mapping[str, str] = os.environ) -> None:
    state = config.state_dir(env)
    if config.disabled(env):
        return
    lock_fd = _adopt_lock(env)
    if lock_fd is None:
        lock_fd = lock.try_acquire(state)
        if lock_fd is None:
            return  # another exporter is draining the spool
    try:
        _setup_logging(state, config.verbose(env))
    except OSError:
        pass
    if hasattr(os, "nice"):
        os.nice(10)  # Claude Code comes first on a busy machine
    try:
        import opentelemetry.sdk  # noqa: F401 - fail here with one clear line, not a traceback per item
    except ImportError:
        log.error(
            "opentelemetry-sdk is not installed for %s: `pip install otel-metrics` there, or set %s",
            sys.executable,
            config.ENV_EXPORTER_PYTHON,
        )
        return
    try:
        Exporter(state, Settings.from_env(env, state)).run(lock_fd)
    except Exception:
        log.exception("exporter stopped; records stay in the spool for the next one")
