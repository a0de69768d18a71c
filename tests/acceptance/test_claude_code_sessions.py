"""Whole sessions of the real Claude Code CLI with our plugin: what reaches /events and /sessions.

Each test scripts the model (fake_api), runs `claude -p` with `--plugin-dir plugin` and the test
plugin, and compares whole payloads at the reference endpoint, reached through the forwarder.
"""

from __future__ import annotations

import json
import time

from support.claude_cli import (
    PLUGIN_DIR,
    TEST_PLUGIN_DIR,
    finish_claude,
    run_claude,
    start_claude,
    transcript_session_ids,
)
from support.claude_session_expectations import (
    by_session,
    counts,
    expected_event,
    expected_session,
    file_sizes,
    in_order,
    plugin_data_dir,
    run_part,
    written_since,
)
from support.fake_messages_api import INPUT_TOKENS, Script, ToolCall, text, tools
from support.legacy_payloads import anonymous_id, session_summary
from support.processes import free_port

PLUGINS = (PLUGIN_DIR, TEST_PLUGIN_DIR)


def _assert_ok(run) -> None:
    assert run.returncode == 0, f"claude -p failed ({run.returncode}): {run.stderr}"
    assert transcript_session_ids(run.transcript) == [run.session_id]


def test_typed_slash_command(fake_api, endpoint_server, forwarder, workspace):
    """`/testkit:hello Ada Lovelace` typed by the user; state in CLAUDE_PLUGIN_DATA as Claude Code sets it."""
    prompt = "/testkit:hello Ada Lovelace"
    fake_api.script = Script({"Say hello to Ada Lovelace": [text("Hello, Ada Lovelace!")]})

    run = run_claude(prompt, workspace.env(fake_api, forwarder.url, state_in_env=False), workspace.project)

    _assert_ok(run)
    assert run.result["result"] == "Hello, Ada Lovelace!"  # the test plugin's command really ran
    state = plugin_data_dir(workspace.home)
    [event] = endpoint_server.exactly("events", 1, workspace.delivered)
    user_id = anonymous_id(state)  # the exporter creates it: read once something arrived
    assert event == expected_event(event, run, "slash_command", "testkit:hello", len(prompt), user_id)
    [session] = endpoint_server.exactly("sessions", 1, workspace.delivered)
    assert session == expected_session(run, user_id, workspace.scratch)


def test_skill_called_by_model(fake_api, endpoint_server, forwarder, workspace):
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
    [event] = endpoint_server.exactly("events", 1, workspace.delivered)
    user_id = anonymous_id(workspace.state)
    assert event == expected_event(event, run, "skill", "testkit:summarize", 0, user_id)
    [session] = endpoint_server.exactly("sessions", 1, workspace.delivered)
    assert session == expected_session(run, user_id, workspace.scratch)
    assert session["total_tool_calls"] == 1


def test_tool_errors_and_subagent(fake_api, endpoint_server, forwarder, workspace):
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
    [session] = endpoint_server.exactly("sessions", 1, workspace.delivered)
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
    assert endpoint_server.exactly("events", 0, workspace.delivered) == []


def test_two_sessions_in_parallel(fake_api, endpoint_server, forwarder, workspace):
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
    events = by_session(endpoint_server.exactly("events", 2, workspace.delivered))
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
    sessions = by_session(endpoint_server.exactly("sessions", 2, workspace.delivered))
    assert sessions == {
        run.session_id: expected_session(run, user_id, workspace.scratch) for run in (command_run, skill_run)
    }


