"""Session aggregates of a generated 100 MB transcript: otel_metrics.transcript vs a naive reader.

The naive reader (tests/naive_transcript.py) is what anyone would write first: one
pass, `json.loads` on every line, then the rules. It is also the reference the tests
hold `summarize()` to, so here both must agree exactly before a time is reported.

The transcript is generated like a real Claude Code 2.x session: big tool outputs
(written twice, as in Claude Code: the tool_result and `toolUseResult`), one line per
content block of an assistant message with its usage repeated, progress lines that
embed subagent messages, other entry types, and subagent files in `<T>/subagents/`.
A second transcript has the same entries with tool outputs a tenth the size: peak
memory must not follow the bytes of tool output.

Runs alternate (naive, ours, naive, ...) in this process; times are medians. Peak
memory is measured in a fresh subprocess per reader (tracemalloc: Python heap).

    .venv/bin/python benchmarks/transcript_speed.py [--megabytes 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' support package

from otel_metrics.transcript import subagent_transcripts, summarize  # noqa: E402
from support.naive_transcript import naive_summarize  # noqa: E402

# The generated transcript

TOOL_MIX = (  # (name, weight): roughly what a coding session calls
    ("Bash", 30),
    ("Read", 28),
    ("Edit", 12),
    ("Grep", 8),
    ("Glob", 5),
    ("Write", 5),
    ("WebFetch", 3),
    ("WebSearch", 2),
    ("TodoWrite", 3),
    ("Task", 4),
)
MEDIAN_OUTPUT_BYTES = 3000  # tool outputs are lognormal around this, up to MAX_OUTPUT_BYTES
MAX_OUTPUT_BYTES = 400_000
START = 1_770_912_000.0  # 2026-02-12T16:00:00Z


class SessionWriter:
    """Writes a Claude Code 2.x style session: <folder>/<id>.jsonl and <folder>/<id>/subagents/*.jsonl.

    The random choices do not depend on output_scale, so two scales give the same
    entries, with tool outputs of different sizes.
    """

    def __init__(self, folder: Path, seed: int, output_scale: float) -> None:
        self.rng = random.Random(seed)
        self.scale = output_scale
        self.session_id = f"5e55104d-{seed:04x}-4bcd-8e11-{self.rng.getrandbits(48):012x}"
        self.path = folder / f"{self.session_id}.jsonl"
        self.subagent_folder = folder / self.session_id / "subagents"
        self.clock = START
        self.serial = 0
        self.code = _code_lines(random.Random(seed + 1))
        self.bytes_written = 0
        # While a subagent runs: its messages, to echo in progress lines of the main transcript.
        self.subagent_messages: Optional[List[dict]] = None

    def write(self, turns: Optional[int] = None, megabytes: float = 100.0) -> int:
        """Write `turns` turns, or as many as make `megabytes`; returns the number of turns."""
        self.subagent_folder.mkdir(parents=True, exist_ok=True)
        done = 0
        with open(self.path, "wb") as main:
            self._emit(
                main,
                {
                    "type": "file-history-snapshot",
                    "messageId": self._uuid(),
                    "snapshot": {"messageId": self._uuid(), "trackedFileBackups": {}, "timestamp": self._stamp()},
                    "isSnapshotUpdate": False,
                },
            )
            while (done < turns) if turns is not None else (self.bytes_written < megabytes * 1_000_000):
                self._turn(main)
                done += 1
        return done

    # entries

    def _turn(self, out) -> None:
        prompt = " ".join(self.rng.choice(self.code).split()[:12]) or "go on"
        self._emit(
            out,
            self._entry(
                "user",
                message={"role": "user", "content": prompt},
                thinkingMetadata={"maxThinkingTokens": 31999},
                todos=[],
                permissionMode="default",
            ),
        )
        for _ in range(self.rng.randint(1, 12)):
            calls = self._assistant_message(out, sidechain=False)
            for call in calls:
                self._tool_round(out, call)
        if self.rng.random() < 0.3:
            self._emit(
                out, self._entry("system", subtype="turn_duration", durationMs=self.rng.randint(1, 90000), isMeta=False)
            )
        if self.rng.random() < 0.5:
            self._emit(
                out,
                {
                    "type": "file-history-snapshot",
                    "messageId": self._uuid(),
                    "snapshot": {
                        "messageId": self._uuid(),
                        "trackedFileBackups": {
                            "lib/app.ex": {"backupFileName": "f1@v2", "version": 2, "backupTime": self._stamp()}
                        },
                        "timestamp": self._stamp(),
                    },
                    "isSnapshotUpdate": True,
                },
            )

    def _assistant_message(self, out, sidechain: bool, **extra) -> List[dict]:
        """One API response as Claude Code writes it: a line per content block, usage repeated."""
        message_id = "msg_01" + self._token(22)
        request_id = "req_011C" + self._token(20)
        blocks: List[dict] = []
        if self.rng.random() < 0.4:
            blocks.append({"type": "thinking", "thinking": self._prose(600), "signature": self._token(300)})
        if self.rng.random() < 0.6:
            blocks.append({"type": "text", "text": self._prose(300)})
        calls = [self._tool_use() for _ in range(self.rng.choice((0, 1, 1, 1, 2, 3)))]
        blocks.extend(calls)
        if not blocks:
            blocks.append({"type": "text", "text": "Done."})
        usage = {
            "input_tokens": self.rng.randint(1, 9),
            "cache_creation_input_tokens": self.rng.randint(0, 9000),
            "cache_read_input_tokens": self.rng.randint(10_000, 150_000),
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": self.rng.randint(1, 12),
            "service_tier": "standard",
        }
        for i, block in enumerate(blocks):
            final = i == len(blocks) - 1
            line_usage = dict(usage, output_tokens=self.rng.randint(40, 3000)) if final else usage
            message = {
                "model": "claude-opus-4-6",
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [block],
                "stop_reason": "tool_use" if final and calls else None,
                "stop_sequence": None,
                "usage": line_usage,
            }
            self._emit(
                out, self._entry("assistant", sidechain=sidechain, message=message, requestId=request_id, **extra)
            )
        return calls

    def _tool_use(self) -> dict:
        names, weights = zip(*TOOL_MIX)
        name = self.rng.choices(names, weights)[0]
        tool_input: Dict[str, object] = {"file_path": f"/home/USER/project/lib/{self._token(8)}.ex"}
        if name == "Bash":
            tool_input = {"command": "mix test " + self._token(10), "description": "Run the tests"}
        elif name in ("Write", "Edit"):
            tool_input["content" if name == "Write" else "new_string"] = self._output(0.3)
        return {"type": "tool_use", "id": "toolu_01" + self._token(22), "name": name, "input": tool_input}

    def _tool_round(self, out, call: dict) -> None:
        """Progress while the tool runs, then its result (twice: tool_result and toolUseResult)."""
        name = call["name"]
        for event in ("PreToolUse", "PostToolUse"):
            self._emit(
                out,
                self._entry(
                    "progress",
                    data={
                        "type": "hook_progress",
                        "hookEvent": event,
                        "hookName": f"{event}:{name}",
                        "command": "true",
                    },
                    parentToolUseID=call["id"],
                    toolUseID=call["id"],
                ),
            )
        if name == "Task" and self.subagent_messages is None:  # subagents start no subagents
            self._subagent(out, call)
        output = self._output(1.0)
        if name == "Bash":
            for _ in range(self.rng.randint(0, 3)):
                partial = output[: self.rng.randint(0, len(output))]
                self._emit(
                    out,
                    self._entry(
                        "progress",
                        data={
                            "type": "bash_progress",
                            "output": partial[-2000:],
                            "fullOutput": partial,
                            "elapsedTimeSeconds": 2,
                        },
                        parentToolUseID=call["id"],
                        toolUseID="bash-progress-0",
                    ),
                )
            result: Dict[str, object] = {"stdout": output, "stderr": "", "interrupted": False, "isImage": False}
        elif name == "Read":
            result = {
                "type": "text",
                "file": {
                    "filePath": call["input"]["file_path"],
                    "content": output,
                    "numLines": output.count("\n"),
                    "startLine": 1,
                    "totalLines": 400,
                },
            }
        elif name == "Edit":
            result = {
                "filePath": call["input"]["file_path"],
                "oldString": "x",
                "newString": "y",
                "originalFile": output,
                "structuredPatch": [
                    {"oldStart": 1, "oldLines": 3, "newStart": 1, "newLines": 3, "lines": output.splitlines()[:12]}
                ],
                "userModified": False,
                "replaceAll": False,
            }
        else:
            result = {"type": "text", "content": output}
        is_error = self.rng.random() < 0.05
        block: Dict[str, object] = {"tool_use_id": call["id"], "type": "tool_result", "content": output}
        if is_error or self.rng.random() < 0.5:
            block["is_error"] = is_error
        self._emit(
            out,
            self._entry(
                "user",
                message={"role": "user", "content": [block]},
                toolUseResult=result,
                sourceToolAssistantUUID=self._uuid(),
            ),
        )

    def _subagent(self, out, call: dict) -> None:
        """A subagent file, each of its messages also echoed in a progress line of the main transcript."""
        agent_id = self._token(7).lower()
        path = self.subagent_folder / f"agent-a{agent_id}.jsonl"
        with open(path, "wb") as agent:
            self._emit(
                agent,
                self._entry(
                    "user", sidechain=True, agentId=agent_id, message={"role": "user", "content": self._prose(400)}
                ),
            )
            for _ in range(self.rng.randint(2, 8)):
                self.subagent_messages = []
                calls = self._assistant_message(agent, sidechain=True, agentId=agent_id)
                for sub_call in calls:
                    self._tool_round(agent, sub_call)
                messages, self.subagent_messages = self.subagent_messages, None
                for message in messages:
                    progress = {
                        "message": {k: message[k] for k in ("type", "message", "uuid", "timestamp")},
                        "normalizedMessages": [],
                        "type": "agent_progress",
                        "prompt": "Explore",
                        "agentId": agent_id,
                    }
                    self._emit(
                        out,
                        self._entry(
                            "progress",
                            data=progress,
                            toolUseID="agent_msg_01" + self._token(20),
                            parentToolUseID=call["id"],
                        ),
                    )

    def _entry(self, kind: str, sidechain: bool = False, **fields: object) -> dict:
        entry: Dict[str, object] = {
            "parentUuid": self._uuid(),
            "isSidechain": sidechain,
            "userType": "external",
            "cwd": "/home/USER/project",
            "sessionId": self.session_id,
            "version": "2.1.39",
            "gitBranch": "main",
            "slug": "radiant-floating-music",
            "type": kind,
        }
        entry.update(fields)
        entry["uuid"] = self._uuid()
        entry["timestamp"] = self._stamp()
        return entry

    def _emit(self, out, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        out.write(line)
        self.bytes_written += len(line)
        if self.subagent_messages is not None and entry["type"] in ("user", "assistant"):
            self.subagent_messages.append(entry)

    # content

    def _output(self, share: float) -> str:
        size = min(MAX_OUTPUT_BYTES, int(self.rng.lognormvariate(0, 1.3) * MEDIAN_OUTPUT_BYTES * share))
        size = int(size * self.scale)
        start = self.rng.randrange(len(self.code))
        lines: List[str] = []
        length = 0
        while length < size:
            line = f"{len(lines) + 1:6d}\u2192{self.code[(start + len(lines)) % len(self.code)]}"
            lines.append(line)
            length += len(line) + 1
        return "\n".join(lines)

    def _prose(self, median: int) -> str:
        words = " ".join(self.rng.choice(self.code) for _ in range(max(1, median // 40)))
        return words[: max(1, int(self.rng.lognormvariate(0, 0.6) * median))]

    def _token(self, length: int) -> str:
        return "".join(self.rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789", k=length))

    def _uuid(self) -> str:
        self.serial += 1
        return f"{self.rng.getrandbits(32):08x}-0000-4000-8000-{self.serial:012x}"

    def _stamp(self) -> str:
        self.clock += self.rng.random() * 0.8
        whole = int(self.clock)
        millis = int((self.clock - whole) * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _code_lines(rng: random.Random) -> List[str]:
    """Source-code-like lines: quotes, backslashes, tabs and some non-ASCII, as tool outputs have."""
    words = (
        "def",
        "end",
        "do",
        "socket",
        "assign",
        "session_id",
        "|>",
        "Enum.map",
        "%{",
        "}",
        '"pane"',
        "'x'",
        "nil",
        "true",
        "case",
        "->",
        "\\n",
        "\t",
        "résumé",
        "→",
        "日本語",
        "✓",
        "{:ok,",
        "=>",
    )
    return [
        "  " * rng.randint(0, 4) + " ".join(rng.choice(words) for _ in range(rng.randint(1, 14))) for _ in range(4000)
    ]


# Measuring

READERS: Dict[str, Callable[[Path], object]] = {"naive": naive_summarize, "ours": summarize}
OUTPUT_SCALE_SMALL = 0.1


def decode_only(path: Path) -> None:
    """The floor of any exact reader: json.loads on every line of every file, nothing counted.

    (Every line must be decoded: whether it is a JSON object decides skipped_lines.)
    """
    for file in [path] + subagent_transcripts(path):
        with open(file, encoding="utf-8", errors="replace", newline="\n") as lines:
            for line in lines:
                try:
                    json.loads(line)
                except ValueError:
                    pass


def alternate(timed: Dict[str, Callable[[], object]], runs: int) -> Dict[str, float]:
    """Median wall time of each callable, run in turn `runs` times."""
    times: Dict[str, List[float]] = {name: [] for name in timed}
    for _ in range(runs):
        for name, run in timed.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(reader: str, path: Path) -> Tuple[int, int]:
    """(peak Python heap, max RSS) in bytes of one reader on `path`, in a fresh interpreter."""
    argv = [sys.executable, __file__, "--memory-of", reader, str(path)]
    result = subprocess.run(argv, check=True, capture_output=True, text=True)
    peak, rss = json.loads(result.stdout)
    return peak, rss


def _measure_memory_here(reader: str, path: Path) -> None:
    import resource
    import tracemalloc

    tracemalloc.start()
    READERS[reader](path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps([peak, rss if sys.platform == "darwin" else rss * 1024]))  # Linux counts KiB


def transcript_size(main: Path) -> Tuple[int, int, int, int]:
    """(bytes, lines, longest line's bytes, files) of a transcript with its subagent files."""
    files = [main] + subagent_transcripts(main)
    lines = longest = 0
    for file in files:
        with open(file, "rb") as stream:
            for line in stream:
                lines += 1
                longest = max(longest, len(line))
    return sum(f.stat().st_size for f in files), lines, longest, len(files)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--megabytes", type=float, default=100.0, help="size of the big transcript (%(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each reader (%(default)s)")
    parser.add_argument("--memory-of", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--naive", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        _measure_memory_here(args.memory_of[0], Path(args.memory_of[1]))
        return 0
    if args.naive:  # the naive reader as a command, to time against `otel-metrics session-summary`
        print(naive_summarize(args.naive))
        return 0

    with tempfile.TemporaryDirectory(prefix="transcript-speed-") as tmp:
        big_writer = SessionWriter(Path(tmp) / "big", seed=4, output_scale=1.0)
        turns = big_writer.write(megabytes=args.megabytes)
        small_writer = SessionWriter(Path(tmp) / "small", seed=4, output_scale=OUTPUT_SCALE_SMALL)
        small_writer.write(turns=turns)
        big, small = big_writer.path, small_writer.path

        for path in (big, small):  # exact first: the times mean nothing otherwise
            ours, naive = summarize(path), naive_summarize(path)
            if ours != naive:
                print(f"MISMATCH on {path}:\n  ours  {ours}\n  naive {naive}", file=sys.stderr)
                return 1
        summary = summarize(big)

        timed = {
            "naive": lambda: naive_summarize(big),
            "ours": lambda: summarize(big),
            "decode": lambda: decode_only(big),
        }
        in_process = alternate(timed, args.runs)
        commands = {
            "naive": [sys.executable, __file__, "--naive", str(big)],
            "ours": [str(Path(sys.executable).with_name("otel-metrics")), "session-summary", str(big)],
        }
        as_command = alternate(
            {
                name: (lambda a=argv: subprocess.run(a, check=True, capture_output=True))
                for name, argv in commands.items()
            },
            args.runs,
        )
        memory = {(name, path): peak_memory(name, path) for name in READERS for path in (big, small)}
        big_size, small_size = transcript_size(big), transcript_size(small)

    megabytes = big_size[0] / 1e6
    print(
        f"Generated transcript: {megabytes:.0f} MB in {big_size[3]} files, {big_size[1]} lines"
        f" (longest {big_size[2] / 1e6:.1f} MB), {turns} turns, {summary.aggregates.assistant_message_count}"
        f" assistant messages, {summary.aggregates.total_tool_calls} tool calls."
    )
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}; medians of {args.runs} alternating runs.\n")
    print("| reader | in process | MB/s | ratio | as a command | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = (
        ("naive: `json.loads` every line, then the rules", "naive"),
        ("ours: `summarize()`, `otel-metrics session-summary`", "ours"),
        ("decoding alone: `json.loads` every line, nothing counted", "decode"),
    )
    for label, name in rows:
        seconds = in_process[name]
        cells = [f"{seconds:.3f} s", f"{megabytes / seconds:.0f}", f"{seconds / in_process['naive']:.2f}"]
        if name in as_command:
            cells += [f"{as_command[name]:.3f} s", f"{as_command[name] / as_command['naive']:.2f}"]
        else:
            cells += ["", ""]
        print(f"| {label} | {' | '.join(cells)} |")
    small_mb = small_size[0] / 1e6
    print(
        f"\nPeak memory of each reader alone in a fresh interpreter (Python heap by tracemalloc; max RSS),"
        f" on the same entries with tool outputs of full size ({megabytes:.0f} MB, longest line"
        f" {big_size[2] / 1e6:.1f} MB) and a tenth ({small_mb:.0f} MB, longest line {small_size[2] / 1e6:.1f} MB).\n"
    )
    print(f"| reader | {megabytes:.0f} MB transcript | {small_mb:.0f} MB transcript |")
    print("| --- | ---: | ---: |")
    for label, name in rows[:2]:
        cells = [f"{memory[name, p][0] / 1e6:.1f} MB heap, {memory[name, p][1] / 1e6:.0f} MB RSS" for p in (big, small)]
        print(f"| {label.split(':')[0]} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
