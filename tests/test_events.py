"""The event rules: what is a slash command, what is a skill, and what is nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_metrics.events import SKILL, SLASH_COMMAND, classify, is_command_name


def prompt(text: object) -> dict:
    return {"hook_event_name": "UserPromptSubmit", "session_id": "s", "prompt": text}


def skill(tool_input: object, tool_name: str = "Skill") -> dict:
    return {"hook_event_name": "PreToolUse", "session_id": "s", "tool_name": tool_name, "tool_input": tool_input}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("/jira:solve ABC-1", "jira:solve"),
        ("/help", "help"),
        ("/a.b_c-d:e1:f2", "a.b_c-d:e1:f2"),
        ("/jira:solve\tABC", "jira:solve"),
        ("/jira:solve\nline two", "jira:solve"),
        ("/9lives", "9lives"),
    ],
)
def test_slash_commands(text: str, name: str) -> None:
    assert classify(prompt(text)) == (SLASH_COMMAND, name, len(text))


@pytest.mark.parametrize(
    "text",
    [
        "/usr/bin/tool crashes",  # a path, not a command
        "hello /jira:solve",
        " /jira:solve",  # does not start with /
        "/",
        "/ jira",
        "/:x",
        "/x:",
        "/x::y",
        "/-x",
        "/.x",
        "/jiré:solve",  # ASCII only
        "",
        None,
        42,
        ["/x"],
    ],
)
def test_not_slash_commands(text: object) -> None:
    assert classify(prompt(text)) is None


def test_prompt_length_counts_characters_not_bytes() -> None:
    text = "/cmd ünïcödé ✓"
    assert classify(prompt(text)) == (SLASH_COMMAND, "cmd", 14)


@pytest.mark.parametrize(
    ("tool_input", "name"),
    [
        ({"skill": "pdf:make"}, "pdf:make"),
        ({"skill": "pdf:make", "args": "secret"}, "pdf:make"),
        ({"command": "/prow-job:analyze"}, "prow-job:analyze"),  # older Claude Code
        ({"command": "legacy"}, "legacy"),
        ({"skill": "/lead"}, "lead"),
    ],
)
def test_skills(tool_input: dict, name: str) -> None:
    assert classify(skill(tool_input)) == (SKILL, name, 0)


@pytest.mark.parametrize(
    "hook_input",
    [
        skill({"skill": "pdf:make"}, tool_name="Bash"),
        skill({"command": "ls -la"}, tool_name="Bash"),
        skill("pdf:make"),  # tool_input a string
        skill({"skill": "bad name"}),
        skill({"skill": 3}),
        skill({}),
        skill(None),
        {"hook_event_name": "Stop", "session_id": "s"},
    ],
)
def test_not_skills(hook_input: dict) -> None:
    assert classify(hook_input) is None


SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True)


@given(st.lists(SEGMENT, min_size=1, max_size=4))
def test_every_well_formed_name_is_accepted(segments: list) -> None:
    assert is_command_name(":".join(segments))


@given(st.text())
def test_name_rule_matches_its_regex(name: str) -> None:
    import re

    expected = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9][A-Za-z0-9._-]*)*", name, re.ASCII)
    assert is_command_name(name) == (expected is not None)
