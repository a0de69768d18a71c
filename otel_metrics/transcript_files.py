"""Where Claude Code keeps a session's transcripts, and their sizes.

The main transcript T is the hook's `transcript_path`; Claude Code 2.x writes each
subagent's transcript to `<T without .jsonl>/subagents/agent-<id>.jsonl`.

Standard library `os` only: the SessionEnd hook records the sizes on its fast path.
"""

import os

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union

    Path = Union[str, "os.PathLike[str]"]

MAIN_SUFFIX = ".jsonl"
SUBAGENT_FOLDER = "subagents"


def subagent_folder(main: "Path") -> "Optional[str]":
    """`<main without .jsonl>/subagents`, or None when the main transcript is not named *.jsonl."""
    main = os.fspath(main)
    if not main.endswith(MAIN_SUFFIX):
        return None
    return os.path.join(main[: -len(MAIN_SUFFIX)], SUBAGENT_FOLDER)


def subagent_names(main: "Path") -> "List[str]":
    """File names of the subagent transcripts (`*.jsonl` files of the folder), sorted."""
    folder = subagent_folder(main)
    if folder is None:
        return []
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.endswith(MAIN_SUFFIX) and e.is_file())
    except OSError:
        return []


def sizes(main: "Path") -> "Tuple[Optional[int], Dict[str, int]]":
    """(bytes of the main transcript or None when it cannot be read, {subagent file name: bytes})."""
    try:
        main_bytes = os.stat(main).st_size
    except (OSError, ValueError):
        return None, {}
    folder = subagent_folder(main)
    subagents: Dict[str, int] = {}
    if folder is None:
        return main_bytes, subagents
    for name in subagent_names(main):
        try:
            subagents[name] = os.stat(os.path.join(folder, name)).st_size
        except OSError:
            pass  # removed since the listing
    return main_bytes, subagents
