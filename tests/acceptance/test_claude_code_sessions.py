"""Whole sessions of the real Claude Code CLI with our plugin: what reaches /events and /sessions.

Each test scripts the model (fake_api), runs `claude -p` with `--plugin-dir plugin` and the test
plugin, and compares whole payloads at the reference endpoint, reached through the forwarder.
"""

from __future__ import annotations

import time

from claude_cli import PLUGIN_DIR, TEST_PLUGIN_DIR, finish_claude, run_claude, start_claude, transcript_session_ids
from expectations import anonymous_id, by_session, expected_event, expected_session, plugin_data_dir
from fake_api import Script, ToolCall, text, tools
from pipeline import Forwarder, free_port

PLUGINS = (PLUGIN_DIR, TEST_PLUGIN_DIR)


def _assert_ok(run) -> None:
    assert run.returncode == 0, f"claude -p failed ({run.returncode}): {run.stderr}"
    assert transcript_session_ids(run.transcript) == [run.session_id]


def test_typed_slash_command(fake_api, endpoint, forwarder, workspace):
    """`/testkit:hello Ada Lovelace` typed by the user; state in CLAUDE_PLUGIN_DATA as Claude Code sets it."""
    prompt = "/testkit:hello Ada Lovelace"
    fake_api.script = Script({"Say hello to Ada Lovelace": [text("Hello, Ada Lovelace!")]})

    run = run_claude(prompt, workspace.env(fake_api, forwarder.url, state_in_env=False), workspace.project)

    _assert_ok(run)
    assert run.result["result"] == "Hello, Ada Lovelace!"  # the test plugin's command really ran
    state = plugin_data_dir(workspace.home)
    [event] = endpoint.wait_for("events", 1)
    user_id = anonymous_id(state)  # the exporter creates it: read once something arrived
    assert event == expected_event(event, run, "slash_command", "testkit:hello", len(prompt), user_id)
    [session] = endpoint.wait_for("sessions", 1)
    assert session == expected_session(run, user_id, workspace.scratch)


def test_skill_called_by_model(fake_api, endpoint, forwarder, workspace):
    """The model calls the Skill tool: PreToolUse(Skill) is one `skill` event; the plain prompt is none."""
    fake_api.script = Script(
        {
            "give me a summary": [
                tools(ToolCall("Skill", {"skill": "testkit:summarize", "args": "private words"})),
                text("We talked about summaries."),
            ]
        }
    )

    run = run_claude("Please give me a summary of our chat", workspace.env(fake_api, forwarder.url), workspace.project)

    _assert_ok(run)
    assert run.result["result"] == "We talked about summaries."
    [event] = endpoint.wait_for("events", 1)
    user_id = anonymous_id(workspace.state)
    assert event == expected_event(event, run, "skill", "testkit:summarize", 0, user_id)
    [session] = endpoint.wait_for("sessions", 1)
    assert session == expected_session(run, user_id, workspace.scratch)
    assert session["total_tool_calls"] == 1


