"""hook_input.adopt: the hook inputs scripts/run spooled as they came become records, once each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from otel_metrics import hook_input, spool
from support.paths import REPO
from support.plugin_hooks import session_input, spool_records


def spool_input(state: Path, tag: str, hook_input: dict, written_ns: int) -> Path:
    """What scripts/run leaves: the input's bytes under <tag>.hookinput, dated when it was written."""
    directory = state / spool.SPOOL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (tag + spool.HOOK_INPUT_SUFFIX)
    path.write_text(json.dumps(hook_input))
    os.utime(path, ns=(written_ns, written_ns))
    return path


def test_a_session_end_becomes_its_record_dated_when_it_was_written(state: Path, tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    transcript.write_bytes(b"x" * 10)
    written_ns = 1_700_000_000 * 10**9
    spool_input(state, "session-end-41", session_input("SessionEnd", "s-1", transcript, "logout"), written_ns)
    assert hook_input.adopt(str(state)) == []
    assert spool.hook_inputs(str(state)) == []
    assert spool.pending(str(state)) == [spool.record_name(written_ns, "session-end-41") + spool.SUFFIX]
    [record] = spool_records(state)
    assert record == {
        "record": "session_end",
        "session_id": "s-1",
        "transcript_path": str(transcript),
        "reason": "logout",
        "time_ns": written_ns,
        "transcript_bytes": 10,
        "subagent_bytes": {},
    }


def test_inputs_are_taken_in_the_order_they_were_written(state: Path) -> None:
    # Names from process ids say nothing of the order: the time each was written does.
    spool_input(state, "session-end-9", session_input("SessionEnd", "later", None), 2 * 10**18)
    spool_input(state, "session-end-10", session_input("SessionEnd", "earlier", None), 1 * 10**18)
    assert spool.hook_inputs(str(state)) == ["session-end-10.hookinput", "session-end-9.hookinput"]
    hook_input.adopt(str(state))
    assert [r["session_id"] for r in spool_records(state)] == ["earlier", "later"]


def test_adopted_again_after_a_crash_it_is_still_one_record(state: Path) -> None:
    """Killed between writing the record and removing the input: the next exporter writes the same record."""
    path = spool_input(state, "session-end-7", session_input("SessionEnd", "s-1", None), 10**18)
    kept = path.with_name("kept")
    shutil.copy2(path, kept)
    hook_input.adopt(str(state))
    os.replace(kept, path)
    hook_input.adopt(str(state))
    assert [r["session_id"] for r in spool_records(state)] == ["s-1"]


def test_a_session_start_waits_for_an_export_of_its_own(state: Path) -> None:
    spool_input(state, "session-start-3", session_input("SessionStart", "s-1", None), 10**18)
    hook_input.adopt(str(state))
    [name] = spool.pending(str(state))
    assert name.endswith(spool.NO_WAKE_SUFFIX) and not spool.has_work(str(state))


def test_input_that_is_no_event_leaves_nothing(state: Path) -> None:
    spool_input(state, "session-end-5", {**session_input("SessionEnd", "s-1", None), "hook_event_name": "Stop"}, 10**18)
    assert hook_input.adopt(str(state)) == []
    assert spool.pending(str(state)) == [] and spool.hook_inputs(str(state)) == []
    assert not (state / spool.REJECTED_DIR).exists()


def test_input_that_does_not_parse_yet_may_be_being_written(state: Path) -> None:
    path = spool_input(state, "session-end-8", {}, time.time_ns())
    path.write_bytes(b'{"session_id": "s-1", "hook_e')  # the shell's printf has not finished
    assert hook_input.adopt(str(state)) == []
    assert spool.hook_inputs(str(state)) == ["session-end-8.hookinput"] and not (state / spool.REJECTED_DIR).exists()
    path.write_text(json.dumps(session_input("SessionEnd", "s-1", None)))
    assert hook_input.adopt(str(state)) == []
    assert [r["session_id"] for r in spool_records(state)] == ["s-1"]


def test_bad_input_is_set_aside_with_its_reason(state: Path) -> None:
    path = spool_input(state, "session-end-6", {}, 10**18)
    path.write_bytes(b'{"session_id": "s-1", "hook_event_name": "SessionE')
    os.utime(path, ns=(10**18, 10**18))  # long enough ago to have been written whole
    [problem] = hook_input.adopt(str(state))
    assert spool.pending(str(state)) == [] and spool.hook_inputs(str(state)) == []
    why = (state / spool.REJECTED_DIR / "session-end-6.hookinput.why").read_text()
    assert "hook input is not JSON" in why
    assert "hook input is not JSON" in problem and "set aside" in problem


def test_one_adopter_at_a_time(state: Path) -> None:
    """The wake and the exporter may both look: while one adopts, the other leaves the inputs to it."""
    from otel_metrics import lock

    spool_input(state, "session-end-4", session_input("SessionEnd", "s-1", None), 10**18)
    fd = lock.try_lock(str(state / spool.SPOOL_DIR / hook_input.ADOPT_LOCK_FILE))
    assert fd is not None
    try:
        assert hook_input.adopt(str(state)) is None
        assert spool.hook_inputs(str(state)) == ["session-end-4.hookinput"]
    finally:
        lock.release(fd)
    assert hook_input.adopt(str(state)) == []
    assert [r["session_id"] for r in spool_records(state)] == ["s-1"]


def test_input_that_will_never_parse_is_bad_input_even_where_json_is_not_imported() -> None:
    """The hooks' reader (fastjson) runs without `json` imported: CPython's scanner then raises no error of
    its own for an unfinished string or a bad escape (a SystemError), which must still read as not JSON."""
    code = (
        "import io\nfrom otel_metrics import hook_input\n"
        'for raw in (b\'{"session_id": "s", "prompt": "/x\', b\'{"a": "\\\\q"}\', b\'{"a" 1}\', b\'[1,\'):\n'
        "    try:\n        hook_input.read(io.BytesIO(raw))\n"
        "    except hook_input.BadInput as problem:\n        print(problem)\n"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("hook input is not JSON") for line in lines), done


def test_input_over_the_bound_is_removed_and_said_not_set_aside(state: Path) -> None:
    path = spool_input(state, "hook-3", {}, 10**18)
    path.write_bytes(b"x" * (hook_input.MAX_INPUT_BYTES + 1))
    [problem] = hook_input.adopt(str(state), written="hook-3.hookinput")
    assert "over" in problem and "bytes" in problem
    assert spool.hook_inputs(str(state)) == [] and not (state / spool.REJECTED_DIR).exists()


def test_whole_input_without_a_session_is_said_and_removed_at_once(state: Path) -> None:
    """Unlike input that does not parse yet, it cannot be being written: no wait, and nothing kept (a prompt)."""
    spool_input(state, "hook-4", {"hook_event_name": "UserPromptExpansion", "prompt": "/x:y secret"}, time.time_ns())
    [problem] = hook_input.adopt(str(state))
    assert "without session_id" in problem
    assert spool.hook_inputs(str(state)) == [] and not (state / spool.REJECTED_DIR).exists()
