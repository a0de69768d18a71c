"""The reference endpoint as a process: validates, stores exactly what it accepted, lists it in order."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Iterator

import pytest
import requests

from otel_metrics.payloads import canonical_text, mac
from support.legacy_payloads import EVENT, SESSION
from support.processes import EndpointProcess, wait_for
from support.raw_http import Tricklers, answers_on, connect_all_while_stopped, loopback_session


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with loopback_session() as session:
        yield session


def test_valid_payloads_are_stored_and_listed_in_arrival_order(endpoint_server: EndpointProcess, http) -> None:
    second = {**EVENT, "type": "slash_command", "name": "jira:solve", "prompt_length": 17}
    for path, payload in [("events", EVENT), ("sessions", SESSION), ("events", second), ("events", EVENT)]:
        response = http.post(f"{endpoint_server.url}/{path}", json=payload, timeout=10)
        assert (response.status_code, response.json()) == (200, {"status": "stored"})
    assert endpoint_server.events() == [EVENT, second, EVENT]  # the same payload twice is two payloads
    assert endpoint_server.sessions() == [SESSION]


def test_what_is_listed_is_the_validated_payload_in_its_canonical_text(endpoint_server: EndpointProcess, http) -> None:
    """Not the text received: whatever its spacing, order or escapes, what was checked is what is kept."""
    text = json.dumps(EVENT, indent=3).replace('"abc123"', '"\\u0061bc123"')
    assert http.post(f"{endpoint_server.url}/events", data=text, timeout=10).status_code == 200
    listed = http.get(f"{endpoint_server.url}/events", timeout=10)
    assert listed.headers["Content-Type"] == "application/json"
    assert listed.text == f"[{canonical_text(EVENT)}]"
    assert listed.text.startswith('[{"engine":"claude","mac":"')  # keys sorted, no spaces


def test_invalid_payloads_are_refused_with_the_problems(endpoint_server: EndpointProcess, http) -> None:
    bad_event = {**EVENT, "mac": "0" * 64, "prompt_length": False}
    response = http.post(f"{endpoint_server.url}/events", json=bad_event, timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid payload",
        "problems": ["prompt_length must be an integer, not a boolean", "mac is not sha256(session_id + timestamp)"],
    }
    # A session payload is not an event, nor the other way round.
    response = http.post(f"{endpoint_server.url}/sessions", json=EVENT, timeout=10)
    assert response.status_code == 400
    assert response.json()["problems"][:2] == [
        "missing keys: assistant_message_count, bash_call_count, end_timestamp, exit_reason, file_edit_count, "
        "file_read_count, file_write_count, glob_call_count, grep_call_count, had_errors, session_duration, "
        "start_timestamp, tool_error_count, total_tool_calls, turn_count, user_message_count, "
        "web_fetch_call_count, web_search_call_count",
        "unexpected keys: name, prompt_length, timestamp, type, version",
    ]
    assert endpoint_server.events() == []
    assert endpoint_server.sessions() == []
    assert "refused a payload for /events" in endpoint_server.log()


@pytest.mark.parametrize(
    "body, error",
    [
        (b"{", "body is not UTF-8 JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"\xff", "body is not UTF-8 JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
def test_bodies_that_are_not_json(endpoint_server: EndpointProcess, http, body: bytes, error: str) -> None:
    response = http.post(f"{endpoint_server.url}/events", data=body, timeout=10)
    assert (response.status_code, response.json()) == (400, {"error": error})


def test_a_json_array_is_not_a_payload(endpoint_server: EndpointProcess, http) -> None:
    response = http.post(f"{endpoint_server.url}/events", json=[EVENT], timeout=10)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid payload", "problems": ["payload must be a JSON object, not an array"]},
    )


def test_unknown_paths_and_oversized_bodies(endpoint_server: EndpointProcess, http) -> None:
    response = http.post(f"{endpoint_server.url}/event", json=EVENT, timeout=10)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "no such endpoint /event; use /events or /sessions"},
    )
    response = http.get(f"{endpoint_server.url}/", timeout=10)
    assert response.status_code == 404
    response = http.post(f"{endpoint_server.url}/events", data=b" " * (1024 * 1024 + 1), timeout=10)
    assert (response.status_code, response.json()) == (413, {"error": "body over 1048576 bytes"})


def test_a_body_without_content_length_is_refused(endpoint_server: EndpointProcess) -> None:
    with socket.create_connection(("127.0.0.1", endpoint_server.port), timeout=10) as connection:
        connection.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        reply = b"".join(iter(lambda: connection.recv(4096), b"")).decode()  # until the server closes
    assert reply.startswith("HTTP/1.1 411 ")
    assert reply.endswith('{"error": "a Content-Length is required"}')


def test_stored_payloads_survive_a_restart(tmp_path: Path, http) -> None:
    db = tmp_path / "endpoint.sqlite"
    first = EndpointProcess(db).start()
    try:
        assert http.post(f"{first.url}/sessions", json=SESSION, timeout=10).status_code == 200
    finally:
        assert first.stop(signal.SIGINT) == 0  # a clean exit on Ctrl+C
    second = EndpointProcess(db).start()
    try:
        assert second.sessions() == [SESSION]
    finally:
        assert second.stop() == 0


# Hostile bodies: each answered 400 with what is wrong (never a dropped connection), nothing stored.


@pytest.mark.parametrize(
    "body, error",
    [
        ("[" * 1000 + "]" * 1000, "body is not UTF-8 JSON: the JSON is nested too deeply"),
        ('{"a":' * 100_000, "body is not UTF-8 JSON: the JSON is nested too deeply"),
        (json.dumps({**EVENT, "session_id": "\ud800"}),
         "body is not UTF-8 JSON: a string holds a lone surrogate (\\ud800-\\udfff), which is not a character"),
        (json.dumps(EVENT)[:-1] + ', "prompt_length": NaN}', "body is not UTF-8 JSON: NaN is not JSON"),
        (json.dumps(EVENT)[:-1] + ', "prompt_length": ' + "9" * 100_000 + "}",
         "body is not UTF-8 JSON: a number of more than 40 digits"),
        # Copies of keys before the valid ones: which one counts is up to each reader.
        ('{"name": "<script>alert(1)</script>", "mac": "nonsense", "prompt_length": -99, ' + json.dumps(EVENT)[1:],
         "body is not UTF-8 JSON: duplicate key 'name'"),
    ],
)  # fmt: skip
def test_hostile_json_is_answered_400_and_never_stored(
    endpoint_server: EndpointProcess, http, body: str, error: str
) -> None:
    response = http.post(f"{endpoint_server.url}/events", data=body.encode("utf-8"), timeout=10)
    assert (response.status_code, response.json()) == (400, {"error": error})
    assert http.post(f"{endpoint_server.url}/events", json=EVENT, timeout=10).status_code == 200  # still serving
    assert endpoint_server.events() == [EVENT]


def test_implausible_payloads_are_refused(endpoint_server: EndpointProcess, http) -> None:
    old = {**EVENT, "timestamp": "1999-12-31T23:59:59Z", "mac": mac("abc123", "1999-12-31T23:59:59Z")}
    response = http.post(f"{endpoint_server.url}/events", json=old, timeout=10)
    assert response.status_code == 400
    [problem] = response.json()["problems"]
    assert problem.startswith("timestamp must be from 2020-01-01T00:00:00Z to 86400 s after this server's clock (")
    for changes, problems in [
        ({"total_tool_calls": 0, "bash_call_count": 50},
         ["the per-tool counts add up to 50, more than total_tool_calls (0)"]),
        ({"turn_count": 2**63 - 1}, ["turn_count must be <= 1000000000"]),
        ({"session_id": "s" * 200_000, "mac": mac("s" * 200_000, SESSION["start_timestamp"])},
         ["session_id must be at most 128 characters"]),
    ]:  # fmt: skip
        response = http.post(f"{endpoint_server.url}/sessions", json={**SESSION, **changes}, timeout=10)
        assert (response.status_code, response.json()) == (400, {"error": "invalid payload", "problems": problems})
    assert endpoint_server.events() == [] and endpoint_server.sessions() == []


# Many senders at once, and slow ones.


def raw_post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("ascii") + body


def test_200_senders_connecting_at_once_are_all_answered(endpoint_server: EndpointProcess) -> None:
    assert endpoint_server.proc is not None
    connected = connect_all_while_stopped(endpoint_server.proc, endpoint_server.port, 200)
    try:
        assert len(connected) == 200
        payloads = [{**EVENT, "prompt_length": n} for n in range(200)]
        answers = answers_on(connected, [raw_post("/events", json.dumps(p).encode()) for p in payloads])
    finally:
        for sock in connected:
            sock.close()
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * 200
    assert sorted(p["prompt_length"] for p in endpoint_server.events()) == list(range(200))


def test_slow_connections_neither_outlast_their_deadline_nor_starve_others(tmp_path: Path, http) -> None:
    endpoint = EndpointProcess(tmp_path / "endpoint.sqlite", ["--max-connections", "50", "--request-timeout", "2"])
    endpoint.start()
    slow = Tricklers(endpoint.port, 100)
    try:
        wait_for(lambda: slow.open() <= 50)  # at the bound, the oldest made room for the newest
        assert http.post(f"{endpoint.url}/events", json=EVENT, timeout=10).status_code == 200
        wait_for(lambda: slow.open() == 0, timeout=15)  # 2 s after its first byte, however slowly it trickles
        timed_out = [answer for answer in slow.answers.values() if answer]
        assert timed_out
        assert {answer.split(b"\r\n", 1)[0] for answer in timed_out} == {b"HTTP/1.1 408 Request Timeout"}
        assert endpoint.events() == [EVENT]
    finally:
        slow.close()
        endpoint.stop()
