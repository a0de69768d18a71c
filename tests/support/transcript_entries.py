"""Claude Code transcript entries for tests, built from the fields Claude Code writes that the rules read.

Every entry gets a fresh uuid and, unless told otherwise, the sessionId SESSION,
`parentUuid` null and the timestamp T0; `stamp(s)` is T0 + s as Claude Code writes it.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

SESSION = "7d1c2b9e-0000-4000-8000-000000000001"
T0 = "2026-02-12T16:00:00.000Z"
T0_NS = 1_770_912_000 * 1_000_000_000
Line = Union[dict, str, bytes]  # an entry, or a raw line as written
_serial = itertools.count(1)


# Entries


def entry(kind: str, sidechain: bool = False, timestamp: Optional[str] = T0, **fields: object) -> dict:
    made: Dict[str, object] = {"parentUuid": None, "isSidechain": sidechain, "sessionId": SESSION, "type": kind}
    made.update(fields)
    made["uuid"] = f"uuid-{next(_serial)}"
    if timestamp is not None:
        made["timestamp"] = timestamp
    return made


def prompt(content: object, **fields: object) -> dict:
    return entry("user", message={"role": "user", "content": content}, **fields)


def tool_results(*blocks: dict, **fields: object) -> dict:
    return entry("user", message={"role": "user", "content": list(blocks)}, **fields)


def result_block(tool_use_id: Optional[str], is_error: object = False, content: object = "output") -> dict:
    block: Dict[str, object] = {"type": "tool_result", "content": content, "is_error": is_error}
    if tool_use_id is not None:
        block["tool_use_id"] = tool_use_id
    return block


def answer(
    message_id: Optional[str],
    *blocks: dict,
    usage: Optional[dict] = None,
    request_id: Optional[str] = "req_1",
    model: str = "claude-opus-4-6",
    **fields: object,
) -> dict:
    """One line of an assistant message (Claude Code writes one per content block)."""
    message: Dict[str, object] = {"model": model, "type": "message", "role": "assistant"}
    if message_id is not None:
        message["id"] = message_id
    message["content"] = list(blocks) or [{"type": "text", "text": "ok"}]
    if usage is not None:
        message["usage"] = usage
    if request_id is not None:
        fields["requestId"] = request_id
    return entry("assistant", message=message, **fields)


def tool_use(block_id: Optional[str], name: str = "Bash") -> dict:
    block: Dict[str, object] = {"type": "tool_use", "name": name, "input": {}}
    if block_id is not None:
        block["id"] = block_id
    return block


def usage(input_tokens: object = 0, output: object = 0, creation: object = 0, read: object = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
    }


def write(path: Path, lines: Iterable[Line]) -> Path:
    return _put(path, lines, "wb")


def append(path: Path, lines: Iterable[Line]) -> Path:
    """Add lines to a transcript, as a resumed run does."""
    return _put(path, lines, "ab")


def _put(path: Path, lines: Iterable[Line], mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as out:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            out.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def session(tmp_path: Path, main: Sequence[Line], **subagents: Sequence[Line]) -> Path:
    """<tmp>/s.jsonl and <tmp>/s/subagents/<name>.jsonl for each keyword."""
    transcript = write(tmp_path / "s.jsonl", main)
    for name, lines in subagents.items():
        write(tmp_path / "s" / "subagents" / f"{name}.jsonl", lines)
    return transcript


def stamp(seconds: float) -> str:
    """T0 + seconds, as Claude Code writes it."""
    moment = datetime(2026, 2, 12, 16, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
