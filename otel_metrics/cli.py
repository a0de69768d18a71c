"""`otel-metrics`: the command line. One add_* function per subcommand, listed in SUBCOMMANDS.

Heavy modules (the forwarder, the endpoint, the transcript reader) are imported
by the subcommand that runs them, so every command starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__, config

OUTBOX_FILE = "forwarder-outbox.sqlite"
ENDPOINT_DB_FILE = "endpoint.sqlite"


def listen_address(text: str) -> Tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT; port 0 lets the OS choose."""
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


def server_state_dir() -> str:
    """Where the servers keep their SQLite files unless told: $CLAUDE_METRICS_DIR, else the user's state dir.

    (Not the hooks' fallback, the plugin root: a server has no plugin root.)
    """
    explicit = os.environ.get(config.ENV_STATE_DIR)
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "otel-metrics")


# forwarder


def add_forwarder(commands: Any) -> None:
    parser = commands.add_parser("forwarder", help="receive OTLP/HTTP and post legacy payloads to the metrics URL")
    parser.add_argument(
        "--listen", type=listen_address, default=config.DEFAULT_FORWARDER_LISTEN, help="HOST:PORT (%(default)s)"
    )
    parser.add_argument(
        "--metrics-url",
        default=None,
        help=f"base URL of /events and /sessions (${config.ENV_METRICS_URL}, else the production URL)",
    )
    parser.add_argument("--outbox", default=None, help=f"SQLite outbox file (<state dir>/{OUTBOX_FILE})")
    # Unset tuning options keep the forwarder's own defaults (not imported here: it is slow to import).
    parser.add_argument("--max-body-bytes", type=int, help="answer 413 above this request size (20 MiB)")
    parser.add_argument("--max-outbox-items", type=int, help="answer 503 while this many wait (1000000)")
    parser.add_argument("--retry-initial", type=float, help="first delivery retry delay, seconds (0.5)")
    parser.add_argument("--retry-max", type=float, help="longest delivery retry delay, seconds (60)")
    parser.add_argument(
        "--address-file", help="once listening, write {url, pid, metrics_url} here as JSON; removed on exit"
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="leave once no request came for this long and the outbox is empty",
    )
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_forwarder)


def run_forwarder(args: argparse.Namespace) -> int:
    from .forwarder import Forwarder, OutboxLocked

    _configure_logging(args.verbose)
    metrics_url = (args.metrics_url or config.metrics_url()).rstrip("/")
    outbox = args.outbox or os.path.join(server_state_dir(), OUTBOX_FILE)
    tuning = ("max_body_bytes", "max_outbox_items", "retry_initial", "retry_max")
    options = {name: getattr(args, name) for name in tuning if getattr(args, name) is not None}
    host, port = args.listen
    try:
        forwarder = Forwarder(host, port, metrics_url, outbox, **options)
    except OutboxLocked as error:
        print(f"otel-metrics forwarder: {error}; not starting a second one", file=sys.stderr)
        return config.FORWARDER_EXIT_OUTBOX_LOCKED
    logging.getLogger("otel_metrics.forwarder").info(
        "forwarding to %s/{events,sessions}; outbox %s (%d waiting)", metrics_url, outbox, len(forwarder.outbox)
    )

    def idle() -> bool:
        return bool(args.idle_exit) and forwarder.is_idle(args.idle_exit)

    address = {"url": _url(forwarder.address), "pid": os.getpid(), "metrics_url": metrics_url}
    return _serve_until_signalled(forwarder.start, forwarder.stop, forwarder.address, args.address_file, address, idle)


# endpoint


def add_endpoint(commands: Any) -> None:
    parser = commands.add_parser("endpoint", help="the reference /events and /sessions endpoint (SQLite)")
    parser.add_argument(
        "--listen", type=listen_address, default=config.DEFAULT_ENDPOINT_LISTEN, help="HOST:PORT (%(default)s)"
    )
    parser.add_argument("--db", default=None, help=f"SQLite file (<state dir>/{ENDPOINT_DB_FILE})")
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_endpoint)


def run_endpoint(args: argparse.Namespace) -> int:
    from .endpoint import Endpoint

    _configure_logging(args.verbose)
    db = args.db or os.path.join(server_state_dir(), ENDPOINT_DB_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    host, port = args.listen
    endpoint = Endpoint(host, port, db)
    return _serve_until_signalled(endpoint.start, endpoint.stop, endpoint.address)


# session-summary


def add_session_summary(commands: Any) -> None:
    parser = commands.add_parser("session-summary", help="print the session payload a transcript would send")
    parser.add_argument("transcript", help="a Claude Code session transcript (.jsonl)")
    parser.add_argument("--reason", default="other", help="the SessionEnd reason (%(default)s)")
    parser.set_defaults(run=run_session_summary)


def run_session_summary(args: argparse.Namespace) -> int:
    from .identity import read_anonymous_id
    from .payloads import session_payload
    from .session_report import session_from_transcript

    session = session_from_transcript(
        None,
        args.transcript,
        args.reason,
        time.time_ns(),  # a transcript without timestamps ends "now", as at the hook
        read_anonymous_id(config.state_dir()),
        __version__,
        config.os_name(),
    )
    print(json.dumps(session_payload(session), sort_keys=True, indent=2))
    return 0


# doctor


def add_doctor(commands: Any) -> None:
    from . import doctor

    parser = commands.add_parser("doctor", help="check that usage metrics can be delivered from here, and say the fix")
    doctor.add_arguments(parser)
    parser.set_defaults(run=doctor.run)


# Servers: run until SIGTERM or SIGINT.


def _serve_until_signalled(
    start: Callable[[], None],
    stop: Callable[[], None],
    address: Tuple[str, int],
    address_file: Optional[str] = None,
    published: Optional[Dict[str, Any]] = None,
    done: Optional[Callable[[], bool]] = None,
) -> int:
    """Serve until SIGTERM or SIGINT (or until `done()`); publish `published` in address_file meanwhile."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    start()
    if address_file:
        _write_private_json(address_file, published or {"url": _url(address), "pid": os.getpid()})
    print(f"listening on {_url(address)}", file=sys.stderr, flush=True)  # tests wait for this line
    try:
        while not stopping.wait(0.2):  # a timed wait: signals interrupt it on every platform
            if done is not None and done():
                break
    finally:
        if address_file:
            try:
                os.unlink(address_file)
            except OSError:
                pass
    stop()
    return 0


def _url(address: Tuple[str, int]) -> str:
    host, port = address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _write_private_json(path: str, document: Dict[str, Any]) -> None:
    """Write whole, then rename: a reader never sees half of it."""
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f)
    os.replace(temp, path)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose or config.verbose() else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


SUBCOMMANDS: List[Callable[[Any], None]] = [add_forwarder, add_endpoint, add_session_summary, add_doctor]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-metrics", description="Anonymous usage metrics for Claude Code plugins, on OpenTelemetry."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
