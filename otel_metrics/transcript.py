"""Session aggregates from a Claude Code transcript and its subagent transcripts.

The rules (README "Session aggregates"):

- Files: the main transcript T, then every `*.jsonl` in `<T without .jsonl>/subagents/`
  (Claude Code 2.x), by name. Entries of T marked `"isSidechain": true` are subagent
  entries too (Claude Code 1.x); the other entries of T are the main thread.
- A line is one JSON object; any other non-blank line is skipped and counted
  (blank lines are separators, not content). Bytes that are not UTF-8 are replaced
  (U+FFFD), so a tool output with stray bytes still counts.
- Only `user` and `assistant` entries count; every entry of T gives its top-level
  `timestamp` to the session's start and end.
- Ids (`message.id`, `requestId`, tool_use `id`, tool_result `tool_use_id`) are strings;
  any other value counts as missing. Flags count only when exactly `true`.

The whole file is never held in memory: lines are streamed, and what is kept grows
with the number of messages and tool calls (ids), not with the bytes of their content.
What one read takes is bounded (limits.py): only regular files are read (a FIFO or a
device would block or never end), a line longer than MAX_LINE_BYTES is skipped without
holding it, and one session end reads at most TRANSCRIPT_MAX_BYTES in at most
TRANSCRIPT_READ_SECONDS; past a bound, what was read is reported and `incomplete` says why.
Timestamps outside the plausible range (limits.EARLIEST_TIMESTAMP to a day ahead) count
as missing.

Segments (README "Resumed, forked and compacted sessions"): a session resumed later
appends to the same files, and each run is reported on its own. `read_segment` reads
from the byte offsets where the previous report ended (up to the sizes the SessionEnd
hook saw, when it saw them), carries over whether the main thread's last prompt was
still unanswered, and skips history copied into a forked session's transcript.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple, Union

from . import limits
from .fastjson import loads
from .model import COUNTED_TOOLS, SessionAggregates
from .transcript_files import subagent_folder, subagent_names

log = logging.getLogger("otel_metrics.transcript")

# A user entry whose text starts with one of these is Claude Code talking, not the user.
NOT_A_PROMPT_PREFIXES = (
    "<local-command-stdout>",
    "<local-command-stderr>",
    "<local-command-caveat>",
    "<task-notification>",
    "[Request interrupted",
    "This session is being continued",
)
SYNTHETIC_MODEL = "<synthetic>"  # Claude Code's own stand-in messages (errors, interruptions)
# usage keys, in the order of TokenCounts
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
TokenCounts = Tuple[int, int, int, int]

_JSON_WHITESPACE = b" \t\r\n"
_READ_BUFFER_BYTES = 1 << 20  # fewer, larger reads: measurably faster on big transcripts
_NO_LIMIT = 1 << 62  # bytes: read to the end of the file
# Far above Claude Code's longest lines (a pasted image is a few MB of base64): a longer one is skipped.
MAX_LINE_BYTES = 64 * 1024 * 1024
_DEADLINE_CHECK_LINES = 256  # how often a read looks at the clock
_ABSENT = object()


@dataclass(frozen=True)
class TranscriptSummary:
    session_id: Optional[str]  # the first top-level "sessionId" seen in T, else None
    start_ns: Optional[int]  # earliest top-level timestamp of T's entries, unix ns (None: no timestamps)
    end_ns: Optional[int]  # latest, unix ns
    aggregates: SessionAggregates
    skipped_lines: int  # non-blank lines that were not a JSON object (all files)


@dataclass(frozen=True)
class Offsets:
    """Byte offsets into a session's files: where a segment starts, or where it must stop."""

    main: int = 0
    subagents: Mapping[str, int] = field(default_factory=dict)  # subagent file name -> offset

    def as_dict(self) -> Dict[str, object]:
        return {"main": self.main, "subagents": dict(self.subagents)}

    @classmethod
    def from_dict(cls, data: object) -> Offsets:
        """The inverse of as_dict; ValueError for anything else."""
        main = data.get("main") if isinstance(data, dict) else None
        subagents = data.get("subagents") if isinstance(data, dict) else None
        if not _is_offset(main) or not isinstance(subagents, dict):
            raise ValueError(f"not transcript offsets: {data!r}")
        if not all(isinstance(name, str) and _is_offset(value) for name, value in subagents.items()):
            raise ValueError(f"not subagent offsets: {subagents!r}")
        return cls(int(main), dict(subagents))  # type: ignore[arg-type]  # checked by _is_offset


def _is_offset(value: object) -> bool:
    return type(value) is int and value >= 0


