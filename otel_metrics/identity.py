"""The anonymous user id: a random UUID kept in the state directory.

Created atomically (write a temp file, then hard-link it into place, which
fails if another process won), so concurrent first hooks end with one id.
Deleting the file makes a new one.
"""

from __future__ import annotations

import os
import uuid
from typing import Optional

from .config import ANONYMOUS_ID_FILE


def read_anonymous_id(state_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(state_dir, ANONYMOUS_ID_FILE), encoding="ascii") as f:
            value = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def anonymous_id(state_dir: str) -> Optional[str]:
    """The stored id, created on first use; None when it cannot be stored."""
    existing = read_anonymous_id(state_dir)
    if existing is not None:
        return existing
    path = os.path.join(state_dir, ANONYMOUS_ID_FILE)
    temp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        os.makedirs(state_dir, exist_ok=True)
        with open(temp, "w", encoding="ascii") as f:
            f.write(str(uuid.uuid4()) + "\n")
        try:
            os.link(temp, path)
        except OSError:
            # FileExistsError: another process won the race, use its id; unless the file
            # holds no id (corrupt), or hard links are not supported here: then rename.
            if read_anonymous_id(state_dir) is None:
                os.replace(temp, path)
    except OSError:
        return None
    finally:
        try:
            os.unlink(temp)
        except OSError:
            pass
    return read_anonymous_id(state_dir)