def test_forwarder_down_then_up(fake_api, endpoint_server, start_forwarder, workspace):
    """The collector is down for a whole session; once it is up, the next session's start delivers everything."""
    port = free_port()
    fake_api.script = Script({"Say hello to Offline": [text("Hello, Offline!")], "just say hi": [text("Hi.")]})
    env = workspace.env(fake_api, f"http://127.0.0.1:{port}")
    prompt = "/testkit:hello Offline"

    offline = run_claude(prompt, env, workspace.project)

    _assert_ok(offline)
    assert endpoint_server.stored("events") == [] and endpoint_server.stored("sessions") == []
    start_forwarder(endpoint_server.url, port=port)
    online = run_claude("Please just say hi", env, workspace.project)
    _assert_ok(online)
    [event] = endpoint_server.exactly("events", 1, workspace.delivered)
    user_id = anonymous_id(workspace.state)
    # The event keeps the second its hook fired, during the offline session, not the time it was sent.
    assert event == expected_event(event, offline, "slash_command", "testkit:hello", len(prompt), user_id)
    sessions = by_session(endpoint_server.exactly("sessions", 2, workspace.delivered))
    assert sessions == {run.session_id: expected_session(run, user_id, workspace.scratch) for run in (offline, online)}


def test_resumed_and_forked_session_one_payload_per_run(fake_api, endpoint_server, forwarder, workspace, tmp_path):
    """A session; `--resume` of it with another command, a failing tool call and a subagent; then
    `--fork-session` of it calling a skill. Three session payloads, each what exactly its own run wrote
    gives, and the events of all three runs. The runs follow each other at once: the resume appends to
    the transcript while the exporter may still be reading the first run."""
    fake_api.script = Script(
        {
            # One conversation across the runs: a resumed or forked run sends the whole history.
            "Say hello to Ada Lovelace": [
                tools(ToolCall("Bash", {"command": "echo hello", "description": "Greet"})),
                text("Hello, Ada Lovelace!"),
                tools(ToolCall("Bash", {"command": "exit 3", "description": "Fail on purpose"})),
                tools(
                    ToolCall(
                        "Agent",
                        {
                            "description": "Check greeting",
                            "prompt": "SUBAGENT: check the greeting",
                            "subagent_type": "general-purpose",
                        },
                    )
                ),
                text("Hello, Grace!"),
                tools(ToolCall("Skill", {"skill": "testkit:summarize"})),
                text("We greeted two people."),
            ],
            "SUBAGENT: check the greeting": [
                tools(ToolCall("Bash", {"command": "echo fine", "description": "Check"})),
                text("The greeting is fine."),
            ],
        }
    )
    env = workspace.env(fake_api, forwarder.url)
    first_prompt, resumed_prompt = "/testkit:hello Ada Lovelace", "/testkit:hello Grace"

    first = run_claude(first_prompt, env, workspace.project)
    _assert_ok(first)
    after_first = file_sizes(first.transcript)
    resumed = run_claude(resumed_prompt, env, workspace.project, args=["--resume", first.session_id])
    _assert_ok(resumed)
    after_resumed = file_sizes(first.transcript)
    forked = run_claude(
        "Give me a summary", env, workspace.project, args=["--resume", first.session_id, "--fork-session"]
    )
    _assert_ok(forked)

    assert resumed.session_id == first.session_id != forked.session_id
    assert (resumed.result["result"], forked.result["result"]) == ("Hello, Grace!", "We greeted two people.")
    assert file_sizes(first.transcript) == after_resumed  # the fork wrote nothing into the session it forked
    assert set(after_resumed) - set(after_first) != set()  # the resumed run's subagent: a new file
    sessions = endpoint_server.exactly("sessions", 3, workspace.delivered)
    events = endpoint_server.exactly("events", 3, workspace.delivered)
    user_id = anonymous_id(workspace.state)
    parts = tmp_path / "parts"
    expected = [
        expected_session(first, user_id, workspace.scratch, transcript=run_part(first.transcript, {}, after_first,
                                                                                parts / "first")),
        expected_session(resumed, user_id, workspace.scratch, transcript=run_part(first.transcript, after_first,
                                                                                  after_resumed, parts / "resumed")),
        expected_session(forked, user_id, workspace.scratch, transcript=written_since(forked.transcript,
                                                                                      forked.started, parts / "fork")),
    ]  # fmt: skip
    assert in_order(sessions) == in_order(expected)
    # What the scripted model did, counted by hand. The resumed run: 3 main requests and 2 subagent ones;
    # the fork: 2 requests, its copy of the first two runs not counted.
    counted = [
        {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 3, "total_tool_calls": 3,
         "bash_call_count": 2, "tool_error_count": 1, "total_input_tokens": 5 * INPUT_TOKENS},
        {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 2, "total_tool_calls": 1,
         "bash_call_count": 0, "tool_error_count": 0, "total_input_tokens": 2 * INPUT_TOKENS},
    ]  # fmt: skip
    assert [{k: payload[k] for k in hand} for payload, hand in zip(expected[1:], counted)] == counted
    # Nothing counted twice, nothing lost: the two runs of the session add up to its whole transcript.
    whole = session_summary(first.transcript, workspace.scratch, "--reason", "other")
    assert {k: counts(expected[0])[k] + counts(expected[1])[k] for k in counts(whole)} == counts(whole)

    def event_of(run, prompt_length: int):
        found = [e for e in events if e["session_id"] == run.session_id and e["prompt_length"] == prompt_length]
        assert len(found) == 1, events
        return found[0]

    assert in_order(events) == in_order(
        [
            expected_event(event_of(first, len(first_prompt)), first, "slash_command", "testkit:hello",
                           len(first_prompt), user_id),
            expected_event(event_of(resumed, len(resumed_prompt)), resumed, "slash_command", "testkit:hello",
                           len(resumed_prompt), user_id),
            expected_event(event_of(forked, 0), forked, "skill", "testkit:summarize", 0, user_id),
        ]
    )  # fmt: skip