@dataclass(frozen=True)
class Segment:
    """What one read from `start` found; the next segment starts at `end`."""

    summary: TranscriptSummary
    end: Offsets
    awaiting_answer: bool  # the main thread's last prompt had no answer yet at `end`
    copies: int  # entries of the main transcript skipped as history copied from another session
    roots: Tuple[str, ...]  # uuids of main-thread entries that start a chain (`parentUuid` null), copies included
    incomplete: Optional[str] = None  # why not everything was read (a bound, not a regular file), else None

    @property
    def has_activity(self) -> bool:
        """Whether anything happened: a timestamped entry of the main transcript, or anything counted."""
        return self.summary.start_ns is not None or self.summary.aggregates != SessionAggregates()


# Given the uuid of the first main-transcript entry that has one, the uuids of the
# history this transcript copied from another session (empty when it copied none).
CopiedHistory = Callable[[str], AbstractSet[str]]


def summarize(path: Union[str, os.PathLike[str]]) -> TranscriptSummary:
    """Aggregates of the session whose main transcript is `path`; never raises for bad content.

    A transcript that cannot be opened gives zero counts and no times (the caller
    substitutes the hook's time).
    """
    return read_segment(path).summary


def read_segment(
    path: Union[str, os.PathLike[str]],
    start: Offsets = Offsets(),
    awaiting_answer: bool = False,
    stop: Optional[Offsets] = None,
    copied_history: Optional[CopiedHistory] = None,
) -> Segment:
    """The entries written since `start`: the main transcript from `start.main`, each
    subagent file from its offset (0 for a new file).

    `stop` (the sizes the SessionEnd hook saw) bounds every file, and a subagent file
    missing from it was created after that run ended: it belongs to the next segment.
    Without `stop`, files are read to their end. A last line without its newline that
    is not a JSON object is being written: it is left for the next segment.
    `awaiting_answer` carries the turn rule across the boundary (a prompt counts where
    it was written, its turn where its answer was). Main-transcript entries that carry
    `forkedFrom`, or whose uuid is in `copied_history(first uuid)`, were copied from
    another session: they count for nothing, not even their timestamps.
    """
    main = Path(path)
    tally = _Tally(awaiting_answer, copied_history)
    budget = ReadBudget()
    main_end = _read_file(main, tally, True, budget, start.main, stop.main if stop else None)
    subagent_ends = dict(start.subagents)
    if main_end is not None:
        for sub in subagent_transcripts(main):
            if stop is not None and sub.name not in stop.subagents:
                continue
            begin = start.subagents.get(sub.name, 0)
            end = _read_file(sub, tally, False, budget, begin, stop.subagents[sub.name] if stop else None)
            subagent_ends[sub.name] = begin if end is None else end
    return Segment(
        summary=tally.summary(),
        end=Offsets(start.main if main_end is None else main_end, subagent_ends),
        awaiting_answer=tally.prompt_awaiting_answer,
        copies=tally.copies,
        roots=tuple(tally.roots),
        incomplete=budget.stopped,
    )


class ReadBudget:
    """What one session end's read may take, over all its files: bytes and seconds."""

    def __init__(
        self, max_bytes: int = limits.TRANSCRIPT_MAX_BYTES, seconds: float = limits.TRANSCRIPT_READ_SECONDS
    ) -> None:
        self.max_bytes = max_bytes
        self.bytes_left = max_bytes
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.stopped: Optional[str] = None  # the first reason a read stopped short

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason

    def take(self, size: int) -> None:
        self.bytes_left -= size
        if self.bytes_left <= 0:
            self.stop(f"read the first {self.max_bytes} bytes only")

    def in_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.stop(f"stopped reading after {self.seconds:.0f} s")
            return False
        return True


