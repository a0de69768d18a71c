"""The hook scripts as Claude Code runs them: silent, exit 0, and recording only what they should."""

from __future__ import annotations

import io
import json
import os
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_metrics import __version__, config, hook_input, spool
from otel_metrics.hook import main as hook_main
from support.plugin_hooks import (
    exporter_lock_held,
    hook_commands,
    hook_env,
    log_lines,
    prompt_input,
    run_hook,
    session_input,
    skill_input,
    spool_records,
)
from support.processes import wait_for

DEAD_COLLECTOR = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def exporter_held(state: Path):
    """We hold the state directory's exporter lock, so hooks only record."""
    with exporter_lock_held(state):
        yield


@pytest.fixture
def env(state: Path) -> dict:
    return hook_env(state, DEAD_COLLECTOR)


def assert_silent(result) -> None:
    assert result.returncode == 0
    assert result.stdout == b""


def test_slash_command_is_recorded_without_its_arguments(state: Path, env: dict) -> None:
    before = int(time.time())
    result = run_hook(prompt_input("/jira:solve SECRET-ARGUMENT"), env)
    after = int(time.time())
    assert_silent(result)
    [record] = spool_records(state)
    assert before <= record.pop("timestamp") <= after
    assert record == {
        "record": "event",
        "kind": "slash_command",
        "name": "jira:solve",
        "prompt_length": len("/jira:solve SECRET-ARGUMENT"),
        "session_id": "sess-1",
        "version": __version__,
        "os": "linux",
        "transcript_path": "/home/someone/.claude/projects/p/sess-1.jsonl",
    }
    assert "SECRET" not in (state / "spool").joinpath(next((state / "spool").iterdir()).name).read_text()


def test_skill_is_recorded(state: Path, env: dict) -> None:
    assert_silent(run_hook(skill_input("pdf:make", args="SECRET"), env))
    [record] = spool_records(state)
    assert (record["kind"], record["name"], record["prompt_length"]) == ("skill", "pdf:make", 0)


def test_two_events_in_the_same_second_are_two_records(state: Path, env: dict) -> None:
    for _ in range(2):
        assert_silent(run_hook(prompt_input("/x:y"), env))
    assert len(list(spool_records(state))) == 2


@pytest.mark.parametrize("text", ["hello there", "/usr/bin/tool crashes", "what about /jira:solve"])
def test_plain_prompts_record_nothing_and_log_nothing(state: Path, env: dict, text: str) -> None:
    assert_silent(run_hook(prompt_input(text), env))
    assert list(spool_records(state)) == []
    assert log_lines(state) == []


def test_other_tools_record_nothing(state: Path, env: dict) -> None:
    hook_input = skill_input("x")
    hook_input.update(tool_name="Bash", tool_input={"command": "rm -rf /"})
    assert_silent(run_hook(hook_input, env))
    assert list(spool_records(state)) == []


