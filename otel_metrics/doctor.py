"""`otel-metrics doctor` and `/metrics:doctor`: whether usage metrics can be delivered from here, and the fix.

One line per check: `ok`, `warn` or `FAIL`, what was found, and for a problem what
to do about it. Exit status 0 when nothing failed. Stdlib only: it must work on a
machine where the plugin could not install anything yet.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from . import __version__, bootstrap, config, lock, spool
from .exporter import local_forwarder

OK, WARN, FAIL = "ok", "warn", "FAIL"
LOG_LINES_SHOWN = 5
CONNECT_TIMEOUT = 3.0
MIN_PYTHON = (3, 9)


class Finding(NamedTuple):
    status: str  # OK | WARN | FAIL
    topic: str
    text: str


def check(env: Mapping[str, str], probe_network: bool = True) -> List[Finding]:
    env = with_plugin_options(env)
    state = config.state_dir(env)
    findings = [
        Finding(OK, "plugin", f"version {__version__} in {config.plugin_root(env)}"),
        _python(),
        _state_dir(state, env),
        _dependencies(env, state),
        *_destination(env, state, probe_network),
        _spool(state),
        _exporter(state),
    ]
    if config.disabled(env):
        findings.insert(1, Finding(WARN, "disabled", f"{config.ENV_DISABLED} is set: the hooks record nothing"))
    return findings


def _python() -> Finding:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return Finding(FAIL, "python", f"{sys.executable} is {version}: the plugin needs Python 3.9 or later")
    return Finding(OK, "python", f"{sys.executable} ({version})")


def _state_dir(state: str, env: Mapping[str, str]) -> Finding:
    problem = _unwritable(state)
    if problem is None:
        return Finding(OK, "state", f"{state} (anonymous id, spool, log, the plugin's Python)")
    fallback = config.fallback_state_dir(env)
    if _unwritable(fallback) is None:
        return Finding(WARN, "state", f"{state} cannot be written ({problem}): the hooks record in {fallback} instead")
    return Finding(
        FAIL,
        "state",
        f"neither {state} ({problem}) nor {fallback} can be written: nothing can be recorded; "
        f"free some disk space, or make one of them writable",
    )


def _unwritable(directory: str) -> Optional[str]:
    """Why a file cannot be written in directory, or None when it can."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        probe = os.path.join(directory, f".doctor-{os.getpid()}")
        with open(probe, "w", encoding="ascii") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as error:
        return str(error.strerror or error)
    return None


