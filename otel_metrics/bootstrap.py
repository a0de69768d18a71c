"""The plugin's own Python: a venv in the state directory with the pinned dependencies.

Claude Code copies only the plugin's directory onto the user's machine, and the
user has nothing but some `python3`. The hooks need only the standard library;
the background exporter and the embedded forwarder need the OpenTelemetry SDK,
protobuf and requests. So the detached exporter builds `<state>/venv` from the
plugin's `requirements.txt` the first time (never on a hook's critical path),
rebuilds it when the plugin ships other pins, and retries later when it fails.
Until then the hooks keep spooling.

It works with a python3 that has no `ensurepip` (Debian and Ubuntu without the
python3-venv package): the venv is then made without pip, and pip's own wheel is
fetched from the package index and run from the file. The user's pip settings
(PIP_INDEX_URL, pip.conf, proxies) apply.

Stdlib only: it runs before the dependencies exist.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from . import config

VENV_DIR = "venv"
REQUIREMENTS_FILE = "requirements.txt"
# A copy of the requirements a venv was built from, inside it: the venv is ready
# when it equals the plugin's current file.
BUILT_FROM = "otel-metrics-requirements.txt"
STATUS_FILE = "bootstrap.json"
BUILD_LOG = "bootstrap.log"

DEFAULT_INDEX_URL = "https://pypi.org/simple"
RETRY_SECONDS = 300.0  # the first retry after a failure; it doubles up to RETRY_MAX_SECONDS
RETRY_MAX_SECONDS = 3600.0
VENV_TIMEOUT_SECONDS = 120
INSTALL_TIMEOUT_SECONDS = 900
PIP_OPTIONS = (
    "--disable-pip-version-check",
    "--no-input",
    "--quiet",
    "--no-warn-script-location",
    "--retries",
    "2",
    "--timeout",
    "20",
)


class BootstrapError(Exception):
    """The venv could not be built; the message says why and what fixes it."""


def venv_dir(state: str) -> str:
    return os.path.join(state, VENV_DIR)


def venv_python(venv: str) -> str:
    if os.name == "nt":
        return os.path.join(venv, "Scripts", "python.exe")
    return os.path.join(venv, "bin", "python")


def requirements_path(plugin_root: str) -> str:
    return os.path.join(plugin_root, REQUIREMENTS_FILE)


def is_ready(state: str, plugin_root: str) -> bool:
    """The venv exists, its interpreter is there, and it was built from the current requirements."""
    venv = venv_dir(state)
    return os.path.exists(venv_python(venv)) and _read(os.path.join(venv, BUILT_FROM)) == _read(
        requirements_path(plugin_root)
    )


def runs_in(venv: str) -> bool:
    """Whether this interpreter is the venv's."""
    return os.path.realpath(sys.prefix) == os.path.realpath(venv)


def build(state: str, plugin_root: str, base_python: str = sys.executable) -> None:
    """Build the venv beside the current one, then swap it in; BootstrapError when it cannot be done.

    The swap is two renames: a hook starting in between finds no venv and runs on
    the python3 of its PATH, which is all a hook needs.
    """
    requirements = requirements_path(plugin_root)
    wanted = _read(requirements)
    if wanted is None:
        raise BootstrapError(f"the plugin has no {requirements}: reinstall the plugin")
    building = tempfile.mkdtemp(prefix=VENV_DIR + ".building-", dir=state)
    downloads = tempfile.mkdtemp(prefix="downloads-", dir=state)
    log_path = os.path.join(state, BUILD_LOG)
    try:
        with open(log_path, "w", encoding="utf-8") as build_log:
            os.chmod(log_path, 0o600)
            pip = _create_venv(base_python, building, downloads, build_log)
            _run(
                [*pip, "install", *PIP_OPTIONS, "-r", requirements],
                build_log,
                INSTALL_TIMEOUT_SECONDS,
                lambda output: _install_failure(output, log_path),
            )
        with open(os.path.join(building, BUILT_FROM), "w", encoding="utf-8") as f:
            f.write(wanted)
        _swap_in(building, venv_dir(state))
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