def test_session_end_is_recorded_with_its_reason(state: Path, env: dict, tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    assert_silent(run_hook(session_input("SessionEnd", "s-9", transcript, "logout"), env))
    [record] = wait_for(lambda: list(spool_records(state)), what="the background wake adopted the input")
    assert record.pop("time_ns") > 0
    assert record == {
        "record": "session_end",
        "session_id": "s-9",
        "transcript_path": str(transcript),
        "reason": "logout",
        "transcript_bytes": None,  # no transcript to measure
        "subagent_bytes": {},
    }


def test_session_end_records_the_sizes_of_the_transcripts_it_ends(state: Path, env: dict, tmp_path: Path) -> None:
    """Where this run's entries end: the exporter reads no further, whatever a resume appends meanwhile."""
    transcript = tmp_path / "t.jsonl"
    transcript.write_bytes(b"x" * 1234)
    subagents = tmp_path / "t" / "subagents"
    subagents.mkdir(parents=True)
    (subagents / "agent-a1.jsonl").write_bytes(b"y" * 56)
    (subagents / "agent-a1.meta.json").write_bytes(b"{}")  # not a transcript
    assert_silent(run_hook(session_input("SessionEnd", "s-9", transcript), env))
    [record] = wait_for(lambda: list(spool_records(state)), what="the background wake adopted the input")
    assert (record["transcript_bytes"], record["subagent_bytes"]) == (1234, {"agent-a1.jsonl": 56})


def test_session_start_is_recorded(state: Path, env: dict, tmp_path: Path) -> None:
    assert_silent(run_hook(session_input("SessionStart", "s-1", tmp_path / "t.jsonl"), env))
    [record] = spool_records(state)
    assert record["record"] == "session_start"


class HeldWake(NamedTuple):
    started: Path  # exists once scripts/run started its background interpreter
    release: Callable[[], None]


@pytest.fixture
def held_wake(env: dict, tmp_path: Path) -> Iterator[HeldWake]:
    """The hooks' interpreter held up until released: what the shell path does before any interpreter runs."""
    started, release = tmp_path / "started", tmp_path / "release"
    launcher = tmp_path / "python"
    launcher.write_text(
        f'#!/bin/sh\n: >"{started}"\nwhile [ ! -e "{release}" ]; do sleep 0.02; done\n'
        f'exec "{env["CLAUDE_METRICS_PYTHON"]}" "$@"\n'
    )
    launcher.chmod(0o755)
    env["CLAUDE_METRICS_PYTHON"] = str(launcher)
    yield HeldWake(started, release.touch)
    release.touch()


def test_session_end_waits_for_no_interpreter(state: Path, env: dict, held_wake: HeldWake, tmp_path: Path) -> None:
    """The hook has returned while its interpreter is still held up: the input is in the spool as it came,
    and the interpreter started in the background turns it into its record."""
    data = json.dumps(session_input("SessionEnd", "s-9", tmp_path / "t.jsonl", "logout")).encode()
    assert_silent(run_hook(data, env, event="SessionEnd"))
    wait_for(held_wake.started.exists, what="the background wake started")
    [spooled] = (state / "spool").glob("*" + spool.HOOK_INPUT_SUFFIX)
    assert spooled.read_bytes() == data
    assert spooled.stat().st_mode & 0o077 == 0  # the user's alone
    assert list(spool_records(state, adopted=False)) == [] and log_lines(state) == []
    assert spool.has_work(str(state))  # a later hook wakes an exporter for it, should this wake be lost
    held_wake.release()
    [record] = wait_for(lambda: list(spool_records(state)), what="the background wake adopted the input")
    assert (record["record"], record["session_id"]) == ("session_end", "s-9")
    assert not list((state / "spool").glob("*" + spool.HOOK_INPUT_SUFFIX))
    # The exporter lock is held (by this test): the wake pokes the running exporter instead.
    wait_for(lambda: spool.last_poke(str(state)), what="the running exporter poked")


def test_input_without_session_id_records_nothing_and_says_so(state: Path, env: dict) -> None:
    hook_input = prompt_input("/jira:solve")
    del hook_input["session_id"]
    assert_silent(run_hook(hook_input, env))
    assert list(spool_records(state)) == []
    [line] = log_lines(state)
    assert "without session_id" in line


def test_disabled_records_nothing(state: Path, env: dict, tmp_path: Path) -> None:
    env["CLAUDE_METRICS_DISABLED"] = "1"
    assert_silent(run_hook(prompt_input("/jira:solve"), env))
    assert_silent(run_hook(session_input("SessionEnd", "s-1", tmp_path / "t.jsonl"), env))
    assert not (state / "spool").exists()


def test_verbose_logs_activity(state: Path, env: dict) -> None:
    env["CLAUDE_METRICS_VERBOSE"] = "yes"
    run_hook(prompt_input("/jira:solve SECRET"), env)
    run_hook(prompt_input("plain SECRET"), env)
    run_hook(session_input("SessionEnd", "s-1", None), env)  # run.py's path, which says what it did
    lines = log_lines(state)
    assert len(lines) == 3
    assert "recorded event slash_command jira:solve" in lines[0]
    assert "not an event" in lines[1]
    assert "recorded session_end" in lines[2]
    assert not any("SECRET" in line for line in lines)


BAD_INPUTS = {
    "malformed JSON": b'{"session_id": "s", "prompt": "/x',
    "a JSON array": b'["/jira:solve"]',
    "binary garbage": bytes(range(256)) * 4,
    "not UTF-8": b'{"session_id": "s", "prompt": "/x \xff"}',
    "empty": b"",
    "a number": b"42",
    "prompt a number": json.dumps(prompt_input(42)).encode(),
    "tool_input a string": json.dumps({**skill_input("x"), "tool_input": "x"}).encode(),
    "session_id a number": json.dumps({**prompt_input("/x"), "session_id": 7}).encode(),
    "nested too deep": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_0_silently_and_logs_one_line(state: Path, env: dict, name: str) -> None:
    result = run_hook(BAD_INPUTS[name], env)
    assert_silent(result)
    assert result.stderr == b""
    assert list(spool_records(state)) == []
    lines = log_lines(state)
    assert len(lines) <= 1
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_session_end_input_is_set_aside_when_adopted(
    state: Path, env: dict, held_wake: HeldWake, name: str
) -> None:
    assert_silent(run_hook(BAD_INPUTS[name], env, event="SessionEnd"))
    for path in (state / "spool").glob("*" + spool.HOOK_INPUT_SUFFIX):  # long enough ago to be written whole
        os.utime(path, ns=(10**18, 10**18))
    assert len(hook_input.adopt(str(state)) or ["held"]) <= 1
    assert list(spool_records(state)) == [] and not list((state / "spool").glob("*" + spool.HOOK_INPUT_SUFFIX))
    assert len(list((state / spool.REJECTED_DIR).glob("*" + spool.HOOK_INPUT_SUFFIX))) <= 1


def test_ten_megabytes_of_stdin(state: Path, env: dict) -> None:
    result = run_hook(b"x" * (10 * 1024 * 1024), env)
    assert_silent(result)
    assert list(spool_records(state)) == []  # (once the background wake is done with it)
    assert len(wait_for(lambda: log_lines(state), what="the wake said what was wrong")) == 1


def test_huge_slash_command_prompt_is_still_one_event(state: Path, env: dict) -> None:
    text = "/paste:it " + "y" * (5 * 1024 * 1024)
    assert_silent(run_hook(prompt_input(text), env))
    [record] = spool_records(state)
    assert record["prompt_length"] == len(text)


def test_state_directory_that_cannot_be_used(tmp_path: Path) -> None:
    """A plain file where the state directory should be: the record goes to the fallback, said once there."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    env = hook_env(not_a_dir, DEAD_COLLECTOR)
    fallback = Path(config.fallback_state_dir(env))
    assert fallback.is_relative_to(tmp_path / "cache")
    fallback.mkdir(parents=True)
    with exporter_lock_held(fallback):
        for name in ("/jira:solve", "/jira:close"):
            result = run_hook(prompt_input(name), env)
            assert_silent(result)
            assert result.stderr == b""
        # The shell entry cannot spool SessionEnd there either: run.py records it in the fallback.
        assert_silent(run_hook(session_input("SessionEnd", "s-1", None), env))
    assert [r.get("name", r["record"]) for r in spool_records(fallback)] == ["jira:solve", "jira:close", "session_end"]
    [line] = log_lines(fallback)
    assert f"cannot record in {not_a_dir} (Not a directory): recording in {fallback} instead" in line


def test_once_the_state_directory_can_be_used_again_the_fallback_is_sent(state: Path, tmp_path: Path) -> None:
    """Records the fallback took while the state directory could not be written wait for the next hook."""
    env = hook_env(state, DEAD_COLLECTOR)
    fallback = Path(config.fallback_state_dir(env))
    spool.append(str(fallback), {"record": "event", "name": "jira:solve"}, wake=True)
    with exporter_lock_held(fallback):  # the fallback's exporter runs: the hook pokes it
        assert_silent(run_hook(session_input("SessionStart", "s-2", tmp_path / "t.jsonl"), env))
        wait_for(lambda: spool.last_poke(str(fallback)), what="the fallback's exporter poked")
    assert [r["record"] for r in spool_records(state)] == ["session_start"]


def test_no_usable_state_directory_at_all_stays_silent(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    (tmp_path / "cache").write_text("")  # the fallback's parent is a file too
    result = run_hook(prompt_input("/jira:solve"), hook_env(not_a_dir, DEAD_COLLECTOR))
    assert_silent(result)
    assert result.stderr == b""


@pytest.mark.parametrize("event", ["UserPromptExpansion", "SessionEnd"])
def test_full_disk(state: Path, env: dict, event: str) -> None:
    import subprocess

    def no_room() -> None:  # writes fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))

    hook_input = prompt_input("/jira:solve") if event == "UserPromptExpansion" else session_input(event, "s-1", None)
    result = subprocess.run(
        ["/bin/sh", "-c", hook_commands()[event]],
        input=json.dumps(hook_input).encode(),
        capture_output=True,
        env=env,
        preexec_fn=no_room,
        timeout=20,
    )
    assert_silent(result)
    assert list(spool_records(state)) == []
    assert not list((state / "spool").glob("*.hookinput"))
    assert not list((state / "spool").glob(".*.tmp"))  # no half-written record left behind


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HOOKISH = st.fixed_dictionaries(
    {},
    optional={
        "session_id": st.text(max_size=12) | st.integers(),
        "hook_event_name": st.sampled_from(
            ["UserPromptExpansion", "UserPromptSubmit", "PreToolUse", "SessionStart", "SessionEnd"]
        )
        | st.text(max_size=8),
        "prompt": st.text(max_size=30).map(lambda s: "/" + s) | JSON_VALUES,
        "tool_name": st.just("Skill") | st.text(max_size=6),
        "tool_input": st.fixed_dictionaries({}, optional={"skill": JSON_VALUES, "command": JSON_VALUES}) | JSON_VALUES,
        "transcript_path": JSON_VALUES,
        "reason": JSON_VALUES,
    },
)


@contextmanager
def own_state() -> Iterator[Path]:
    """A state directory of the example's own (pytest's tmp_path is shared by all examples), its exporter
    lock held so that the hook only records."""
    with tempfile.TemporaryDirectory() as directory, exporter_lock_held(Path(directory)):
        yield Path(directory)


def _run_in_process(state: Path, data: bytes, capsys) -> None:
    env = {"CLAUDE_METRICS_DIR": str(state), "CLAUDE_METRICS_OTLP_ENDPOINT": DEAD_COLLECTOR}
    hook_main.handle(io.BytesIO(data), env)  # must not raise
    assert capsys.readouterr().out == ""


# capsys is read (and so emptied) by each example: shared by them, it is still each one's own output.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(capsys, data: bytes) -> None:
    with own_state() as state:
        _run_in_process(state, data, capsys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOOKISH | JSON_VALUES)
def test_fuzz_arbitrary_json(capsys, value: object) -> None:
    with own_state() as state:
        _run_in_process(state, json.dumps(value).encode(), capsys)
        for record in spool_records(state):  # whatever was recorded is well-formed
            assert record["record"] in ("event", "session_start", "session_end")
            assert isinstance(record["session_id"], str) and record["session_id"]


@pytest.mark.parametrize(
    "session_id",
    ["s" * (30 * 1024 * 1024), "x" * 129, "with space", "lone \ud800 surrogate", "tab\there", "naïve"],
    ids=["30 MB", "129 characters", "a space", "a lone surrogate", "a tab", "non-ASCII"],
)
def test_an_unusable_session_id_records_nothing_and_says_so(state: Path, env: dict, session_id: str) -> None:
    data = json.dumps(prompt_input("/jira:solve", session_id=session_id)).encode()
    result = run_hook(data, env, event="UserPromptSubmit")
    assert_silent(result)
    assert list(spool_records(state)) == []
    [line] = wait_for(lambda: log_lines(state), what="the wake said what was wrong")  # (it says so after)
    assert "unusable session_id" in line and session_id[:20] not in line


def test_field_bounds(state: Path, env: dict, tmp_path: Path) -> None:
    assert_silent(run_hook(prompt_input("/" + "n" * 129), env))  # a name longer than the contract: not an event
    assert list(spool_records(state)) == []
    end = session_input("SessionEnd", "s-1", None, reason="r" * 33)
    end["transcript_path"] = "/" + "p" * 5000
    assert_silent(run_hook(end, env))
    [record] = wait_for(lambda: list(spool_records(state)), what="the background wake adopted the input")
    assert (record["reason"], record["transcript_path"]) == (None, None)