def open_regular(path: Union[str, os.PathLike[str]]) -> Optional[int]:
    """A descriptor of `path` if it is a regular file, else None; OSError when it cannot be opened.

    O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused, as is a device).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def _lines(stream: BinaryIO, budget: ReadBudget, bound: int, position: int) -> Iterator[Tuple[int, int, bytes]]:
    """(offset, length, line) of each line up to byte `bound`, while the budget lasts.

    A line longer than MAX_LINE_BYTES is read through piece by piece, never held: it
    comes as b"" (a line that is not a JSON object). A line that crosses `bound` is not
    read: it belongs to what comes after.
    """
    count = 0
    while position < bound and budget.bytes_left > 0:
        count += 1
        if count % _DEADLINE_CHECK_LINES == 0 and not budget.in_time():
            return
        raw = stream.readline(min(MAX_LINE_BYTES, bound - position + 1))
        if not raw:
            return
        length = len(raw)
        if length == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raw = b""
            while length <= budget.bytes_left:
                piece = stream.readline(MAX_LINE_BYTES)
                length += len(piece)
                if not piece or piece.endswith(b"\n"):
                    break
        if position + length > bound:
            return
        budget.take(length)
        yield position, length, raw
        position += length


def subagent_transcripts(main: Path) -> List[Path]:
    """`<main without .jsonl>/subagents/*.jsonl`, by name (Claude Code 2.x layout)."""
    folder = subagent_folder(main)
    return [Path(folder, name) for name in subagent_names(main)] if folder else []


def entry_uuids(path: Union[str, os.PathLike[str]]) -> Set[str]:
    """The top-level `uuid` of every entry of one file (empty if it cannot be read), within a read's bounds."""
    uuids: Set[str] = set()
    try:
        fd = open_regular(path)
        if fd is None:
            return uuids
        with open(fd, "rb", buffering=_READ_BUFFER_BYTES) as stream:
            for _, _, raw in _lines(stream, ReadBudget(), _NO_LIMIT, 0):
                if b'"uuid"' not in raw:  # cheap: most lines of a big transcript need no decoding
                    continue
                try:
                    entry = loads(raw.decode("utf-8", "replace"))
                except ValueError:
                    continue
                uuid = entry.get("uuid") if type(entry) is dict else None
                if type(uuid) is str:
                    uuids.add(uuid)
    except OSError as exc:
        log.debug("%s: %s", path, exc)
    return uuids


def _read_file(
    path: Path, tally: _Tally, in_main: bool, budget: ReadBudget, start: int = 0, limit: Optional[int] = None
) -> Optional[int]:
    """Feed the lines of `path` from byte `start` up to byte `limit` to `tally`, within `budget`.

    Returns the offset after the last line read, or None if the file could not be
    opened or is not a regular file. A read that fails midway (file removed, disk
    error) keeps what was read.
    """
    try:
        fd = open_regular(path)
    except OSError as exc:
        log.debug("%s: %s", path, exc)
        return None
    if fd is None:
        budget.stop(f"{path.name} is not a regular file: not read")
        return None
    position = start
    try:
        with open(fd, "rb", buffering=_READ_BUFFER_BYTES) as stream:
            if start:
                if os.fstat(stream.fileno()).st_size < start:
                    log.debug("%s: shorter than the %d bytes already reported: rewritten, not read", path, start)
                    return start
                stream.seek(start)
            for offset, length, raw in _lines(stream, budget, _NO_LIMIT if limit is None else limit, start):
                try:
                    entry = loads(raw.decode("utf-8", "replace")) if raw else None
                except ValueError:
                    entry = None
                if type(entry) is dict:
                    tally.add(entry, in_main)
                elif raw.strip(_JSON_WHITESPACE) or not raw:
                    tally.skipped_lines += 1
                    log.debug("%s: the line at byte %d is not a JSON object: skipped", path, offset)
                    if raw and not raw.endswith(b"\n"):
                        break  # still being written: read it whole next time
                position = offset + length
    except OSError as exc:
        log.debug("%s: %s", path, exc)
    return position


