"""The exporter's loop: spool -> model -> OTLP, removing only what the collector accepted."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional, Set, Tuple

from .. import bootstrap, config, hook_input, lock, spool
from ..backoff import Backoff
from ..identity import anonymous_id
from ..model import Event, Session
from . import HOOKS_QUIET_SECONDS, LONGEST_DEFERRAL_SECONDS, interpreter, local_forwarder, records
from .registry import SessionRegistry
from .sessions import SessionReports

if TYPE_CHECKING:
    from ..emit import Answer, OtlpSender

log = logging.getLogger("otel_metrics.exporter")

EXPORTER_MODULE = "otel_metrics.exporter"
NICENESS = 10
BATCH = 500  # records per export: bounded memory, and below the SDK's cardinality limit
QUIET_CHECK_SECONDS = 60.0


@dataclass(frozen=True)
class Settings:
    otlp_endpoint: Optional[str]  # None: the embedded default, the plugin's own forwarder
    metrics_url: str  # where the embedded forwarder posts the legacy payloads
    idle_seconds: float = 120.0  # stay warm this long after the last item
    poll_seconds: float = 0.2
    max_items: int = 10000
    max_age_seconds: float = 30 * 86400.0
    session_quiet_seconds: float = 30 * 60.0
    export_timeout: float = 10.0
    give_up_seconds: float = 600.0  # an unreachable collector: leave the spool to a later hook
    retry_initial: float = 1.0  # seconds before the first retry of a failed export (backoff.py's policy)
    retry_max: float = 30.0
    forwarder_idle_seconds: float = local_forwarder.DEFAULT_IDLE_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read afresh before every export: the configuration files may change while the exporter runs."""
        return cls(
            otlp_endpoint=config.otlp_endpoint(env),
            metrics_url=config.metrics_url(env),
            idle_seconds=config.number(env, config.ENV_EXPORTER_IDLE_SECONDS, cls.idle_seconds),
            max_items=int(config.number(env, config.ENV_SPOOL_MAX_ITEMS, cls.max_items)),
            max_age_seconds=3600 * config.number(env, config.ENV_SPOOL_MAX_AGE_HOURS, cls.max_age_seconds / 3600),
            session_quiet_seconds=60
            * config.number(env, config.ENV_SESSION_QUIET_MINUTES, cls.session_quiet_seconds / 60),
            export_timeout=config.number(env, config.ENV_EXPORT_TIMEOUT_SECONDS, cls.export_timeout),
            forwarder_idle_seconds=config.number(env, config.ENV_FORWARDER_IDLE_SECONDS, cls.forwarder_idle_seconds),
        )