def test_tool_errors_and_subagent(fake_api, endpoint, forwarder, workspace):
    """Two Bash calls (one fails) and an Agent subagent with its own Bash call, in a separate transcript."""
    fake_api.script = Script(
        {
            "check the build": [
                tools(
                    ToolCall("Bash", {"command": "echo building", "description": "Print a word"}),
                    ToolCall("Bash", {"command": "exit 3", "description": "Fail on purpose"}),
                ),
                tools(
                    ToolCall(
                        "Agent",
                        {
                            "description": "Inspect logs",
                            "prompt": "SUBAGENT: inspect the logs",
                            "subagent_type": "general-purpose",
                        },
                    )
                ),
                text("The build failed once."),
            ],
            "SUBAGENT: inspect the logs": [
                tools(ToolCall("Bash", {"command": "echo logs", "description": "Print logs"})),
                text("Logs look fine."),
            ],
        }
    )

    run = run_claude("Please check the build", workspace.env(fake_api, forwarder.url), workspace.project)

    _assert_ok(run)
    assert run.result["result"] == "The build failed once."
    subagents = sorted((run.transcript.parent / run.session_id / "subagents").glob("*.jsonl"))
    assert len(subagents) == 1, subagents
    [session] = endpoint.wait_for("sessions", 1)
    user_id = anonymous_id(workspace.state)
    assert session == expected_session(run, user_id, workspace.scratch)
    # What the scripted model did, counted by hand: 3 main requests and 2 subagent requests of 120/30/7 tokens.
    counted = {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 3,
        "total_tool_calls": 4,
        "bash_call_count": 3,
        "tool_error_count": 1,
        "had_errors": True,
        "total_input_tokens": 600,
        "total_output_tokens": 150,
        "cache_read_tokens": 35,
    }
    assert {key: session[key] for key in counted} == counted
    assert "cache_creation_tokens" not in session
    assert endpoint.wait_for("events", 0) == []


def test_two_sessions_in_parallel(fake_api, endpoint, forwarder, workspace):
    """Two `claude -p` at once in one project and one state directory: one user, two sessions, no mix-up."""
    fake_api.script = Script(
        {
            "Say hello to Grace": [text("Hello, Grace!")],
            "summary of the parallel run": [
                tools(ToolCall("Skill", {"skill": "testkit:summarize"})),
                text("Parallel summary."),
            ],
        }
    )
    env = workspace.env(fake_api, forwarder.url)
    command_prompt = "/testkit:hello Grace"
    started = time.time()
    procs = [
        start_claude(command_prompt, env, workspace.project, PLUGINS),
        start_claude("Give me a summary of the parallel run", env, workspace.project, PLUGINS),
    ]
    command_run, skill_run = (finish_claude(proc, started, env, workspace.project, 120) for proc in procs)

    for run in (command_run, skill_run):
        _assert_ok(run)
    assert command_run.session_id != skill_run.session_id
    events = by_session(endpoint.wait_for("events", 2))
    user_id = anonymous_id(workspace.state)
    assert events == {
        command_run.session_id: expected_event(
            events.get(command_run.session_id, {}),
            command_run,
            "slash_command",
            "testkit:hello",
            len(command_prompt),
            user_id,
        ),
        skill_run.session_id: expected_event(
            events.get(skill_run.session_id, {}), skill_run, "skill", "testkit:summarize", 0, user_id
        ),
    }
    sessions = by_session(endpoint.wait_for("sessions", 2))
    assert sessions == {
        run.session_id: expected_session(run, user_id, workspace.scratch) for run in (command_run, skill_run)
    }


def test_forwarder_down_then_up(fake_api, endpoint, tmp_path, workspace):
    """The collector is down for a whole session; once it is up, the next session's start delivers everything."""
    port = free_port()
    fake_api.script = Script({"Say hello to Offline": [text("Hello, Offline!")], "just say hi": [text("Hi.")]})
    env = workspace.env(fake_api, f"http://127.0.0.1:{port}")
    prompt = "/testkit:hello Offline"

    offline = run_claude(prompt, env, workspace.project)

    _assert_ok(offline)
    assert endpoint.stored("events") == [] and endpoint.stored("sessions") == []
    forwarder = Forwarder(tmp_path, endpoint.url, port)
    try:
        online = run_claude("Please just say hi", env, workspace.project)
        _assert_ok(online)
        [event] = endpoint.wait_for("events", 1)
        user_id = anonymous_id(workspace.state)
        # The event keeps the second its hook fired, during the offline session, not the time it was sent.
        assert event == expected_event(event, offline, "slash_command", "testkit:hello", len(prompt), user_id)
        sessions = by_session(endpoint.wait_for("sessions", 2))
        assert sessions == {
            run.session_id: expected_session(run, user_id, workspace.scratch) for run in (offline, online)
        }
    finally:
        forwarder.stop()