class _Tally:
    """Everything the rules need, fed one entry at a time in file order."""

    def __init__(self, awaiting_answer: bool = False, copied_history: Optional[CopiedHistory] = None) -> None:
        self.session_id: Optional[str] = None
        self.times = _TimeRange()
        self.skipped_lines = 0
        self.user_prompts = 0
        self.turns = 0
        self.prompt_awaiting_answer = awaiting_answer  # a user prompt with no main-thread answer yet
        self.assistant_message_ids: Set[str] = set()
        self.assistant_messages_without_id = 0
        self.tool_use_ids: Set[str] = set()
        self.tool_calls = 0
        self.tool_counts: Dict[str, int] = dict.fromkeys(COUNTED_TOOLS.values(), 0)
        self.error_tool_use_ids: Set[str] = set()
        self.errors_without_id = 0
        # (message.id, requestId) -> (sum, counts) of the biggest usage seen, first on ties
        self.usage_by_request: Dict[Tuple[str, Optional[str]], Tuple[int, TokenCounts]] = {}
        self.tokens_without_id = [0, 0, 0, 0]
        self.roots: List[str] = []
        self.copies = 0
        self._copied_history = copied_history  # asked once, on the first uuid of the main transcript
        self._copied: AbstractSet[str] = frozenset()
        self._copies_possible = copied_history is not None  # else only `forkedFrom` marks a copy (the fast path)

    def add(self, entry: Dict[str, Any], in_main: bool) -> None:
        if in_main:
            if self.session_id is None:
                session_id = entry.get("sessionId")
                if type(session_id) is str:
                    self.session_id = session_id
            if entry.get("parentUuid", _ABSENT) is None:
                self._note_root(entry)
            if (self._copies_possible or "forkedFrom" in entry) and self._is_copy(entry):
                self.copies += 1
                return
            self.times.note(entry.get("timestamp"))
        kind = entry.get("type")
        if kind == "assistant":
            self._add_assistant(entry, in_main and entry.get("isSidechain") is not True)
        elif kind == "user":
            self._add_user(entry, in_main and entry.get("isSidechain") is not True)

    def _note_root(self, entry: Dict[str, Any]) -> None:
        """A main-thread entry that starts a conversation chain (the first one, a compaction)."""
        uuid = entry.get("uuid")
        if type(uuid) is str and entry.get("isSidechain") is not True:
            self.roots.append(uuid)

    def _is_copy(self, entry: Dict[str, Any]) -> bool:
        """Whether a main-transcript entry is history copied from another session."""
        if type(entry.get("forkedFrom")) is dict:
            return True
        uuid = entry.get("uuid")
        if type(uuid) is not str:
            return False
        if self._copied_history is not None:
            self._copied = self._copied_history(uuid)
            self._copied_history = None
            self._copies_possible = bool(self._copied)
        return uuid in self._copied

    def _add_user(self, entry: Dict[str, Any], main_thread: bool) -> None:
        message = entry.get("message")
        content = message.get("content") if type(message) is dict else None
        if type(content) is list:
            for block in content:
                if type(block) is dict and block.get("type") == "tool_result" and block.get("is_error") is True:
                    tool_use_id = block.get("tool_use_id")
                    if type(tool_use_id) is str:
                        self.error_tool_use_ids.add(tool_use_id)
                    else:
                        self.errors_without_id += 1
        if (
            main_thread
            and entry.get("isMeta") is not True
            and entry.get("isCompactSummary") is not True
            and _is_prompt_text(_prompt_text(content))
        ):
            self.user_prompts += 1
            self.prompt_awaiting_answer = True

    def _add_assistant(self, entry: Dict[str, Any], main_thread: bool) -> None:
        message = entry.get("message")
        if type(message) is not dict:
            message = {}
        message_id = message.get("id")
        if type(message_id) is not str:
            message_id = None
        if main_thread and message.get("model") != SYNTHETIC_MODEL:
            if message_id is None:
                self.assistant_messages_without_id += 1
            else:
                self.assistant_message_ids.add(message_id)
            if self.prompt_awaiting_answer:
                self.turns += 1
                self.prompt_awaiting_answer = False
        content = message.get("content")
        if type(content) is list:
            for block in content:
                if type(block) is dict and block.get("type") == "tool_use":
                    self._add_tool_use(block)
        self._add_usage(message_id, entry.get("requestId"), message.get("usage"))

    def _add_tool_use(self, block: Dict[str, Any]) -> None:
        block_id = block.get("id")
        if type(block_id) is str:
            if block_id in self.tool_use_ids:
                return
            self.tool_use_ids.add(block_id)
        self.tool_calls += 1
        name = block.get("name")
        if type(name) is str and name in COUNTED_TOOLS:
            self.tool_counts[COUNTED_TOOLS[name]] += 1

    def _add_usage(self, message_id: Optional[str], request_id: object, usage: object) -> None:
        counts = _token_counts(usage)
        if message_id is None:
            for i in range(4):
                self.tokens_without_id[i] += counts[i]
            return
        key = (message_id, request_id if type(request_id) is str else None)
        total = counts[0] + counts[1] + counts[2] + counts[3]
        best = self.usage_by_request.get(key)
        if best is None or total > best[0]:
            self.usage_by_request[key] = (total, counts)

    def summary(self) -> TranscriptSummary:
        tokens = list(self.tokens_without_id)
        for _, counts in self.usage_by_request.values():
            for i in range(4):
                tokens[i] += counts[i]
        error_count = len(self.error_tool_use_ids) + self.errors_without_id
        aggregates = SessionAggregates(
            turn_count=self.turns,
            user_message_count=self.user_prompts,
            assistant_message_count=len(self.assistant_message_ids) + self.assistant_messages_without_id,
            total_tool_calls=self.tool_calls,
            tool_error_count=error_count,
            total_input_tokens=max(tokens[0], 0),
            total_output_tokens=max(tokens[1], 0),
            cache_creation_tokens=max(tokens[2], 0),
            cache_read_tokens=max(tokens[3], 0),
            **self.tool_counts,
        )
        start_ns, end_ns = self.times.bounds()
        return TranscriptSummary(self.session_id, start_ns, end_ns, aggregates, self.skipped_lines)