def _create_venv(base_python: str, target: str, downloads: str, build_log: TextIO) -> List[str]:
    """Make the venv; return the command that runs its pip (from a wheel put in `downloads` if need be)."""
    python = venv_python(target)
    venv = [base_python, "-m", "venv", "--clear"]
    try:
        _run([*venv, target], build_log, VENV_TIMEOUT_SECONDS, _venv_failure)
        return [python, "-m", "pip"]
    except BootstrapError as error:
        if "ensurepip" not in str(error):
            raise
    # No ensurepip (Debian/Ubuntu without python3-venv): a venv without pip, and pip's wheel from the index.
    _run([*venv, "--without-pip", target], build_log, VENV_TIMEOUT_SECONDS, _venv_failure)
    wheel = fetch_pip_wheel(downloads, _python_version(python))
    return [python, os.path.join(wheel, "pip")]


def _venv_failure(output: str) -> str:
    if "ensurepip" in output:
        return "this python3 has no ensurepip"
    if "No module named venv" in output:
        return (
            f"this python3 has no venv module: install your system's python3-venv package, "
            f"or set {config.ENV_EXPORTER_PYTHON} to a python with the plugin's requirements.txt installed"
        )
    return f"cannot create a virtual environment: {_last_line(output)}"


_INDEX_PROBLEMS = (
    "Failed to establish a new connection",
    "Connection refused",
    "Could not fetch URL",
    "Name or service not known",
    "Temporary failure in name resolution",
    "ProxyError",
    "SSLError",
    "timed out",
    "No matching distribution found",
    "Could not find a version",
)


def _install_failure(output: str, log_path: str) -> str:
    if any(problem in output for problem in _INDEX_PROBLEMS):
        return (
            f"cannot download the dependencies from the package index ({index_url()}): "
            f"{_last_line(output)}; check the network or proxy, or set PIP_INDEX_URL to a mirror "
            f"(it retries by itself; details in {log_path})"
        )
    return f"installing the dependencies failed: {_last_line(output)} (details in {log_path})"


def _run(argv: List[str], build_log: TextIO, timeout: float, explain: Callable[[str], str]) -> None:
    """Run a step with its output in the build log; BootstrapError(explain(output)) when it fails."""
    build_log.write(f"$ {' '.join(argv)}\n")
    build_log.flush()
    try:
        completed = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
        )
        output = completed.stdout.decode("utf-8", "replace")
        failed = completed.returncode != 0
    except subprocess.TimeoutExpired:
        output, failed = f"gave up after {timeout} s\n", True
    except OSError as error:
        output, failed = f"{error}\n", True
    build_log.write(output)
    build_log.flush()
    if failed:
        raise BootstrapError(explain(output))


def _swap_in(built: str, venv: str) -> None:
    old = None
    if os.path.lexists(venv):
        old = tempfile.mkdtemp(prefix=VENV_DIR + ".old-", dir=os.path.dirname(venv))
        os.rmdir(old)
        os.rename(venv, old)
    os.rename(built, venv)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _python_version(python: str) -> Tuple[int, int]:
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    major, minor = out.stdout.split()
    return int(major), int(minor)


# pip's wheel from the package index (PEP 503 simple HTML, which every index serves).

_WHEEL_LINK = re.compile(r"<a\s[^>]*href=\"([^\"]*/(pip-([0-9][0-9.]*)-py3-none-any\.whl)[^\"]*)\"([^>]*)>", re.I)
_REQUIRES_PYTHON = re.compile(r"data-requires-python=\"([^\"]*)\"", re.I)


def index_url(env: Mapping[str, str] = os.environ) -> str:
    return (env.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL).rstrip("/")


