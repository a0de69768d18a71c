"""The address file of a running server: {"url": "http://127.0.0.1:PORT", "pid": N, ...details}.

Written once the server listens (a temporary file renamed into place, mode 0600,
so a reader never sees half of it) and removed when it leaves cleanly; whoever
started the server reads it to find the port the OS chose. Stdlib only.
"""

import json
import os
import tempfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


def write(path: str, url: str, pid: int, details: "Optional[Dict[str, Any]]" = None) -> None:
    """details: what else a reader may check, e.g. where a forwarder forwards to."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".address-", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**(details or {}), "url": url, "pid": pid}, f)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def read(path: str) -> "Optional[Dict[str, Any]]":
    """The address a server wrote, or None when there is none (or it is not one)."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError):
        return None
    if not (
        isinstance(document, dict) and isinstance(document.get("url"), str) and isinstance(document.get("pid"), int)
    ):
        return None
    return document


def remove(path: str, pid: int) -> None:
    """Remove the file if it is still this process's (a successor may have written its own)."""
    document = read(path)
    if document is not None and document["pid"] == pid:
        try:
            os.unlink(path)
        except OSError:
            pass
