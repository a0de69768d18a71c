"""Nothing personal leaves the machine: prompt text, arguments, paths, transcript
content, user and host names appear in no byte the hooks send (OTLP) and in no
payload the forwarder posts."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

import pytest

from otel_metrics import schema
from support.otlp_sink import OtlpSink
from support.plugin_hooks import delivered, hook_env, prompt_input, run_hook, session_input, skill_input
from support.processes import wait_for

MARKERS = {
    "prompt": "MARKERPROMPT",
    "argument": "MARKERARG",
    "skill argument": "MARKERSKILLARG",
    "cwd": "MARKERCWD",
    "path": "MARKERPATH",
    "transcript": "MARKERCONTENT",
    "user": "MARKERUSER",
    "host": "MARKERHOST",
}
SESSION_ID = "privacy-session"


def transcript_with_markers(directory: Path) -> Path:
    """A small Claude Code transcript whose every free-text field carries a marker."""
    path = directory / f"{MARKERS['path']}.jsonl"
    common = {"sessionId": SESSION_ID, "cwd": f"/home/{MARKERS['user']}/{MARKERS['cwd']}", "isSidechain": False}
    entries = [
        {**common, "type": "user", "timestamp": "2026-01-01T10:00:00.000Z",
         "message": {"role": "user", "content": f"/jira:solve {MARKERS['argument']} {MARKERS['transcript']}"}},
        {**common, "type": "assistant", "timestamp": "2026-01-01T10:00:05.000Z", "requestId": "r1",
         "message": {"id": "m1", "model": "claude-x", "role": "assistant", "usage": {"input_tokens": 5},
                     "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                  "input": {"command": f"cat /home/{MARKERS['user']}/{MARKERS['transcript']}"}}]}},
        {**common, "type": "user", "timestamp": "2026-01-01T10:00:06.000Z",
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                                  "content": MARKERS["transcript"]}]}},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return path


def run_session(env: dict, transcript: Path) -> None:
    cwd = f"/home/{MARKERS['user']}/{MARKERS['cwd']}"
    prompt = prompt_input(f"/jira:solve {MARKERS['argument']} {MARKERS['prompt']}", session_id=SESSION_ID)
    skill = skill_input("pdf:extract", session_id=SESSION_ID, args=MARKERS["skill argument"])
    plain = prompt_input(f"tell me about {MARKERS['prompt']}", session_id=SESSION_ID)
    for hook_input in (prompt, skill, plain):
        hook_input.update(cwd=cwd, transcript_path=str(transcript))
    end = session_input("SessionEnd", SESSION_ID, transcript, "logout")
    end["cwd"] = cwd
    for hook_input in (prompt, skill, plain):
        assert run_hook(hook_input, env).stdout == b""
    assert run_hook(end, env).stdout == b""


def personal_strings() -> list:
    real = [getpass.getuser(), socket.gethostname()]
    return list(MARKERS.values()) + [s for s in real if len(s) >= 4]  # "root" is too common to search


@pytest.fixture
def leaky_env(state: Path):
    """What a real machine has: a user, a host, OTEL_RESOURCE_ATTRIBUTES naming them."""
    extra = {
        "USER": MARKERS["user"],
        "LOGNAME": MARKERS["user"],
        "HOSTNAME": MARKERS["host"],
        "OTEL_RESOURCE_ATTRIBUTES": f"host.name={MARKERS['host']},user.name={MARKERS['user']}",
        "OTEL_SERVICE_NAME": MARKERS["host"],
    }
    return state, extra


def test_otlp_bytes_from_the_hooks_carry_nothing_personal(leaky_env, sink: OtlpSink, tmp_path: Path) -> None:
    state, extra = leaky_env
    run_session(hook_env(state, sink.url, **extra), transcript_with_markers(tmp_path))
    wait_for(lambda: sink.event_count() == 2 and len(sink.spans()) == 1, 60)
    wait_for(lambda: delivered(state), 60)  # all the hooks sent is in: nothing more to come
    wire = b"".join(body for _, body in sink.requests)
    for text in personal_strings():
        assert text.encode() not in wire, text
    for request in sink.metrics:
        for rm in request.resource_metrics:
            assert sorted(kv.key for kv in rm.resource.attributes) == sorted(schema.RESOURCE_KEYS)
    for request in sink.traces:
        for rs in request.resource_spans:
            assert sorted(kv.key for kv in rs.resource.attributes) == sorted(schema.RESOURCE_KEYS)


def test_legacy_payloads_carry_nothing_personal(leaky_env, tmp_path: Path, endpoint_server, start_forwarder) -> None:
    state, extra = leaky_env
    forwarder = start_forwarder(endpoint_server.url)
    run_session(hook_env(state, forwarder.url, **extra), transcript_with_markers(tmp_path))
    wait_for(lambda: len(endpoint_server.events()) == 2 and len(endpoint_server.sessions()) == 1, 60)
    posted = json.dumps(endpoint_server.events() + endpoint_server.sessions())
    for text in personal_strings():
        assert text not in posted, text
    assert {p["name"] for p in endpoint_server.events()} == {"jira:solve", "pdf:extract"}