def fetch_pip_wheel(directory: str, python_version: Tuple[int, int]) -> str:
    """Download the newest pip wheel for this Python from the index, checked by its sha256; its path."""
    page_url = index_url() + "/pip/"
    try:
        with urllib.request.urlopen(page_url, timeout=30) as response:
            page = response.read().decode("utf-8", "replace")
    except (OSError, ValueError) as error:
        raise BootstrapError(
            f"cannot download pip from the package index ({page_url}): {error}; check the network or proxy, "
            "or set PIP_INDEX_URL to a mirror (it retries by itself)"
        ) from None
    candidates = []
    for match in _WHEEL_LINK.finditer(page):
        href, filename, version, attributes = match.groups()
        required = _REQUIRES_PYTHON.search(attributes)
        supported = required is None or _supports(html.unescape(required.group(1)), python_version)
        if "data-yanked" in attributes or not supported:
            continue
        candidates.append((tuple(int(part) for part in version.strip(".").split(".")), filename, html.unescape(href)))
    if not candidates:
        raise BootstrapError(f"the package index at {page_url} lists no pip wheel for this Python")
    _, filename, href = max(candidates)
    url = urllib.parse.urljoin(page_url, href)
    digest = url.partition("#sha256=")[2]
    path = os.path.join(directory, filename)
    try:
        with urllib.request.urlopen(url.partition("#")[0], timeout=60) as response:
            data = response.read()
    except (OSError, ValueError) as error:
        raise BootstrapError(f"cannot download {filename} from the package index: {error}") from None
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise BootstrapError(f"{filename} from the package index does not match its sha256: not used")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _supports(specifier: str, version: Tuple[int, int]) -> bool:
    """Enough of PEP 440 for pip's own Requires-Python (clauses like >=3.9, !=3.0.*)."""
    for clause in specifier.split(","):
        clause = clause.strip()
        found = re.fullmatch(r"(>=|>|<=|<|==|!=)\s*([0-9]+)(?:\.([0-9]+|\*))?.*", clause)
        if not found:
            continue
        operator, major, minor = found.groups()
        if minor == "*":
            same = version[0] == int(major)
            if (operator == "==" and not same) or (operator == "!=" and same):
                return False
            continue
        bound = (int(major), int(minor or 0))
        if not {
            ">=": version >= bound,
            ">": version > bound,
            "<=": version <= bound,
            "<": version < bound,
            "==": version == bound,
            "!=": version != bound,
        }[operator]:
            return False
    return True


# Failures: remembered, retried with backoff, said once.


def seconds_until_retry(state: str, env: Mapping[str, str], now: Optional[float] = None) -> float:
    """0 when a bootstrap may be tried now: it never failed, the network settings changed since it
    did (a fixed proxy or index URL), or the backoff since the last failure has passed. Else how
    long until it may."""
    status = _status(state)
    failures = status.get("failures", 0)
    if not isinstance(failures, int) or failures <= 0 or status.get("network") != _fingerprint(env):
        return 0.0
    first = config.number(env, config.ENV_BOOTSTRAP_RETRY_SECONDS, RETRY_SECONDS)
    wait = min(first * 2.0 ** min(failures - 1, 20), max(first, RETRY_MAX_SECONDS))
    last = status.get("last_failure", 0)
    since = (time.time() if now is None else now) - (last if isinstance(last, (int, float)) else 0)
    return max(0.0, wait - since)


def retry_due(state: str, env: Mapping[str, str], now: Optional[float] = None) -> bool:
    return seconds_until_retry(state, env, now) == 0.0


def record_failure(state: str, reason: str, env: Mapping[str, str]) -> bool:
    """Remember a failure; True when its reason differs from the last one (then it is worth a log line)."""
    status = _status(state)
    failures = status.get("failures", 0)
    new_reason = status.get("reason") != reason
    _write_status(
        state,
        {
            "failures": (failures if isinstance(failures, int) else 0) + 1,
            "last_failure": time.time(),
            "reason": reason,
            "network": _fingerprint(env),
        },
    )
    return new_reason


def _fingerprint(env: Mapping[str, str]) -> str:
    settings = sorted(config.network_settings(env).items())
    return hashlib.sha256(json.dumps(settings).encode("utf-8")).hexdigest()


def record_success(state: str) -> bool:
    """Forget past failures; True when there were some (the log then says it recovered)."""
    had_failed = bool(_status(state).get("failures"))
    _write_status(state, {"failures": 0, "built": time.time()})
    return had_failed


def status(state: str) -> Dict[str, Any]:
    """What `doctor` shows: failures, last_failure, reason; or built."""
    return _status(state)


def _status(state: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(state, STATUS_FILE), encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_status(state: str, value: Dict[str, Any]) -> None:
    path = os.path.join(state, STATUS_FILE)
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(temp, path)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