class Exporter:
    def __init__(self, state_dir: str, env: Mapping[str, str]) -> None:
        self.state = state_dir
        self.env = env
        self.settings = Settings.from_env(env)
        self.registry = SessionRegistry(state_dir)
        self.sessions = SessionReports(state_dir, self.registry)
        self._sender: Optional[OtlpSender] = None
        self._failing = False
        self._last_failure = ""

    def _target(self) -> Optional[str]:
        """The OTLP base URL to export to now: the configured collector, else the local forwarder."""
        self.settings = Settings.from_env(self.env)
        if self.settings.otlp_endpoint is not None:
            return self.settings.otlp_endpoint
        forwarder = local_forwarder.LocalForwarder(self.state, self.env, self.settings.forwarder_idle_seconds)
        return forwarder.url(self.settings.metrics_url)

    def _sender_for(self, target: str) -> OtlpSender:
        if self._sender is None or self._sender.base_url != target.rstrip("/"):
            from ..emit import OtlpSender  # the SDK import is the expensive part: only when there is work

            if self._sender is not None:
                self._sender.close()
            self._sender = OtlpSender(target, self.settings.export_timeout)
        return self._sender

    def report_quiet_sessions(self) -> int:
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
        set_aside = []
        for name in spool.pending(self.state)[:BATCH]:
            record = spool.read(self.state, name)
            try:
                if record is None:
                    raise records.BadRecord("unreadable")
                self._route(name, record, user_id, events, sessions)
            except (records.BadRecord, TypeError, ValueError) as error:
                spool.set_aside(self.state, name, str(error))
                set_aside.append(str(error))
        if set_aside:  # one line however many: a hostile or broken spool must not flood the log
            log.error(
                "set aside %d spool record(s) that can never be sent, in %s (first: %s)",
                len(set_aside),
                os.path.join(self.state, spool.REJECTED_DIR),
                set_aside[0],
            )
        return self._send(events, sessions)

    def _route(
        self,
        name: str,
        record: Dict[str, Any],
        user_id: Optional[str],
        events: List[Tuple[str, Event]],
        sessions: List[Tuple[str, Session]],
    ) -> None:
        kind = record.get("record")
        if kind == spool.EVENT:
            events.append((name, records.event_from_record(record, user_id)))
            self._seen(record)
        elif kind == spool.SESSION_START:
            self._seen(record)
            spool.remove(self.state, name)
        elif kind == spool.SESSION_END:
            session_id = records.required(record, "session_id", str)
            order_ns = spool.written_ns(name)
            time_ns = record.get("time_ns")
            hook_ns = time_ns if isinstance(time_ns, int) else order_ns
            stop = records.stop_offsets(record)
            self.sessions.queue(session_id, _path(record), record.get("reason"), hook_ns, order_ns, stop)
            spool.remove(self.state, name)
        elif kind == spool.SESSION:
            session = records.session_from_record(record)
            self.sessions.note_queued(session, record)
            sessions.append((name, session))
        else:
            raise records.BadRecord(f"unknown record kind {kind!r}")

    def _seen(self, record: Dict[str, Any]) -> None:
        session_id = record.get("session_id")
        if isinstance(session_id, str) and session_id:
            self.registry.seen(session_id, _path(record))

    def _send(self, events: List[Tuple[str, Event]], sessions: List[Tuple[str, Session]]) -> bool:
        if not events and not sessions:
            return True
        target = self._target()
        if target is None:
            return False  # the local forwarder could not start: said in the log, records kept
        sender = self._sender_for(target)
        refusals: List[str] = []
        ok = self._export(events, sender.send_events, refusals) & self._export(sessions, sender.send_sessions, refusals)
        if refusals:
            log.error(
                "the collector at %s refused %d record(s) for good (first: %s): set aside in %s",
                target,
                len(refusals),
                refusals[0],
                os.path.join(self.state, spool.REJECTED_DIR),
            )
        if ok and self._failing:
            log.error("collector at %s reachable again", target)
        elif not ok and not self._failing:  # once per outage, not once per retry
            log.error("collector at %s did not accept the export (%s); records kept", target, self._last_failure)
        self._failing = not ok
        return ok

    def _export(self, batch: List[Tuple[str, Any]], send: Callable[[List[Any]], Answer], refusals: List[str]) -> bool:
        """Send a batch; True unless it must be tried again later. A batch the collector refuses
        for good is halved until the records at fault are found: those are set aside, the rest sent."""
        if not batch:
            return True
        answer = send([item for _, item in batch])
        if answer.accepted:
            for name, _ in batch:
                spool.remove(self.state, name)
            log.info("exported %d record(s)", len(batch))
            return True
        if not answer.refused:
            self._last_failure = answer.detail
            return False
        if len(batch) == 1:
            spool.set_aside(self.state, batch[0][0], answer.detail)
            refusals.append(answer.detail)
            return True
        half = len(batch) // 2
        return self._export(batch[:half], send, refusals) and self._export(batch[half:], send, refusals)

    def run(self, lock_fd: int) -> Optional[Dict[str, str]]:
        """Drain until idle, then return None; or return the settings a later hook poked with, when
        they differ from ours (a changed option, an updated plugin): the caller restarts with them."""
        settings = self.settings
        watch = SettingsWatch(self.state, self.env)
        schedule = DrainSchedule(Backoff(settings.retry_initial, settings.retry_max), time.monotonic())
        last_work = time.monotonic()
        next_quiet_check = schedule.next_try  # with the first drain, and after it: sessions just seen are known
        known: Set[str] = set()
        while True:
            now = time.monotonic()
            # What a lost wake left (a hook's own wake takes its input at once).
            for problem in hook_input.adopt(self.state) or ():
                log.error("%s", problem)
            names = spool.pending(self.state)
            poked = watch.poked()
            changed = watch.changed_settings() if poked else None
            if changed is not None:
                return changed
            if poked or any(not name.endswith(spool.NO_WAKE_SUFFIX) for name in set(names) - known):
                schedule.hook_fired(now)
            if names and schedule.due(now):
                if self.drain():
                    schedule.succeeded()
                    last_work = time.monotonic()
                elif schedule.failed(time.monotonic()) > settings.give_up_seconds:
                    return None  # an unreachable collector: the spool waits for a later hook
                names = spool.pending(self.state)
            if now >= next_quiet_check:
                if self.report_quiet_sessions():
                    schedule.hook_fired(now)  # a quiet session was queued: like a hook's record
                next_quiet_check = now + QUIET_CHECK_SECONDS
                names = spool.pending(self.state)
            known = set(names)
            if not names and time.monotonic() - last_work > settings.idle_seconds:
                lock.release(lock_fd)
                # A hook that wrote just before the release saw the lock held and left
                # its record to us: look once more, and stay if we can keep the lock.
                if not spool.pending(self.state) and not spool.hook_inputs(self.state):
                    return None
                kept = lock.try_acquire(self.state)
                if kept is None:
                    return None
                lock_fd, last_work = kept, time.monotonic()
            time.sleep(settings.poll_seconds)