def test_compacted_session_counts_stay_exact(fake_api, endpoint_server, forwarder, workspace, tmp_path):
    """`/compact` in a resumed run, then `--continue`: the compaction's summary is no prompt and no turn,
    and the three runs' payloads add up to the whole transcript."""
    fake_api.script = Script(
        {
            "check the build": [
                tools(ToolCall("Bash", {"command": "echo building", "description": "Build"})),
                tools(ToolCall("Bash", {"command": "exit 3", "description": "Fail on purpose"})),
                text("The build failed once."),
            ]
        }
    )
    env = workspace.env(fake_api, forwarder.url)
    runs, sizes = [run_claude("Please check the build", env, workspace.project)], [{}]
    _assert_ok(runs[0])
    sizes.append(file_sizes(runs[0].transcript))
    for prompt, args in (("/compact", ["--resume", runs[0].session_id]), ("What next?", ["--continue"])):
        run = run_claude(prompt, env, workspace.project, args=args)
        _assert_ok(run)
        runs.append(run)
        sizes.append(file_sizes(runs[0].transcript))

    assert {run.session_id for run in runs} == {runs[0].session_id}
    assert any(json.loads(line).get("isCompactSummary") for line in runs[0].transcript.read_text().splitlines())
    sessions = endpoint_server.exactly("sessions", 3, workspace.delivered)
    user_id = anonymous_id(workspace.state)
    expected = [
        expected_session(run, user_id, workspace.scratch,
                         transcript=run_part(run.transcript, sizes[i], sizes[i + 1], tmp_path / f"run-{i}"))
        for i, run in enumerate(runs)
    ]  # fmt: skip
    assert in_order(sessions) == in_order(expected)
    compaction = expected[1]
    assert (compaction["user_message_count"], compaction["turn_count"], compaction["assistant_message_count"]) == (
        1, 0, 0  # the typed /compact is a prompt; its summary is not, and no assistant message answers it
    )  # fmt: skip
    whole = session_summary(runs[0].transcript, workspace.scratch, "--reason", "other")
    assert {k: sum(counts(e)[k] for e in expected) for k in counts(whole)} == counts(whole)
