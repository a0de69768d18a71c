"""Start the background exporter fully detached from the hook.

New session, stdin/stdout/stderr on the null device, no inherited descriptors
but the exporter lock, so Claude Code (which waits for the hook's pipes to
close and kills hooks when it exits) neither waits for it nor kills it.
"""

import os
import sys

from .. import config, lock

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple, Union

    FileAction = Union[Tuple[int, int, str, int, int], Tuple[int, int]]

# The directory that holds the otel_metrics package, for the child's sys.path.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORTER_MODULE = "otel_metrics.exporter"


def start_exporter(state_dir: str, lock_fd: "Optional[int]") -> None:
    """Start `python -m otel_metrics.exporter`; it inherits lock_fd (POSIX)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[config.ENV_STATE_DIR] = state_dir
    # The hook may run on a bare system python3; the exporter needs the OTel SDK.
    python = env.get(config.ENV_EXPORTER_PYTHON) or sys.executable
    argv = [python, "-m", EXPORTER_MODULE]
    if sys.platform == "win32":
        _start_windows(argv, env)
    elif lock_fd is not None:
        _start_posix(argv, env, lock_fd)


def _start_posix(argv: "List[str]", env: "Dict[str, str]", lock_fd: int) -> None:
    os.set_inheritable(lock_fd, True)
    env[lock.ENV_LOCK_FD] = str(lock_fd)
    actions: List[FileAction] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds() if fd > 2 and fd != lock_fd)
    try:
        os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    except NotImplementedError:  # no POSIX_SPAWN_SETSID (older macOS): a new process group
        os.posix_spawn(argv[0], argv, env, file_actions=actions, setpgroup=0)


def _inheritable_fds() -> "List[int]":
    """Descriptors a child would inherit (Claude Code's, not ours: ours are CLOEXEC)."""
    try:
        candidates = [int(n) for n in os.listdir("/dev/fd")]
    except (OSError, ValueError):
        candidates = list(range(3, 64))
    fds = []
    for fd in candidates:
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass  # not open (e.g. the listing's own descriptor, closed by now)
    return fds


if sys.platform == "win32":

    def _start_windows(argv: "Sequence[str]", env: "Dict[str, str]") -> None:
        import subprocess

        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            creationflags=flags,
        )
