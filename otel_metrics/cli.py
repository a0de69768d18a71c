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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import __version__, config

if TYPE_CHECKING:
    from .http_server import ConnectionBounds

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

# Exit statuses of `otel-metrics forwarder` (0: stopped by SIGTERM/SIGINT or --idle-exit; 2: bad usage).
EXIT_OUTBOX_IN_USE = config.FORWARDER_EXIT_OUTBOX_IN_USE  # another forwarder holds the outbox
EXIT_CANNOT_LISTEN = 4  # the address is taken or not ours


def add_forwarder(commands: Any) -> None:
    parser = commands.add_parser(
        "forwarder",
        help="receive OTLP/HTTP and post legacy payloads to the metrics URL",
        description="Receive OTLP/HTTP and post legacy payloads to <metrics-url>/events and /sessions. "
        f"Exit status: 0 when stopped (SIGTERM, SIGINT, --idle-exit), 2 for bad usage, "
        f"{EXIT_OUTBOX_IN_USE} when another forwarder uses the outbox, {EXIT_CANNOT_LISTEN} when the address "
        "cannot be listened on.",
    )
    parser.add_argument(
        "--listen", type=listen_address, default=config.DEFAULT_FORWARDER_LISTEN, help="HOST:PORT (%(default)s)"
    )
    parser.add_argument(
        "--metrics-url",
        default=None,
        help=f"base URL of /events and /sessions (${config.ENV_METRICS_URL}, else the production URL)",
    )
    parser.add_argument("--outbox", default=None, help=f"SQLite outbox file (<state dir>/{OUTBOX_FILE})")
    parser.add_argument(
        "--address-file",
        default=None,
        help='once listening, write {"url": ..., "pid": ...} here (0600); removed on a clean exit',
    )
    parser.add_argument(
        "--idle-exit",
        type=positive_number,
        default=None,
        metavar="SECONDS",
        help="leave once no OTLP request came for this long and the outbox is empty",
    )
    # Unset tuning options keep the forwarder's own defaults (not imported here: it is slow to import).
    parser.add_argument("--max-body-bytes", type=int, help="answer 413 above this request size (20 MiB)")
    parser.add_argument("--max-outbox-items", type=int, help="answer 503 while this many wait (1000000)")
    parser.add_argument("--workers", type=positive_int, help="POSTs in flight to the endpoint at most (10)")
    parser.add_argument(
        "--timeout", type=positive_number, help="seconds for the answer to a POST to start, and between its bytes (10)"
    )
    parser.add_argument("--retry-initial", type=positive_number, help="first delivery retry delay, seconds (0.5)")
    parser.add_argument("--retry-max", type=positive_number, help="longest delivery retry delay, seconds (60)")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=10.0, help="seconds the POSTs in flight get at SIGTERM (%(default)s)"
    )
    add_connection_limits(parser)
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="uvloop (less CPU per request) or asyncio's own; auto: uvloop where installed (%(default)s)",
    )
    parser.add_argument("--prometheus", action="store_true", help="serve the forwarder's own metrics at GET /metrics")
    parser.add_argument(
        "--telemetry-otlp", metavar="URL", help="export the forwarder's own metrics by OTLP/HTTP to URL"
    )
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_forwarder)

    commands_of_forwarder = parser.add_subparsers(dest="forwarder_command", metavar="{dead-letters}")
    dead = commands_of_forwarder.add_parser(
        "dead-letters", help="list the payloads the endpoint refused for good; --replay resends them"
    )
    # SUPPRESS: an option given before `dead-letters` is not reset by this parser's default.
    dead.add_argument("--outbox", default=argparse.SUPPRESS, help=f"SQLite outbox file (<state dir>/{OUTBOX_FILE})")
    dead.add_argument("--metrics-url", default=argparse.SUPPRESS, help="where --replay posts (as the forwarder)")
    dead.add_argument("--replay", action="store_true", help="post them again; those accepted leave the list")
    dead.add_argument("--json", action="store_true", help="one JSON object per line, payload included")
    dead.set_defaults(run=run_dead_letters)


def add_connection_limits(parser: argparse.ArgumentParser) -> None:
    """The HTTP server's bounds (otel_metrics/http_server.py), for the forwarder and the endpoint alike."""
    parser.add_argument(
        "--max-connections", type=positive_int, help="open connections at most; more close the idlest (512)"
    )
    parser.add_argument(
        "--request-timeout",
        dest="request_seconds",
        type=positive_number,
        help="seconds a request may take to arrive, from its first byte to its last (30)",
    )


