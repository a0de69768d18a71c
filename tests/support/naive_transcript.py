"""The naive reader of a session's transcripts: the reference `summarize()` is held to.

What anyone would write first: one pass, `json.loads` on every line, the aggregation
rules (README "Session aggregates") applied to the decoded dicts. The tests compare it
with otel_metrics.transcript on generated transcripts (tests/test_transcript.py); the
transcript benchmark times the two (benchmarks/transcript_speed.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

from otel_metrics import limits
from otel_metrics.model import COUNTED_TOOLS, SessionAggregates
from otel_metrics.transcript import (
    NOT_A_PROMPT_PREFIXES,
    SYNTHETIC_MODEL,
    USAGE_KEYS,
    TranscriptSummary,
    parse_timestamp_ns,
    subagent_transcripts,
)


def naive_summarize(path: Union[str, os.PathLike]) -> TranscriptSummary:
    """The aggregation rules, straight: json.loads every line of every file, then count."""
    main = Path(path)
    session_id: Optional[str] = None
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    skipped = 0
    prompts = turns = 0
    awaiting_answer = False
    assistant_ids: Dict[object, None] = {}
    tool_names: Dict[object, object] = {}
    error_ids: Dict[object, None] = {}
    usage_groups: Dict[object, Tuple[int, ...]] = {}
    # Timestamps outside 2020 .. a day ahead count as missing.
    plausible = (limits.EARLIEST_TIMESTAMP * 10**9, int((time.time() + limits.FUTURE_SLACK_SECONDS) * 10**9))
    files = [(main, True)] + [(p, False) for p in subagent_transcripts(main)]
    try:
        with open(main, "rb"):
            pass
    except OSError:  # no transcript: zero counts, no times
        files = []
    for file, in_main in files:
        for entry in _naive_entries(file):
            if entry is None:
                skipped += 1
                continue
            if in_main:
                if session_id is None and isinstance(entry.get("sessionId"), str):
                    session_id = entry["sessionId"]
                if isinstance(entry.get("forkedFrom"), dict):
                    continue  # history a fork copied: counts for nothing
                stamp = entry.get("timestamp")
                nanos = parse_timestamp_ns(stamp) if isinstance(stamp, str) else None
                if nanos is not None and plausible[0] <= nanos <= plausible[1]:
                    start_ns = nanos if start_ns is None else min(start_ns, nanos)
                    end_ns = nanos if end_ns is None else max(end_ns, nanos)
            main_thread = in_main and entry.get("isSidechain") is not True
            message = entry.get("message") if isinstance(entry.get("message"), dict) else {}
            content = message.get("content")
            blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
            if entry.get("type") == "user":
                for block in blocks:
                    if block.get("type") == "tool_result" and block.get("is_error") is True:
                        error_ids[_id_or_unique(block.get("tool_use_id"))] = None
                if main_thread and entry.get("isMeta") is not True and entry.get("isCompactSummary") is not True:
                    if isinstance(content, str):
                        text: Optional[str] = content
                    elif isinstance(content, list) and not any(b.get("type") == "tool_result" for b in blocks):
                        text = "".join(
                            b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
                        )
                    else:
                        text = None
                    if text is not None and text.strip() and not text.strip().startswith(NOT_A_PROMPT_PREFIXES):
                        prompts += 1
                        awaiting_answer = True
            elif entry.get("type") == "assistant":
                message_id = _id_or_unique(message.get("id"))
                if main_thread and message.get("model") != SYNTHETIC_MODEL:
                    assistant_ids[message_id] = None
                    if awaiting_answer:
                        turns += 1
                        awaiting_answer = False
                for block in blocks:
                    if block.get("type") == "tool_use":
                        tool_names.setdefault(_id_or_unique(block.get("id")), block.get("name"))
                usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
                counts = tuple(usage.get(k) if type(usage.get(k)) is int else 0 for k in USAGE_KEYS)
                request_id = entry.get("requestId") if isinstance(entry.get("requestId"), str) else None
                group = (message_id, request_id) if isinstance(message_id, str) else message_id
                if group not in usage_groups or sum(counts) > sum(usage_groups[group]):
                    usage_groups[group] = counts
    tokens = [sum(counts[i] for counts in usage_groups.values()) for i in range(4)]
    names = list(tool_names.values())
    aggregates = SessionAggregates(
        turn_count=turns,
        user_message_count=prompts,
        assistant_message_count=len(assistant_ids),
        total_tool_calls=len(tool_names),
        tool_error_count=len(error_ids),
        total_input_tokens=max(tokens[0], 0),
        total_output_tokens=max(tokens[1], 0),
        cache_creation_tokens=max(tokens[2], 0),
        cache_read_tokens=max(tokens[3], 0),
        **{field: names.count(name) for name, field in COUNTED_TOOLS.items()},
    )
    return TranscriptSummary(session_id, start_ns, end_ns, aggregates, skipped)


def _naive_entries(path: Path) -> Iterator[Optional[dict]]:
    """Each non-blank line's JSON object, or None for a line that is not one."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if isinstance(entry, dict):
                yield entry
            elif line.strip(" \t\r\n"):
                yield None


def _id_or_unique(value: object) -> object:
    """Ids are strings; an entry or block without one stands alone."""
    return value if isinstance(value, str) else object()
