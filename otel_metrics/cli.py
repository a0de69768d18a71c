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
from typing import Any, Callable, List, Optional, Tuple

from . import __version__, config

OUTBOX_FILE = "forwarder-outbox.sqlite"
ENDPOINT_DB_FILE = "endpoint.sqlite"
DB_HELP = f"sqlite:///PATH, a bare path, or postgresql://USER@HOST/DB (<state dir>/{ENDPOINT_DB_FILE})"


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
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_forwarder)


def run_forwarder(args: argparse.Namespace) -> int:
    from .forwarder import Forwarder

    _configure_logging(args.verbose)
    metrics_url = (args.metrics_url or config.metrics_url()).rstrip("/")
    outbox = args.outbox or os.path.join(server_state_dir(), OUTBOX_FILE)
    tuning = ("max_body_bytes", "max_outbox_items", "retry_initial", "retry_max")
    options = {name: getattr(args, name) for name in tuning if getattr(args, name) is not None}
    host, port = args.listen
    forwarder = Forwarder(host, port, metrics_url, outbox, **options)
    logging.getLogger("otel_metrics.forwarder").info(
        "forwarding to %s/{events,sessions}; outbox %s (%d waiting)", metrics_url, outbox, len(forwarder.outbox)
    )
    return _serve_until_signalled(forwarder.start, forwarder.stop, forwarder.address)


# endpoint


def add_endpoint(commands: Any) -> None:
    parser = commands.add_parser("endpoint", help="the reference /events and /sessions endpoint (SQLite or PostgreSQL)")
    parser.add_argument(
        "--listen", type=listen_address, default=config.DEFAULT_ENDPOINT_LISTEN, help="HOST:PORT (%(default)s)"
    )
    parser.add_argument("--db", default=None, help=DB_HELP)
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_endpoint)


def run_endpoint(args: argparse.Namespace) -> int:
    from .endpoint import Endpoint
    from .store import StoreError

    _configure_logging(args.verbose)
    host, port = args.listen
    try:
        endpoint = Endpoint(host, port, endpoint_db(args.db))
    except (StoreError, ValueError) as error:
        print(f"otel-metrics endpoint: {error}", file=sys.stderr)
        return 2
    return _serve_until_signalled(endpoint.start, endpoint.stop, endpoint.address)


def endpoint_db(url: Optional[str]) -> str:
    return url or os.path.join(server_state_dir(), ENDPOINT_DB_FILE)


# report


def add_report(commands: Any) -> None:
    parser = commands.add_parser("report", help="what the endpoint stored: usage, users, sessions (no stack needed)")
    parser.add_argument("--db", default=None, help=DB_HELP)
    parser.add_argument("--since", type=report_since, help="first day (YYYY-MM-DD, UTC) or instant (...THH:MM:SSZ)")
    parser.add_argument("--until", type=report_until, help="last day, included (YYYY-MM-DD), or instant, excluded")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="stdout (%(default)s)")
    parser.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page with charts")
    parser.add_argument("--top", type=int, default=20, help="commands and skills listed (%(default)s)")
    parser.set_defaults(run=run_report)


def report_since(text: str) -> str:
    return _report_bound(text, end=False)


def report_until(text: str) -> str:
    return _report_bound(text, end=True)


def _report_bound(text: str, end: bool) -> str:
    from .report import parse_bound

    try:
        return parse_bound(text, end)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_report(args: argparse.Namespace) -> int:
    from .report import Progress, build_report
    from .report.html import write_html
    from .report.render import render
    from .store import StoreError, open_store

    try:
        store = open_store(endpoint_db(args.db))
    except (StoreError, ValueError) as error:
        print(f"otel-metrics report: {error}", file=sys.stderr)
        return 2
    try:
        report = build_report(store, args.since, args.until, args.top, Progress(sys.stderr))
    except StoreError as error:
        print(f"otel-metrics report: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()
    sys.stdout.write(render(report, args.format))
    if args.html:
        write_html(report, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


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


# Servers: run until SIGTERM or SIGINT.


def _serve_until_signalled(start: Callable[[], None], stop: Callable[[], None], address: Tuple[str, int]) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    start()
    host, port = address
    shown_host = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown_host}:{port}", file=sys.stderr, flush=True)  # tests wait for this line
    while not stopping.wait(0.2):  # a timed wait: signals interrupt it on every platform
        pass
    stop()
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose or config.verbose() else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


SUBCOMMANDS: List[Callable[[Any], None]] = [add_forwarder, add_endpoint, add_report, add_session_summary]


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