def server_options(args: argparse.Namespace, names: Tuple[str, ...]) -> Dict[str, Any]:
    """The tuning options given on the command line (unset ones keep the server's own defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def connection_bounds(args: argparse.Namespace) -> ConnectionBounds:
    """The HTTP server's bounds from add_connection_limits' options."""
    from .http_server import ConnectionBounds

    return ConnectionBounds(**server_options(args, ConnectionBounds._fields))


def private_files() -> None:
    """What a server writes (databases and their journals, lock and address files, their
    directories) is readable by its owner only, whatever umask it was started with."""
    os.umask(0o077)


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _outbox_path(args: argparse.Namespace) -> str:
    return args.outbox or os.path.join(server_state_dir(), OUTBOX_FILE)


def _metrics_url(args: argparse.Namespace) -> str:
    return (args.metrics_url or config.metrics_url()).rstrip("/")


def run_forwarder(args: argparse.Namespace) -> int:
    from . import address_file
    from .event_loop import EventLoopUnavailable
    from .event_loop import name as loop_name
    from .forwarder import Forwarder
    from .forwarder.outbox import OutboxInUse
    from .forwarder.telemetry import PrometheusUnavailable, enabled

    _configure_logging(args.verbose)
    private_files()
    log = logging.getLogger("otel_metrics.forwarder")
    metrics_url = _metrics_url(args)
    outbox = _outbox_path(args)
    tuning = ("max_body_bytes", "max_outbox_items", "workers", "timeout", "retry_initial", "retry_max")
    options = server_options(args, tuning)
    host, port = args.listen
    try:
        if args.prometheus or args.telemetry_otlp:
            options["telemetry"] = enabled(args.prometheus, args.telemetry_otlp)
        forwarder = Forwarder(
            host,
            port,
            metrics_url,
            outbox,
            prometheus=args.prometheus,
            bounds=connection_bounds(args),
            event_loop=args.event_loop,
            **options,
        )
    except (PrometheusUnavailable, EventLoopUnavailable) as error:
        print(f"otel-metrics forwarder: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a metrics URL or retry bounds that cannot work
        print(f"otel-metrics forwarder: {error}", file=sys.stderr)
        return 2
    except OutboxInUse as error:
        print(f"otel-metrics forwarder: {error}", file=sys.stderr)
        return EXIT_OUTBOX_IN_USE
    except OSError as error:
        print(f"otel-metrics forwarder: cannot listen on {host}:{port}: {error.strerror or error}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    log.info(
        "forwarding to %s/{events,sessions}; outbox %s (%d waiting); event loop %s",
        metrics_url,
        outbox,
        len(forwarder.outbox),
        loop_name(forwarder.server.loop),
    )
    stopping = _stop_on_signals()
    forwarder.start()
    url = _announce(forwarder.address, args.address_file, {"metrics_url": metrics_url})
    try:
        while not stopping.wait(0.2):  # a timed wait: signals interrupt it on every platform
            if args.idle_exit is not None and forwarder.idle_seconds() >= args.idle_exit:
                log.info("no OTLP request for %.0f s and nothing to deliver: leaving", args.idle_exit)
                break
        forwarder.stop(args.shutdown_timeout)
    finally:
        if args.address_file:
            address_file.remove(args.address_file, os.getpid())
    log.debug("forwarder at %s stopped", url)
    return 0


def run_dead_letters(args: argparse.Namespace) -> int:
    from .forwarder import dead_letters
    from .forwarder.outbox import DeadLetters

    private_files()  # the outbox's journal files, made anew when no forwarder runs
    outbox = _outbox_path(args)
    if not os.path.exists(outbox):
        print(f"0 dead letters: no outbox at {outbox}")
        return 0
    store = DeadLetters(outbox)
    try:
        if args.replay:
            return 0 if dead_letters.replay(store, _metrics_url(args), sys.stdout) else 1
        if args.json:
            dead_letters.show_json(store.list(), sys.stdout)
        else:
            dead_letters.show(store.list(), outbox, sys.stdout)
        return 0
    finally:
        store.close()


# endpoint


def add_endpoint(commands: Any) -> None:
    parser = commands.add_parser("endpoint", help="the reference /events and /sessions endpoint (SQLite or PostgreSQL)")
    parser.add_argument(
        "--listen", type=listen_address, default=config.DEFAULT_ENDPOINT_LISTEN, help="HOST:PORT (%(default)s)"
    )
    parser.add_argument("--db", default=None, help=DB_HELP)
    add_connection_limits(parser)
    parser.add_argument("--verbose", action="store_true", help=f"debug logging (also ${config.ENV_VERBOSE})")
    parser.set_defaults(run=run_endpoint)


def run_endpoint(args: argparse.Namespace) -> int:
    from .endpoint import Endpoint
    from .store import StoreError

    _configure_logging(args.verbose)
    private_files()
    host, port = args.listen
    try:
        endpoint = Endpoint(host, port, endpoint_db(args.db), connection_bounds(args))
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
        reason=args.reason,
        hook_time_ns=time.time_ns(),  # a transcript without timestamps ends "now", as at the hook
        user_id=read_anonymous_id(config.state_dir()),
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


def _serve_until_signalled(start: Callable[[], None], stop: Callable[[], None], address: Tuple[str, int]) -> int:
    stopping = _stop_on_signals()
    start()
    _announce(address)
    while not stopping.wait(0.2):  # a timed wait: signals interrupt it on every platform
        pass
    stop()
    return 0


def _stop_on_signals() -> threading.Event:
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return stopping


def _announce(
    address: Tuple[str, int], address_path: Optional[str] = None, details: Optional[Dict[str, Any]] = None
) -> str:
    """Say where the server listens: the address file if asked for, then stderr (tests wait for this line)."""
    from . import address_file

    host, port = address
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    if address_path:
        address_file.write(address_path, url, os.getpid(), details)
    print(f"listening on {url}", file=sys.stderr, flush=True)
    return url


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose or config.verbose() else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


SUBCOMMANDS: List[Callable[[Any], None]] = [
    add_forwarder,
    add_endpoint,
    add_report,
    add_session_summary,
    add_doctor,
]


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
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