def _dependencies(env: Mapping[str, str], state: str) -> Finding:
    explicit = env.get(config.ENV_EXPORTER_PYTHON)
    if explicit:
        try:
            probe = subprocess.run(
                [explicit, "-c", "import opentelemetry.sdk, google.protobuf, requests"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
            works = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            works = False
        if works:
            return Finding(OK, "dependencies", f"{config.ENV_EXPORTER_PYTHON}={explicit} has them")
        return Finding(
            FAIL,
            "dependencies",
            f"{config.ENV_EXPORTER_PYTHON}={explicit} lacks them: unset it to let the plugin install its own, "
            f"or install {bootstrap.requirements_path(config.plugin_root(env))} there",
        )
    venv = bootstrap.venv_dir(state)
    status = bootstrap.status(state)
    if bootstrap.is_ready(state, config.plugin_root(env)):
        built = status.get("built")
        when = f", installed {_when(built)}" if isinstance(built, (int, float)) else ""
        return Finding(OK, "dependencies", f"ready in {venv}{when}")
    if status.get("failures"):
        retry = "now, with the next hook" if bootstrap.retry_due(state, env) else "later, by itself"
        return Finding(
            FAIL,
            "dependencies",
            f"installing them failed {status['failures']} time(s), last {_when(status.get('last_failure'))}: "
            f"{status.get('reason')}. Meanwhile events wait in the spool; it tries again {retry}",
        )
    if os.path.isdir(venv):
        return Finding(WARN, "dependencies", f"{venv} is out of date: the next hook installs the plugin's new ones")
    return Finding(WARN, "dependencies", f"not installed yet: the first hook installs them into {venv}")


def _destination(env: Mapping[str, str], state: str, probe_network: bool) -> List[Finding]:
    endpoint, endpoint_source = config.resolve(config.OTLP_ENDPOINT, env)
    if config.otlp_endpoint(env) is not None:
        findings = [Finding(OK, "destination", f"OTLP to {endpoint} (from {endpoint_source})")]
        if probe_network:
            findings.append(_reachable("collector", str(endpoint)))
        return findings
    url, url_source = config.resolve(config.METRICS_URL, env)
    findings = [
        Finding(
            OK,
            "destination",
            f"the plugin's own forwarder posts to {url}/events and /sessions (metrics URL from {url_source})",
        )
    ]
    if probe_network:
        findings.append(_reachable("metrics endpoint", str(url)))
    findings.extend(_local_forwarder(state, env))
    return findings


def _reachable(what: str, url: str) -> Finding:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Finding(FAIL, what, f"{url} is not an http(s) URL: fix the setting")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as error:
        return Finding(
            WARN,
            what,
            f"{parts.hostname}:{port} cannot be reached now ({error}); events wait and are sent once it can",
        )
    return Finding(OK, what, f"{parts.hostname}:{port} accepts connections")


def _local_forwarder(state: str, env: Mapping[str, str]) -> List[Finding]:
    address = local_forwarder.running(state)
    outbox = os.path.join(local_forwarder.directory(state), local_forwarder.OUTBOX_FILE)
    waiting, refused = _outbox_counts(outbox)
    log_path = os.path.join(local_forwarder.directory(state), local_forwarder.LOG_FILE)
    errors = _error_lines(log_path)
    described = f"{waiting} payload(s) waiting to be posted" if waiting is not None else "no outbox yet"
    if address is not None:
        text = f"running (pid {address['pid']}, {address['url']}), {described}"
    else:
        text = f"not running (it starts when there is something to send), {described}"
    findings = [Finding(OK, "forwarder", text)]
    if errors:
        findings = [Finding(WARN, "forwarder", f"{text}; recent problems in {log_path}:\n" + "\n".join(errors))]
    if refused:
        count, status, answer = refused
        python = bootstrap.venv_python(bootstrap.venv_dir(state))
        replay = (
            f'PYTHONPATH="{config.plugin_root(env)}" "{python}" -m otel_metrics.cli forwarder dead-letters '
            f'--outbox "{outbox}" --replay'
        )
        findings.append(
            Finding(
                FAIL,
                "refused",
                f"the metrics endpoint refused {count} payload(s) for good (last: HTTP {status}: {answer}); "
                f"fix the endpoint or the metrics URL, then send them again: {replay}",
            )
        )
    return findings


def _outbox_counts(path: str) -> Tuple[Optional[int], Optional[Tuple[int, int, str]]]:
    """(payloads waiting, (refused for good, the last refusal's status and answer) or None), from an outbox."""
    if not os.path.exists(path):
        return None, None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            waiting = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            refused = db.execute("SELECT COUNT(*), MAX(id) FROM dead_letters").fetchone()
            if not refused[0]:
                return waiting, None
            last = "SELECT status, response FROM dead_letters WHERE id = ?"
            status, answer = db.execute(last, (refused[1],)).fetchone()
            return waiting, (int(refused[0]), int(status), str(answer)[:200])
        finally:
            db.close()
    except sqlite3.Error:
        return None, None


def _spool(state: str) -> Finding:
    names = spool.pending(state)
    inputs = spool.hook_inputs(state)  # a SessionEnd's wake turns its input into a record at once: one did not
    if not names and not inputs:
        return Finding(OK, "spool", "nothing waiting")
    oldest = spool.written_ns(names[0]) if names else 0
    age = f", the oldest from {_when(oldest / 1e9)}" if oldest else ""
    untaken = f", {len(inputs)} session end(s) no exporter has taken yet" if inputs else ""
    level = WARN if len(names) > 20 or inputs else OK
    return Finding(level, "spool", f"{len(names)} record(s) waiting{age}{untaken}")


def _exporter(state: str) -> Finding:
    log_path = os.path.join(state, config.LOG_FILE)
    try:
        fd = lock.try_acquire(state)
    except OSError:
        fd = None
    running = fd is None
    if fd is not None:
        lock.release(fd)
    text = "running" if running else "not running (a hook starts it when there is something to send)"
    errors = _error_lines(log_path)
    if errors:
        return Finding(WARN, "exporter", f"{text}; recent lines of {log_path}:\n" + "\n".join(errors))
    return Finding(OK, "exporter", text)


def _error_lines(path: str) -> List[str]:
    """The last few lines of a log that say something went wrong."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read()[-65536:].splitlines()
    except OSError:
        return []
    markers = ("ERROR", "WARNING", "hook", "cannot", "failed")
    return ["      " + line for line in lines if any(m in line for m in markers)][-LOG_LINES_SHOWN:]


def _when(moment: object) -> str:
    if not isinstance(moment, (int, float)):
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def with_plugin_options(env: Mapping[str, str]) -> Dict[str, str]:
    """The environment, plus the plugin's userConfig options as hooks would get them.

    A command's shell snippet (how /metrics:doctor runs) gets no CLAUDE_PLUGIN_OPTION_*
    variables, so they are read where Claude Code keeps them: settings.json's
    pluginConfigs, under `<plugin>@<marketplace>` as the cache path names them
    (`.../plugins/cache/<marketplace>/<plugin>/<version>`).
    """
    merged = dict(env)
    if any(name.startswith(config.ENV_OPTION_PREFIX) for name in env):
        return merged
    parts = os.path.normpath(config.plugin_root(env)).split(os.sep)
    if len(parts) < 4 or parts[-4] != "cache":
        return merged
    plugin_id = f"{parts[-2]}@{parts[-3]}"
    claude_dir = env.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
    try:
        with open(os.path.join(claude_dir, "settings.json"), encoding="utf-8") as f:
            options = json.load(f)["pluginConfigs"][plugin_id]["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return merged
    if isinstance(options, dict):
        for key, value in options.items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                merged[config.ENV_OPTION_PREFIX + key.upper()] = str(value)
    return merged


def render(findings: List[Finding]) -> str:
    lines = [f"otel-metrics doctor (plugin {__version__})"]
    lines += [f"{finding.status:<5} {finding.topic}: {finding.text}" for finding in findings]
    failed = sum(finding.status == FAIL for finding in findings)
    lines.append("everything needed works" if not failed else f"{failed} problem(s) keep metrics from being sent")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per finding, for scripts")
    parser.add_argument("--offline", action="store_true", help="do not try to reach the collector or endpoint")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-metrics doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(sys.argv[2:] if argv is None else argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    findings = check(os.environ, probe_network=not args.offline)
    if args.json:
        print(json.dumps([finding._asdict() for finding in findings], indent=2))
    else:
        print(render(findings))
    return 1 if any(finding.status == FAIL for finding in findings) else 0