class DrainSchedule:
    """When the exporter drains next.

    Soon after a hook fired, once the hooks have been quiet HOOKS_QUIET_SECONDS (so the
    work falls between a session's steps), but never deferred past LONGEST_DEFERRAL_SECONDS;
    while the collector fails, after the retry policy's backoff, unless a hook fires (the
    collector may be back)."""

    def __init__(self, backoff: Backoff, now: float) -> None:
        self.backoff = backoff
        self.next_try = now + HOOKS_QUIET_SECONDS  # a cold start: the hook that started us goes first
        self.deferred_since: Optional[float] = None
        self.failing_since: Optional[float] = None
        self.failures = 0

    def hook_fired(self, now: float) -> None:
        self.deferred_since = self.deferred_since or now
        if now - self.deferred_since < LONGEST_DEFERRAL_SECONDS:
            self.next_try = now + HOOKS_QUIET_SECONDS

    def due(self, now: float) -> bool:
        if now < self.next_try:
            return False
        self.deferred_since = None
        return True

    def succeeded(self) -> None:
        self.failing_since, self.failures = None, 0

    def failed(self, now: float) -> float:
        """Schedule the retry; how long the collector has been failing."""
        self.failing_since = self.failing_since or now
        self.failures += 1
        self.next_try = now + self.backoff.delay(self.failures)
        return now - self.failing_since


class SettingsWatch:
    """Notices hooks' pokes, and whether the poking hook ran with other settings than ours."""

    def __init__(self, state: str, env: Mapping[str, str]) -> None:
        self.state = state
        self.own = config.hook_settings(env)
        self.token = spool.last_poke(state)

    def poked(self) -> bool:
        token = spool.last_poke(self.state)
        poked, self.token = token != self.token, token
        return poked

    def changed_settings(self) -> Optional[Dict[str, str]]:
        settings = spool.poked_settings(self.state)
        return settings if settings and settings != self.own else None


def _path(record: Dict[str, Any]) -> Optional[str]:
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
    os.umask(0o077)  # the state is the user's alone, whatever started this process
    try:
        os.chmod(state, 0o700)  # Claude Code creates the data directory readable by all
        _setup_logging(state, config.verbose(env))
    except OSError:
        pass
    if hasattr(os, "nice") and os.nice(0) < NICENESS:
        os.nice(NICENESS - os.nice(0))  # Claude Code comes first on a busy machine
    python = _await_interpreter(env, state, lock_fd)
    if python is None:
        return  # no usable Python yet: said in the log; the records wait in the spool for a later hook
    if not interpreter.is_current(python, state) and not env.get(_RESTARTED):
        _restart(python, env, lock_fd)
    try:
        import opentelemetry.sdk  # noqa: F401 - fail here with one clear line, not a traceback per item
    except ImportError:
        log.error(
            "the OpenTelemetry SDK cannot be imported by %s; unset %s to let the plugin install its own "
            "dependencies, or install %s there",
            sys.executable,
            config.ENV_EXPORTER_PYTHON,
            interpreter.requirements(env),
        )
        return
    try:
        hook_settings = Exporter(state, env).run(lock_fd)
    except Exception:
        log.exception("exporter stopped; records stay in the spool for the next one")
        return
    if hook_settings is not None:
        _restart_with(hook_settings, env, lock_fd)


def _await_interpreter(env: Mapping[str, str], state: str, lock_fd: int) -> Optional[str]:
    """The interpreter to export with; while the dependencies cannot be installed yet, retry as
    their backoff allows within the idle time, or restart when a hook brings other settings
    (a fixed proxy or index URL). None: leave it to a later hook."""
    watch = SettingsWatch(state, env)
    idle_seconds = Settings.from_env(env).idle_seconds
    while True:
        python = interpreter.for_exporter(env, state)
        if python is not None:
            return python
        wait = bootstrap.seconds_until_retry(state, env)
        if wait > idle_seconds:
            return None
        retry_at = time.monotonic() + wait
        while time.monotonic() < retry_at:
            changed = watch.changed_settings() if watch.poked() else None
            if changed is not None:
                _restart_with(changed, env, lock_fd)
            time.sleep(Settings.poll_seconds)


def _restart_with(hook_settings: Dict[str, str], env: Mapping[str, str], lock_fd: int) -> NoReturn:
    log.info("a hook runs with other settings (an updated plugin, changed options or network): restarting")
    restarted = {k: v for k, v in env.items() if k not in config.hook_settings(env)}
    restarted.update(hook_settings)
    restarted.pop(_RESTARTED, None)
    _restart(sys.executable, restarted, lock_fd)


_RESTARTED = "OTEL_METRICS_EXPORTER_RESTARTED"  # set across an exec: never exec again in a loop


def _restart(python: str, env: Mapping[str, str], lock_fd: int) -> NoReturn:
    """Become `python -m otel_metrics.exporter` with env, keeping the exporter lock."""
    os.set_inheritable(lock_fd, True)
    child_env = dict(env)
    child_env[lock.ENV_LOCK_FD] = str(lock_fd)
    child_env["PYTHONPATH"] = interpreter.package_path(child_env)
    if python == sys.executable:
        child_env.pop(_RESTARTED, None)  # new settings: the new process decides its interpreter again
    else:
        child_env[_RESTARTED] = "1"
    logging.shutdown()
    os.execve(python, [python, "-m", EXPORTER_MODULE], child_env)
