"""A throwaway PostgreSQL server (Debian's package) on loopback, for the endpoint's and the report's store."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from support.processes import START_SECONDS, free_port, stop_process, wait_for


def postgres_bindir() -> Optional[Path]:
    """Where Debian's PostgreSQL server programs are (newest major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port, trust authentication, no unix socket.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (Debian's package
    creates it), in a directory under the temp dir that user can reach (pytest's are private).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.root = Path(tempfile.mkdtemp(prefix="otel-metrics-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._as_user: Dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            self.root.chmod(0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self._databases = 0

    def start(self) -> PostgresServer:
        """initdb, then start_server()."""
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._as_user,
        )
        return self.start_server()

    def start_server(self) -> PostgresServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **self._as_user,
            )
        try:
            wait_for(self._accepting, START_SECONDS, 0.1)
        except AssertionError:
            self.stop()
            raise AssertionError(f"PostgreSQL did not start:\n{self.log()}") from None
        return self

    def stop_server(self) -> None:
        """The server process only; start_server() brings it back on the same port and data."""
        stop_process(self.proc, signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
        self.proc = None

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"PostgreSQL exited with {self.proc.returncode}:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
        )
        return ready.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)