def _prompt_text(content: object) -> Optional[str]:
    """The text of a user entry's content, or None when it is a tool result or has no text form."""
    if type(content) is str:
        return content
    if type(content) is not list:
        return None
    texts = []
    for block in content:
        if type(block) is dict:
            block_type = block.get("type")
            if block_type == "tool_result":
                return None
            if block_type == "text" and type(block.get("text")) is str:
                texts.append(block["text"])
    return "".join(texts)


def _is_prompt_text(text: Optional[str]) -> bool:
    if text is None:
        return False
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith(NOT_A_PROMPT_PREFIXES)


def _token_counts(usage: object) -> TokenCounts:
    if type(usage) is not dict:
        return (0, 0, 0, 0)
    values = [usage.get(key) for key in USAGE_KEYS]
    # bool is an int subclass; JSON true is not a token count
    return tuple(v if type(v) is int else 0 for v in values)  # type: ignore[return-value]


# Timestamps

_ISO_8601 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
# What Claude Code writes: UTC, milliseconds. Among valid ones, text order is time order.
_CANONICAL_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_NS = 1_000_000_000


def parse_timestamp_ns(text: str) -> Optional[int]:
    """ISO-8601 date-time -> unix nanoseconds, or None if it is not one.

    Accepts "Z" or a +HH:MM offset (no offset: UTC) and any fraction (kept to the
    nanosecond, further digits dropped). Python 3.9's datetime.fromisoformat takes
    neither "Z" nor nanoseconds, hence this.
    """
    match = _ISO_8601.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, offset_hours, offset_minutes = match.groups()
    try:
        days = _dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        return None
    seconds = days * 86400 + int(hour) * 3600 + int(minute) * 60 + int(second)
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int((fraction or "")[:9].ljust(9, "0"))
    return seconds * _NS + nanos


class _TimeRange:
    """Earliest and latest valid and plausible timestamp noted.

    Plausible: from limits.EARLIEST_TIMESTAMP to a day ahead of now (a timestamp of year 1
    or 2554 is a broken clock or a forged line, and would make the session unsendable).
    Canonical UTC timestamps (nearly all of them) are compared as text, which is
    their time order; their validity depends only on the date, hour and minute
    (remembered per minute) and the second's tens digit. Anything else is parsed.
    """

    def __init__(self) -> None:
        self.first_text: Optional[str] = None
        self.last_text: Optional[str] = None
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None
        self._valid_minutes: Dict[str, bool] = {}
        self._earliest_ns = limits.EARLIEST_TIMESTAMP * _NS
        self._latest_ns = int((time.time() + limits.FUTURE_SLACK_SECONDS) * _NS)

    def note(self, value: object) -> None:
        if type(value) is not str:
            return
        if _CANONICAL_UTC.fullmatch(value) and value[17] <= "5" and self._valid_minute(value[:16]):
            if self.first_text is None or value < self.first_text:
                self.first_text = value
            if self.last_text is None or value > self.last_text:
                self.last_text = value
            return
        nanos = parse_timestamp_ns(value)
        if nanos is None or not self._earliest_ns <= nanos <= self._latest_ns:
            return
        if self.first_ns is None or nanos < self.first_ns:
            self.first_ns = nanos
        if self.last_ns is None or nanos > self.last_ns:
            self.last_ns = nanos

    def _valid_minute(self, minute: str) -> bool:
        valid = self._valid_minutes.get(minute)
        if valid is None:
            nanos = parse_timestamp_ns(minute + ":00Z")
            valid = nanos is not None and self._earliest_ns <= nanos <= self._latest_ns - 60 * _NS
            self._valid_minutes[minute] = valid
        return valid

    def bounds(self) -> Tuple[Optional[int], Optional[int]]:
        firsts = [t for t in (self.first_ns, _parse_noted(self.first_text)) if t is not None]
        lasts = [t for t in (self.last_ns, _parse_noted(self.last_text)) if t is not None]
        return (min(firsts) if firsts else None, max(lasts) if lasts else None)


def _parse_noted(text: Optional[str]) -> Optional[int]:
    return None if text is None else parse_timestamp_ns(text)
