"""This repository published as a plugin marketplace, the way a maintainer's users meet it.

`Marketplace` commits the working tree's files (what git tracks or would track:
uncommitted changes included, ignored build output not) into a bare repository
and serves it over git's smart HTTP protocol on loopback, with `git http-backend`
behind a small CGI bridge, as GitHub serves a marketplace repository.
`claude plugin marketplace add <url>` then clones it for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import urlsplit

from support.claude_cli import TEST_PLUGIN_DIR
from support.paths import REPO

MARKETPLACE_NAME = "otel-metrics"  # .claude-plugin/marketplace.json
PLUGIN_ID = f"metrics@{MARKETPLACE_NAME}"
GIT_IDENTITY = ["-c", "user.name=maintainer", "-c", "user.email=maintainer@example.invalid"]


def _git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def working_tree_files() -> List[str]:
    """Paths git tracks or would track, as they are now (deleted ones left out)."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).split("\0")
    return sorted({path for path in listed if path and os.path.lexists(REPO / path)})


class Marketplace:
    """The repository at <url>; `publish()` commits a new state of it (e.g. a new plugin version)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.bare = root / "served" / "market.git"
        self.bare.parent.mkdir(parents=True)
        _git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=self.root)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.bare.parent))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/market.git"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def publish(self, version: Optional[str] = None) -> str:
        """Commit the working tree (plus the test plugin, listed beside ours) and serve it; the commit id.

        With `version`, the metrics plugin is released as that version (plugin.json and the package).
        """
        history = self.root / "history.git"  # each release is a commit on top of the last, as a maintainer's
        if self.work.exists():
            os.rename(self.work / ".git", history)
            shutil.rmtree(self.work)
        self.work.mkdir()
        if history.exists():
            os.rename(history, self.work / ".git")
        for path in working_tree_files():
            source, target = REPO / path, self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            else:
                shutil.copy2(source, target)
        self._add_test_plugin()
        if version is not None:
            self._set_version(version)
        if not (self.work / ".git").exists():
            _git("init", "-q", "-b", "main", cwd=self.work)
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "-m", f"release {version or 'as is'}", cwd=self.work)
        _git("push", "-q", str(self.bare), "main", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work).strip()

    def _add_test_plugin(self) -> None:
        """The marketplace also lists the test plugin (a command and a skill), as a real one lists others."""
        target = self.work / "plugins" / "testkit"
        shutil.copytree(TEST_PLUGIN_DIR, target)
        manifest_path = self.work / ".claude-plugin" / "marketplace.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["plugins"].append({"name": "testkit", "source": "./plugins/testkit"})
        manifest_path.write_text(json.dumps(manifest, indent=2))

    def _set_version(self, version: str) -> None:
        manifest_path = self.work / "plugin" / ".claude-plugin" / "plugin.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["version"] = version
        manifest_path.write_text(json.dumps(manifest, indent=2))
        package = self.work / "otel_metrics" / "__init__.py"
        text = package.read_text()
        package.write_text(text.replace(f'__version__ = "{_package_version(text)}"', f'__version__ = "{version}"'))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _package_version(init_text: str) -> str:
    for line in init_text.splitlines():
        if line.startswith("__version__ = "):
            return line.split('"')[1]
    raise AssertionError("otel_metrics/__init__.py has no __version__")


def _handler(project_root: Path) -> type:
    class GitSmartHttp(BaseHTTPRequestHandler):
        """CGI bridge to `git http-backend` (git's own smart HTTP server side)."""

        def _backend(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env: Dict[str, str] = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(project_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": parts.path,
                "QUERY_STRING": parts.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120)
            head, _, payload = out.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _backend

        def log_message(self, format: str, *args: object) -> None:
            pass

    return GitSmartHttp
