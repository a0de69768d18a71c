"""The session-aggregate rules (README "Session aggregates"), one by one, on small hand-made transcripts.

Entries are built with the helpers of transcript_entries.py (the fields Claude Code
writes that the rules read); each test writes its transcript into tmp_path and
compares the whole summary or all aggregates. The property tests hold summarize() to the naive reader
of tests/naive_transcript.py (json.loads on every line). Then the segment rules
(resumed, forked, compacted sessions), each on a small transcript, and the property
that segments add up to the whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_metrics import limits
from otel_metrics import transcript as transcript_module
from otel_metrics.model import AGGREGATE_KEYS, COUNTED_TOOLS, SessionAggregates
from otel_metrics.transcript import (
    NOT_A_PROMPT_PREFIXES,
    USAGE_KEYS,
    Offsets,
    Segment,
    TranscriptSummary,
    entry_uuids,
    parse_timestamp_ns,
    read_segment,
    subagent_transcripts,
    summarize,
)
from support.naive_transcript import naive_summarize
from support.transcript_entries import (
    T0_NS,
    Line,
    answer,
    append,
    entry,
    prompt,
    result_block,
    session,
    stamp,
    tool_results,
    tool_use,
    usage,
    write,
)


def counts(tmp_path: Path, main: Sequence[Line], **subagents: Sequence[Line]) -> Dict[str, int]:
    """The aggregates that differ from zero."""
    aggregates = summarize(session(tmp_path, main, **subagents)).aggregates.as_dict()
    return {key: value for key, value in aggregates.items() if value}


EMPTY = TranscriptSummary(None, None, None, SessionAggregates(), 0)


# Files: missing, empty, unreadable, garbage, bytes


def test_missing_transcript_gives_zero_counts_and_no_times(tmp_path: Path) -> None:
    assert summarize(tmp_path / "nowhere.jsonl") == EMPTY
    assert summarize(str(tmp_path / "nowhere.jsonl")) == EMPTY


def test_unreadable_transcript_gives_zero_counts_even_with_subagents(tmp_path: Path) -> None:
    (tmp_path / "s.jsonl").mkdir()  # a folder where the file should be
    write(tmp_path / "s" / "subagents" / "agent-a1.jsonl", [answer("m1", tool_use("t1"))])
    assert summarize(tmp_path / "s.jsonl") == EMPTY


def test_empty_file(tmp_path: Path) -> None:
    assert summarize(session(tmp_path, [])) == EMPTY


def test_lines_that_are_not_json_objects_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = ["not json", "[1, 2]", '"a string"', "42", "null", '{"type": "user", "message": ', "{} {}"]
    main = [prompt("hello"), *garbage, "", "   \t", answer("m1", usage=usage(1, 2, 3, 4))]
    sub = ["}{", tool_results(result_block("t9", is_error=True), sidechain=True)]
    with caplog.at_level(logging.DEBUG, logger="otel_metrics.transcript"):
        summary = summarize(session(tmp_path, main, **{"agent-a1": sub}))
    assert summary.skipped_lines == len(garbage) + 1  # blank lines are not counted
    assert summary.aggregates == SessionAggregates(
        turn_count=1,
        user_message_count=1,
        assistant_message_count=1,
        tool_error_count=1,
        total_input_tokens=1,
        total_output_tokens=2,
        cache_creation_tokens=3,
        cache_read_tokens=4,
    )
    skipped = [r for r in caplog.records if r.name == "otel_metrics.transcript" and "skipped" in r.getMessage()]
    assert len(skipped) == len(garbage) + 1
    assert all(r.levelno == logging.DEBUG for r in skipped)
    first_line = len(json.dumps(main[0]).encode()) + 1
    assert skipped[0].getMessage().endswith(f"s.jsonl: the line at byte {first_line} is not a JSON object: skipped")


def test_a_truncated_last_line_is_skipped_with_its_timestamp(tmp_path: Path) -> None:
    whole = json.dumps(prompt("hello", timestamp=stamp(1)))
    cut = json.dumps(answer("m1", timestamp=stamp(9)))[:-20]
    summary = summarize(write(tmp_path / "s.jsonl", [whole, cut]))
    assert (summary.start_ns, summary.end_ns, summary.skipped_lines) == (T0_NS + 10**9, T0_NS + 10**9, 1)
    assert summary.aggregates == SessionAggregates(user_message_count=1)


def test_bytes_that_are_not_utf8_do_not_lose_the_line(tmp_path: Path) -> None:
    error = json.dumps(tool_results(result_block("t1", is_error=True, content="@@")), ensure_ascii=False)
    lines: List[Line] = [
        error.encode().replace(b"@@", b"\xff\xfe caf\xe9"),  # latin-1 in a tool output
        b"\x80\x81\x82 binary garbage \xff",
        json.dumps(prompt("caf\u00e9 \u2192 ok")).encode(),  # escaped non-ASCII is fine
        "r\u00e9sum\u00e9 \u2713".join(['{"type": "user", "message": {"content": "', '"}}']).encode(),
    ]
    summary = summarize(write(tmp_path / "s.jsonl", lines))
    assert summary.skipped_lines == 1
    assert summary.aggregates == SessionAggregates(user_message_count=2, tool_error_count=1)


def test_windows_line_ends(tmp_path: Path) -> None:
    lines = [json.dumps(prompt("hi")).encode() + b"\r", json.dumps(answer("m1")).encode() + b"\r", b"\r"]
    summary = summarize(write(tmp_path / "s.jsonl", lines))
    assert summary.skipped_lines == 0
    assert summary.aggregates == SessionAggregates(turn_count=1, user_message_count=1, assistant_message_count=1)


# Times and session id


def test_start_and_end_are_the_earliest_and_latest_timestamps_of_any_entry_of_the_main_transcript(
    tmp_path: Path,
) -> None:
    main = [
        entry("queue-operation", timestamp=stamp(5)),
        prompt("hi", timestamp=stamp(10)),
        entry("system", timestamp=stamp(2)),  # out of order: earliest
        answer("m1", timestamp=stamp(20), sidechain=True),  # inline subagent entries are entries of T
        entry("progress", timestamp=stamp(30), data={"message": {"timestamp": stamp(99)}}),  # latest top-level
        {"type": "file-history-snapshot", "snapshot": {"timestamp": stamp(-50)}},  # nested: not an entry's
        entry("summary", timestamp=None),
    ]
    subagent = [answer("m2", timestamp=stamp(-100)), answer("m3", timestamp=stamp(500))]
    summary = summarize(session(tmp_path, main, **{"agent-a1": subagent}))
    assert (summary.start_ns, summary.end_ns) == (T0_NS + 2 * 10**9, T0_NS + 30 * 10**9)


def test_timestamps_keep_full_precision_across_formats(tmp_path: Path) -> None:
    main = [
        entry("system", timestamp="2026-02-12T16:00:00.999Z"),
        entry("system", timestamp="2026-02-12T18:00:01.000000001+02:00"),  # 16:00:01 UTC plus 1 ns: the latest
        entry("system", timestamp="2026-02-12T16:00:01Z"),
        entry("system", timestamp="2026-02-12T15:00:00.5-01:00"),  # 16:00:00.5 UTC
    ]
    summary = summarize(session(tmp_path, main))
    assert summary.start_ns == T0_NS + 500_000_000
    assert summary.end_ns == T0_NS + 1_000_000_001


def test_timestamps_that_are_not_valid_date_times_are_ignored(tmp_path: Path) -> None:
    main = [
        prompt("hi", timestamp=stamp(10)),
        entry("system", timestamp="2026-02-30T10:00:00.000Z"),  # no such day
        entry("system", timestamp="2099-01-01T24:00:00.000Z"),
        entry("system", timestamp="2099-01-01T23:60:00.000Z"),
        entry("system", timestamp="2099-01-01T23:00:60.000Z"),
        entry("system", timestamp="1999-01-01T23:00:00.000+24:00"),
        entry("system", timestamp="yesterday"),
        entry("system", timestamp=""),
        entry("system", timestamp=1770912000),
        entry("system", timestamp=None),
        entry("system", timestamp="\u0662\u0660\u0662\u0666-02-12T16:00:00.000Z"),  # Arabic-Indic digits
    ]
    summary = summarize(session(tmp_path, main))
    assert (summary.start_ns, summary.end_ns) == (T0_NS + 10**9 * 10, T0_NS + 10**9 * 10)


def test_no_timestamps_no_times(tmp_path: Path) -> None:
    summary = summarize(session(tmp_path, [prompt("hi", timestamp=None), answer("m1", timestamp=None)]))
    assert (summary.start_ns, summary.end_ns) == (None, None)
    assert summary.aggregates.turn_count == 1


@pytest.mark.parametrize(
    ("text", "unix_ns"),
    [
        ("2026-02-12T16:00:00.000Z", T0_NS),
        ("2026-02-12T16:00:00Z", T0_NS),
        ("2026-02-12t16:00:00.25z", T0_NS + 250_000_000),
        ("2026-02-12 16:00:00,5Z", T0_NS + 500_000_000),
        ("2026-02-12T16:00:00.123456789Z", T0_NS + 123_456_789),
        ("2026-02-12T16:00:00.1234567899Z", T0_NS + 123_456_789),  # beyond ns: dropped
        ("2026-02-12T17:30:00.001+01:30", T0_NS + 1_000_000),
        ("2026-02-12T14:00:00-0200", T0_NS),
        ("2026-02-12T16:00:00", T0_NS),  # no offset: UTC
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.5Z", -500_000_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800 * 10**9),
    ],
)
def test_parse_timestamp_ns(text: str, unix_ns: int) -> None:
    assert parse_timestamp_ns(text) == unix_ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-02-12",
        "2026-02-12T16:00",
        "2023-02-29T00:00:00Z",
        "2026-02-12T16:00:00.Z",
        "2026-02-12T16:00:00+5",
        " 2026-02-12T16:00:00Z",
        "2026-02-12T16:00:00Z ",
        "2026-02-12T16:00:00ZZ",
        "2026-W07-4T16:00:00.000Z",
    ],
)
def test_parse_timestamp_ns_rejects(text: str) -> None:
    assert parse_timestamp_ns(text) is None


def test_session_id_is_the_first_top_level_session_id_of_the_main_transcript(tmp_path: Path) -> None:
    main = [
        {"type": "file-history-snapshot", "snapshot": {"sessionId": "nested"}},
        {"type": "summary", "sessionId": 7},  # not a string
        entry("progress", sessionId="first"),
        prompt("hi", sessionId="second"),
    ]
    assert summarize(session(tmp_path, main)).session_id == "first"


def test_session_id_is_none_without_one_in_the_main_transcript(tmp_path: Path) -> None:
    transcript = session(tmp_path, [{"type": "user", "message": {"content": "hi"}}], **{"agent-a1": [prompt("x")]})
    assert summarize(transcript).session_id is None


# User prompts


@pytest.mark.parametrize(
    "content",
    [
        "fix the bug",
        "  \n fix the bug \n",
        "<command-name>/jira:solve</command-name>\n<command-args>X-1</command-args>",
        [{"type": "text", "text": "look at this"}, {"type": "image", "source": {}}],
        [{"type": "text", "text": "  "}, {"type": "text", "text": "two blocks"}],
        "please read <local-command-stdout> later",  # a prefix counts only at the start
    ],
)
def test_a_user_prompt_counts(tmp_path: Path, content: object) -> None:
    assert counts(tmp_path, [prompt(content)]) == {"user_message_count": 1}


@pytest.mark.parametrize("prefix", NOT_A_PROMPT_PREFIXES)
def test_each_excluded_prefix_is_not_a_prompt(tmp_path: Path, prefix: str) -> None:
    main = [prompt(prefix + " tail"), prompt("\n  " + prefix), prompt([{"type": "text", "text": " " + prefix}])]
    assert counts(tmp_path, main) == {}


def test_the_prefix_is_read_on_the_concatenated_text_blocks(tmp_path: Path) -> None:
    blocks = [{"type": "text", "text": "[Request"}, {"type": "text", "text": " interrupted by user]"}]
    assert counts(tmp_path, [prompt(blocks)]) == {}


@pytest.mark.parametrize(
    "content",
    [
        "",
        " \n\t ",
        [],
        [{"type": "image", "source": {}}],
        [{"type": "text", "text": ""}],
        [{"type": "text", "text": 5}],
        None,
        {"text": "a dict"},
        7,
    ],
)
def test_a_user_entry_without_text_is_not_a_prompt(tmp_path: Path, content: object) -> None:
    assert counts(tmp_path, [prompt(content)]) == {}


def test_a_content_list_with_a_tool_result_is_not_a_prompt(tmp_path: Path) -> None:
    mixed = tool_results({"type": "text", "text": "also this"}, result_block("t1"))
    assert counts(tmp_path, [mixed, tool_results(result_block("t2"))]) == {}


def test_meta_and_compact_summary_entries_are_not_prompts(tmp_path: Path) -> None:
    main = [
        prompt("Caveat: the messages below were generated by the user", isMeta=True),
        prompt("This is a summary of the conversation so far", isCompactSummary=True),
        prompt("flags count only when exactly true", isMeta=False, isCompactSummary=False),
        prompt("so this one counts too", isMeta="true", isCompactSummary=1),
    ]
    assert counts(tmp_path, main) == {"user_message_count": 2}


def test_sidechain_user_entries_are_not_prompts_inline_or_in_subagent_files(tmp_path: Path) -> None:
    main = [prompt("subagent task", sidechain=True), prompt("a real one", isSidechain=False)]
    assert counts(tmp_path, main, **{"agent-a1": [prompt("also subagent", sidechain=True), prompt("even so")]}) == {
        "user_message_count": 1
    }


def test_a_user_entry_without_a_message_is_not_a_prompt(tmp_path: Path) -> None:
    assert counts(tmp_path, [entry("user"), entry("user", message="text"), entry("user", message=None)]) == {}


# Turns


def test_a_turn_is_a_prompt_answered_before_the_next_prompt(tmp_path: Path) -> None:
    main = [
        answer("m0"),  # before any prompt
        prompt("one"),
        prompt("two"),  # "one" was never answered
        entry("progress"),
        tool_results(result_block("t1")),  # a tool result is not a prompt
        answer("m1"),
        answer("m2"),  # the same turn
        prompt("three"),
        answer("s1", model="<synthetic>"),  # not an assistant message
        answer("x1", sidechain=True),  # not the main thread
        prompt("four"),
        answer("m3"),
    ]
    assert counts(tmp_path, main, **{"agent-a1": [answer("x2")]}) == {
        "user_message_count": 4,
        "turn_count": 2,
        "assistant_message_count": 4,
    }


def test_an_answer_after_excluded_user_entries_still_answers_the_prompt(tmp_path: Path) -> None:
    main = [prompt("go"), prompt("<local-command-stdout>x"), prompt("meta", isMeta=True), answer("m1")]
    assert counts(tmp_path, main) == {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 1}


# Assistant messages


def test_interleaved_blocks_of_one_message_count_once(tmp_path: Path) -> None:
    main = [
        prompt("go"),
        answer("m1", {"type": "thinking", "thinking": "hm"}),
        answer("m1", tool_use("t1")),
        tool_results(result_block("t1")),
        answer("m2", tool_use("t2", "Read")),
        answer("m1", tool_use("t3")),  # a block of m1 again, after m2
        tool_results(result_block("t2"), result_block("t3")),
    ]
    assert counts(tmp_path, main) == {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 2,
        "total_tool_calls": 3,
        "bash_call_count": 2,
        "file_read_count": 1,
    }


def test_assistant_entries_without_a_message_id_count_alone(tmp_path: Path) -> None:
    main = [answer(None), answer(None), answer(None, model="<synthetic>"), entry("assistant"), answer("m1")]
    main.append({"type": "assistant", "message": {"id": 17, "model": "x"}})  # an id that is not a string
    assert counts(tmp_path, main)["assistant_message_count"] == 5


def test_synthetic_messages_are_not_assistant_messages(tmp_path: Path) -> None:
    main = [answer("s1", model="<synthetic>"), answer("s2", model="<synthetic>", usage=usage(0, 0, 0, 0))]
    assert counts(tmp_path, main) == {}


def test_sidechain_assistant_entries_are_not_main_thread_messages(tmp_path: Path) -> None:
    main = [answer("x1", sidechain=True), answer("m1")]
    assert counts(tmp_path, main, **{"agent-a1": [answer("x2", sidechain=True), answer("x3")]}) == {
        "assistant_message_count": 1
    }


# Tool calls


def test_tool_calls_are_distinct_tool_use_blocks_of_every_file(tmp_path: Path) -> None:
    main = [
        answer("m1", tool_use("t1", "Bash"), tool_use("t2", "Read")),
        answer("m1", tool_use("t1", "Bash")),  # the same block written again
        answer("x1", tool_use("t3", "Grep"), sidechain=True),
        answer("s1", tool_use("t4", "Glob"), model="<synthetic>"),
        answer("m2", tool_use(None, "Edit"), tool_use(None, "Edit")),  # without ids: each counts
        entry("progress", data={"message": {"type": "assistant", "message": {"content": [tool_use("t8")]}}}),
        tool_results({"type": "tool_use", "id": "t9", "name": "Bash"}),  # in a user entry: not a call
    ]
    subagent = [answer("x2", tool_use("t5", "WebFetch"), tool_use("t6", "WebSearch"), tool_use("t1", "Read"))]
    other = [answer("x3", tool_use("t7", "Write"), tool_use("t10", "Task"), tool_use("t11", "TodoWrite"))]
    assert counts(tmp_path, main, **{"agent-a1": subagent, "agent-a2": other}) == {
        "assistant_message_count": 2,
        "total_tool_calls": 11,
        "bash_call_count": 1,
        "file_read_count": 1,
        "file_edit_count": 2,
        "file_write_count": 1,
        "grep_call_count": 1,
        "glob_call_count": 1,
        "web_fetch_call_count": 1,
        "web_search_call_count": 1,
    }


@pytest.mark.parametrize("name", sorted(COUNTED_TOOLS))
def test_each_counted_tool_name_is_matched_exactly(tmp_path: Path, name: str) -> None:
    blocks = [tool_use(f"{name}-1", name), tool_use(f"{name}-2", name.lower()), tool_use(f"{name}-3", name + " ")]
    assert counts(tmp_path, [answer("m1", *blocks)]) == {
        "assistant_message_count": 1,
        "total_tool_calls": 3,
        COUNTED_TOOLS[name]: 1,
    }


def test_tool_use_blocks_with_odd_names_count_only_in_the_total(tmp_path: Path) -> None:
    odd = [{"type": "tool_use", "id": "t1", "name": ["Bash"]}, {"type": "tool_use", "id": "t2"}, "Bash", None]
    assert counts(tmp_path, [answer("m1", *odd)]) == {"assistant_message_count": 1, "total_tool_calls": 2}


# Tool errors


def test_tool_errors_are_distinct_tool_results_with_is_error_exactly_true(tmp_path: Path) -> None:
    main = [
        tool_results(result_block("t1", is_error=True), result_block("t2", is_error=True)),
        tool_results(result_block("t1", is_error=True)),  # the same result again
        tool_results(
            result_block("t3", is_error="true"),
            result_block("t4", is_error=1),
            result_block("t5", is_error=False),
            {"type": "tool_result", "tool_use_id": "t6"},
        ),
        tool_results(result_block(None, is_error=True), result_block(None, is_error=True)),  # no id: each counts
        tool_results(result_block("t7", is_error=True), sidechain=True),
        tool_results(result_block("t8", is_error=True), isMeta=True),  # any user entry
        entry("progress", data={"message": {"type": "user", "message": {"content": [result_block("t9", True)]}}}),
        answer("m1", result_block("t10", is_error=True)),  # in an assistant entry: not a tool result
    ]
    subagent = [tool_results(result_block("t11", is_error=True), result_block("t1", is_error=True))]
    assert counts(tmp_path, main, **{"agent-a1": subagent}) == {"assistant_message_count": 1, "tool_error_count": 7}


# Tokens


def test_tokens_take_the_biggest_usage_of_each_message_and_request(tmp_path: Path) -> None:
    main = [
        answer("m1", usage=usage(1, 10, 5601, 29509)),
        answer("m1", usage=usage(1, 10, 5601, 29509)),
        answer("m1", usage=usage(1, 299, 5601, 29509)),  # the final block carries the final output count
        answer("m1", usage=usage(1, 10, 5601, 29509)),
        answer("m2", usage=usage(3, 2, 0, 100)),
    ]
    assert counts(tmp_path, main) == {
        "assistant_message_count": 2,
        "total_input_tokens": 4,
        "total_output_tokens": 301,
        "cache_creation_tokens": 5601,
        "cache_read_tokens": 29609,
    }


def test_tokens_tie_goes_to_the_first_entry(tmp_path: Path) -> None:
    main = [answer("m1", usage=usage(5, 0, 0, 0)), answer("m1", usage=usage(0, 5, 0, 0))]
    assert counts(tmp_path, main) == {"assistant_message_count": 1, "total_input_tokens": 5}


def test_tokens_group_by_message_id_and_request_id(tmp_path: Path) -> None:
    main = [
        answer("m1", usage=usage(1, 1, 1, 1), request_id="req_a"),
        answer("m1", usage=usage(2, 2, 2, 2), request_id="req_b"),  # another request: another group
        answer("m1", usage=usage(4, 4, 4, 4), request_id=None),  # no request id: a group of its own
        answer("m1", usage=usage(8, 8, 8, 8), request_id=None),
        answer("m1", usage=usage(16, 16, 16, 16), request_id=None, requestId=["odd"]),  # odd: as missing
    ]
    assert counts(tmp_path, main) == {
        "assistant_message_count": 1,
        "total_input_tokens": 19,
        "total_output_tokens": 19,
        "cache_creation_tokens": 19,
        "cache_read_tokens": 19,
    }


def test_tokens_of_entries_without_message_id_each_count(tmp_path: Path) -> None:
    main = [answer(None, usage=usage(1, 2, 3, 4)), answer(None, usage=usage(1, 2, 3, 4))]
    assert counts(tmp_path, main) == {
        "assistant_message_count": 2,
        "total_input_tokens": 2,
        "total_output_tokens": 4,
        "cache_creation_tokens": 6,
        "cache_read_tokens": 8,
    }


def test_missing_or_non_integer_token_counts_are_zero(tmp_path: Path) -> None:
    main = [
        answer("m1", usage={"input_tokens": 7}),
        answer("m2", usage=usage(3.0, "5", True, None)),
        answer("m3", usage=[1, 2]),
        answer("m4", usage=None),
        answer("m5", usage=usage(0, 2**70, 0, 0)),
    ]
    assert counts(tmp_path, main) == {
        "assistant_message_count": 5,
        "total_input_tokens": 7,
        "total_output_tokens": 2**70,
    }


def test_tokens_of_subagents_and_synthetic_messages_count(tmp_path: Path) -> None:
    main = [
        answer("m1", usage=usage(1, 0, 0, 0)),
        answer("x1", usage=usage(10, 0, 0, 0), sidechain=True),
        answer("s1", usage=usage(100, 0, 0, 0), model="<synthetic>"),
        entry("progress", data={"message": {"type": "assistant", "message": {"id": "p", "usage": usage(9, 9, 9, 9)}}}),
    ]
    subagent = [answer("x2", usage=usage(1000, 0, 0, 0)), answer("m1", usage=usage(1, 0, 0, 0))]
    assert counts(tmp_path, main, **{"agent-a1": subagent}) == {
        "assistant_message_count": 1,
        "total_input_tokens": 1111,
    }


def test_token_sums_that_are_not_positive_are_zero(tmp_path: Path) -> None:
    main = [answer("m1", usage=usage(-5, 0, 0, 0)), answer("m2", usage=usage(0, 0, 0, 0))]
    assert counts(tmp_path, main) == {"assistant_message_count": 2}


# Subagent files


def test_subagent_files_are_the_jsonl_files_of_the_subagents_folder(tmp_path: Path) -> None:
    main = write(tmp_path / "abc.jsonl", [answer("m1")])
    for name in ("agent-b.jsonl", "agent-a.jsonl"):
        write(tmp_path / "abc" / "subagents" / name, [answer("x1", tool_use(name))])
    write(tmp_path / "abc" / "subagents" / "notes.txt", [answer("x2", tool_use("no1"))])
    write(tmp_path / "abc" / "subagents" / "deeper" / "agent-c.jsonl", [answer("x3", tool_use("no2"))])
    write(tmp_path / "abc" / "agent-d.jsonl", [answer("x4", tool_use("no3"))])
    (tmp_path / "abc" / "subagents" / "folder.jsonl").mkdir()
    folder = tmp_path / "abc" / "subagents"
    assert subagent_transcripts(main) == [folder / "agent-a.jsonl", folder / "agent-b.jsonl"]
    assert summarize(main).aggregates.total_tool_calls == 2


def test_a_transcript_not_named_jsonl_has_no_subagent_files(tmp_path: Path) -> None:
    main = write(tmp_path / "abc.log", [answer("m1")])
    write(tmp_path / "abc" / "subagents" / "agent-a.jsonl", [answer("x1", tool_use("t1"))])
    assert subagent_transcripts(main) == []
    assert summarize(main).aggregates.total_tool_calls == 0


def test_a_subagent_file_lines_count_in_skipped_lines(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("hi")], **{"agent-a1": ["oops", answer("x1")], "agent-a2": [b"\xff"]})
    assert summarize(transcript).skipped_lines == 2


# Properties, on generated transcripts

ID_POOL = st.one_of(st.sampled_from(["a", "b", "c", ""]), st.none(), st.integers(0, 2))
FLAG = st.sampled_from([True, False, None, "true", 1])
TIMESTAMP = st.one_of(
    st.integers(-5_000, 5_000).map(lambda ms: stamp(ms / 1000)),  # as Claude Code writes them
    st.builds(
        "2026-02-12T{:02d}:00:{:02d}{}{}".format,
        st.integers(0, 23),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".123456", ".123456789", ".9999999999"]),
        st.sampled_from(["Z", "+01:00", "-00:30", ""]),
    ),
    st.sampled_from(["2026-02-30T10:00:00.000Z", "2026-02-12T24:00:00.000Z", "soon", "", 5, None]),
)
PROMPT_TEXT = st.sampled_from(["fix it", "<command-name>/x</command-name>", "\u00e9\u2192"])
TEXT = st.one_of(
    *[PROMPT_TEXT] * 3,
    st.sampled_from(["", " ", "\n\t"]),
    st.sampled_from(NOT_A_PROMPT_PREFIXES).map(lambda p: "  " + p + " more"),
    st.text(max_size=8),
)
TOOL_NAME = st.sampled_from(sorted(COUNTED_TOOLS) + ["Task", "bash", None])


def _block(kind: str, **fields: object) -> Dict[str, object]:
    return {"type": kind, **{k: v for k, v in fields.items() if v is not None}}


TEXT_BLOCK = st.builds(lambda t: _block("text", text=t), TEXT)
TOOL_USE = st.builds(lambda i, n: _block("tool_use", id=i, name=n, input={}), ID_POOL, TOOL_NAME)
IS_ERROR = st.sampled_from([True, True, True, False, None, "true", 1])
TOOL_RESULT = st.builds(lambda i, e: _block("tool_result", tool_use_id=i, is_error=e, content="out"), ID_POOL, IS_ERROR)
ODD_BLOCK = st.sampled_from([{"type": "image"}, "loose string", None])
ODD_CONTENT = st.sampled_from([None, 7, {"text": "a dict"}])
CONTENT = {
    "user": st.one_of(TEXT, TEXT, st.lists(st.one_of(TEXT_BLOCK, TEXT_BLOCK, TOOL_RESULT, ODD_BLOCK), max_size=3)),
    "tool_results": st.lists(TOOL_RESULT, min_size=1, max_size=3),
    "assistant": st.lists(st.one_of(TOOL_USE, TOOL_USE, TEXT_BLOCK, TOOL_RESULT, ODD_BLOCK), max_size=3),
}
USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(st.integers(-1, 3), st.integers(-1, 3), st.sampled_from([1.5, "7", True, None]))
            for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        },
    ),
)


@st.composite
def transcript_entry(draw: st.DrawFn) -> Dict[str, object]:
    kind = draw(st.sampled_from(["user"] * 3 + ["assistant"] * 3 + ["progress", "system"]))
    made: Dict[str, object] = {"type": kind}
    for key, value in (
        ("isSidechain", FLAG),
        ("isMeta", FLAG),
        ("isCompactSummary", FLAG),
        ("sessionId", st.sampled_from(["s1", "s2", 3])),
        ("timestamp", TIMESTAMP),
        ("requestId", ID_POOL),
        ("forkedFrom", st.sampled_from([{"sessionId": "s0", "messageUuid": "u"}, "s0", None])),
    ):
        if draw(st.booleans()):
            made[key] = draw(value)
    content_kind = "assistant" if kind != "user" else draw(st.sampled_from(["user", "user", "tool_results"]))
    content = draw(CONTENT[content_kind] if draw(st.integers(0, 9)) else ODD_CONTENT)
    message = {"id": draw(ID_POOL), "model": draw(st.sampled_from(["claude", "claude", "<synthetic>", None]))}
    message.update(content=content, usage=draw(USAGE))
    if kind == "progress":  # what would count if it were at the top level
        made["data"] = {"message": {"type": draw(st.sampled_from(["user", "assistant"])), "message": message}}
    elif kind != "system":
        made["message"] = message if draw(st.integers(0, 9)) else draw(st.sampled_from([None, "text", [1]]))
    return made


RAW_LINE = st.sampled_from(
    [b"", b"  ", b"garbage", b"[1]", b'{"type": "user"', b"\xff\xfe", b'{"a": NaN}', b"{}", b"\xef\xbb\xbf{}"]
    + [b'{"type": "user", "message": {"content": "\xff"}}', b'{"type": "user", "message": {"content": "\xe2\x86"}}']
)
LINE = st.one_of(*[transcript_entry()] * 5, RAW_LINE)


def _written(folder: str, main: Sequence[Line], subagents: Sequence[Sequence[Line]]) -> Path:
    return session(Path(folder), main, **{f"agent-a{i}": lines for i, lines in enumerate(subagents)})


def _summary_of(main: Sequence[Line], subagents: Sequence[Sequence[Line]]) -> TranscriptSummary:
    with tempfile.TemporaryDirectory() as tmp:
        return summarize(_written(tmp, main, subagents))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(main=st.lists(LINE, min_size=5, max_size=40), subagents=st.lists(st.lists(LINE, max_size=10), max_size=2))
def test_summarize_equals_the_naive_reader(main: List[Line], subagents: List[List[Line]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        transcript = _written(tmp, main, subagents)
        assert summarize(transcript) == naive_summarize(transcript)


OTHER_ENTRY = st.builds(
    lambda kind, flags, data: {"type": kind, **flags, "data": data},
    st.sampled_from(["system", "progress", "summary", "file-history-snapshot", "queue-operation", "attachment"]),
    st.fixed_dictionaries({}, optional={"isSidechain": FLAG, "isMeta": FLAG, "uuid": st.just("u")}),
    st.one_of(st.none(), transcript_entry()),  # may look like a message: only top-level user/assistant count
)


def _is_streamed_assistant_line(line: Line) -> bool:
    """An assistant line Claude Code could write twice: its message and tool_use blocks have ids."""
    if not isinstance(line, dict) or line.get("type") != "assistant" or not isinstance(line.get("message"), dict):
        return False
    message = line["message"]
    blocks = message.get("content") if isinstance(message.get("content"), list) else []
    tool_uses = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
    return isinstance(message.get("id"), str) and all(isinstance(b.get("id"), str) for b in tool_uses)


@st.composite
def with_noise(draw: st.DrawFn, lines: List[Line]) -> List[Line]:
    """`lines` with other entries (no timestamp, no sessionId) inserted and streamed assistant lines repeated."""
    noisy: List[Line] = []
    for line in lines:
        noisy.extend(draw(st.lists(OTHER_ENTRY, max_size=2)))
        noisy.append(line)
        if _is_streamed_assistant_line(line) and draw(st.booleans()):
            noisy.extend([line] * draw(st.integers(1, 2)))
    noisy.extend(draw(st.lists(OTHER_ENTRY, max_size=2)))
    return noisy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    main=st.lists(LINE, min_size=5, max_size=30),
    subagents=st.lists(st.lists(LINE, max_size=10), max_size=2),
)
def test_other_entries_and_repeated_streamed_lines_change_nothing(
    data: st.DataObject, main: List[Line], subagents: List[List[Line]]
) -> None:
    noisy_main = data.draw(with_noise(main))
    noisy_subagents = [data.draw(with_noise(lines)) for lines in subagents]
    assert _summary_of(noisy_main, noisy_subagents) == _summary_of(main, subagents)


# Segments: each run of a resumed session on its own


def aggregates_of(segment: Segment) -> Dict[str, int]:
    return {key: value for key, value in segment.summary.aggregates.as_dict().items() if value}


def sizes_of(transcript: Path) -> Offsets:
    """What the SessionEnd hook records: the size of every file of the session."""
    return Offsets(transcript.stat().st_size, {p.name: p.stat().st_size for p in subagent_transcripts(transcript)})


def test_a_resumed_run_is_read_from_where_the_last_report_ended(tmp_path: Path) -> None:
    first_run = [prompt("one", timestamp=stamp(1)), answer("m1", tool_use("t1"), timestamp=stamp(2))]
    transcript = session(tmp_path, first_run, **{"agent-a1": [answer("x1", tool_use("t2"))]})
    first = read_segment(transcript)
    assert first.end == sizes_of(transcript)
    second_run = [
        prompt("two", timestamp=stamp(100)),
        answer("m2", tool_use("t3", "Read"), timestamp=stamp(101)),
        tool_results(result_block("t3", is_error=True), timestamp=stamp(102)),
    ]
    append(transcript, second_run)
    append(transcript.with_suffix("") / "subagents" / "agent-a1.jsonl", [answer("x1", tool_use("t4"))])  # resumed agent
    write(transcript.with_suffix("") / "subagents" / "agent-a2.jsonl", [answer("x2", tool_use("t5", "Grep"))])

    second = read_segment(transcript, first.end, first.awaiting_answer)

    assert (second.summary.start_ns, second.summary.end_ns) == (T0_NS + 100 * 10**9, T0_NS + 102 * 10**9)
    assert aggregates_of(second) == {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 1,
        "total_tool_calls": 3,
        "bash_call_count": 1,
        "file_read_count": 1,
        "grep_call_count": 1,
        "tool_error_count": 1,
    }
    assert second.end == sizes_of(transcript)
    assert read_segment(transcript, second.end).summary == EMPTY  # nothing new: an empty segment
    assert not read_segment(transcript, second.end).has_activity


def test_the_sizes_at_session_end_bound_every_file(tmp_path: Path) -> None:
    """A resume that starts writing before the exporter reads belongs to the next segment."""
    transcript = session(tmp_path, [prompt("one"), answer("m1")], **{"agent-a1": [answer("x1", tool_use("t1"))]})
    at_session_end = sizes_of(transcript)
    append(transcript, [prompt("two"), answer("m2")])
    append(transcript.with_suffix("") / "subagents" / "agent-a1.jsonl", [answer("x1", tool_use("t2"))])
    write(transcript.with_suffix("") / "subagents" / "agent-a2.jsonl", [answer("x2", tool_use("t3"))])

    first = read_segment(transcript, stop=at_session_end)
    second = read_segment(transcript, first.end, first.awaiting_answer)

    assert first.end == at_session_end  # agent-a2 did not exist yet: not read, no offset
    assert aggregates_of(first) == {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 1,
        "total_tool_calls": 1,
        "bash_call_count": 1,
    }
    assert aggregates_of(second) == {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 1,
        "total_tool_calls": 2,
        "bash_call_count": 2,
    }


def test_a_stop_before_the_start_reads_nothing(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("one"), answer("m1")])
    done = read_segment(transcript)
    late = read_segment(transcript, done.end, stop=Offsets(10, {}))  # a SessionEnd already covered by a report
    assert late.summary == EMPTY and late.end == done.end


def test_a_last_line_still_being_written_is_left_for_the_next_segment(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("one", timestamp=stamp(1))])
    whole = json.dumps(answer("m1", tool_use("t1"), timestamp=stamp(2))).encode() + b"\n"
    with open(transcript, "ab") as out:
        out.write(whole[:40])
    first = read_segment(transcript)
    assert first.end.main == transcript.stat().st_size - 40
    assert first.summary.skipped_lines == 1  # as any line that is not a JSON object
    assert aggregates_of(first) == {"user_message_count": 1}
    with open(transcript, "ab") as out:
        out.write(whole[40:])
    second = read_segment(transcript, first.end, first.awaiting_answer)
    assert second.summary.skipped_lines == 0
    assert aggregates_of(second) == {
        "turn_count": 1,
        "assistant_message_count": 1,
        "total_tool_calls": 1,
        "bash_call_count": 1,
    }


def test_a_whole_object_without_its_newline_is_read(tmp_path: Path) -> None:
    transcript = tmp_path / "s.jsonl"
    transcript.write_bytes(json.dumps(prompt("one")).encode())
    segment = read_segment(transcript)
    assert segment.end.main == transcript.stat().st_size
    assert aggregates_of(segment) == {"user_message_count": 1}


def test_a_prompt_counts_where_it_was_written_and_its_turn_where_it_was_answered(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("one"), answer("m1"), prompt("two, interrupted")])
    first = read_segment(transcript)
    assert first.awaiting_answer
    append(transcript, [answer("m2"), prompt("three")])
    second = read_segment(transcript, first.end, first.awaiting_answer)
    assert aggregates_of(first) == {"user_message_count": 2, "turn_count": 1, "assistant_message_count": 1}
    assert aggregates_of(second) == {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 1}
    assert second.awaiting_answer
    without_state = read_segment(transcript, first.end, awaiting_answer=False)
    assert aggregates_of(without_state) == {"user_message_count": 1, "assistant_message_count": 1}


def test_a_file_shorter_than_what_was_reported_is_not_read_again(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("one"), answer("m1")])
    done = read_segment(transcript)
    write(transcript, [prompt("rewritten")])  # replaced by something smaller
    again = read_segment(transcript, done.end)
    assert again.summary == EMPTY and again.end == done.end


def test_a_missing_transcript_leaves_the_offsets_where_they_were(tmp_path: Path) -> None:
    start = Offsets(120, {"agent-a1.jsonl": 7})
    segment = read_segment(tmp_path / "gone.jsonl", start, awaiting_answer=True)
    assert (segment.summary, segment.end, segment.awaiting_answer) == (EMPTY, start, True)


# Forks: a new session whose transcript starts with copied history


def copied(*entries: dict) -> List[dict]:
    """Entries as `claude --resume <id> --fork-session` copies them: same uuid and timestamp, the new sessionId."""
    return [dict(e, sessionId="fork") for e in entries]


def test_history_copied_by_a_fork_counts_for_nothing(tmp_path: Path) -> None:
    parent = [
        prompt("one", timestamp=stamp(1)),
        answer("m1", tool_use("t1"), timestamp=stamp(2), usage=usage(5, 5), parentUuid="p"),
        tool_results(result_block("t1", is_error=True), timestamp=stamp(3), parentUuid="p"),
    ]
    header = {"type": "queue-operation", "timestamp": stamp(60)}  # bookkeeping: no uuid, never copied
    own = [
        prompt("fork it", timestamp=stamp(61), parentUuid=parent[-1]["uuid"]),
        answer("m2", timestamp=stamp(62), usage=usage(1, 1), parentUuid="p"),
    ]
    transcript = session(tmp_path, [header, *copied(*parent), *own])
    asked: List[str] = []

    def copied_history(first_uuid: str) -> set:
        asked.append(first_uuid)
        return {e["uuid"] for e in parent}

    segment = read_segment(transcript, copied_history=copied_history)

    assert asked == [parent[0]["uuid"]]  # once, with the first uuid of the transcript
    assert segment.copies == 3
    assert (segment.summary.start_ns, segment.summary.end_ns) == (T0_NS + 60 * 10**9, T0_NS + 62 * 10**9)
    assert aggregates_of(segment) == {
        "user_message_count": 1,
        "turn_count": 1,
        "assistant_message_count": 1,
        "total_input_tokens": 1,
        "total_output_tokens": 1,
    }
    assert segment.roots == (parent[0]["uuid"],)  # copies included: a fork of this fork finds them too
    assert summarize(transcript).aggregates.user_message_count == 2  # without the parent's uuids, all count


def test_entries_marked_forked_from_are_copies(tmp_path: Path) -> None:
    """What /branch and the SDK's forkSession write (their copies may get new uuids)."""
    marker = {"sessionId": "parent", "messageUuid": "u-1"}
    main = [
        prompt("one", forkedFrom=marker, timestamp=stamp(1)),
        answer("m1", forkedFrom=marker, timestamp=stamp(2)),
        prompt("marker must be an object", forkedFrom="parent", timestamp=stamp(50)),
        answer("m2", timestamp=stamp(51)),
    ]
    segment = read_segment(session(tmp_path, main))
    assert segment.copies == 2
    assert segment.summary.start_ns == T0_NS + 50 * 10**9
    assert aggregates_of(segment) == {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 1}


def test_roots_are_the_main_thread_entries_that_start_a_chain(tmp_path: Path) -> None:
    main = [
        prompt("first", parentUuid=None),
        answer("m1", parentUuid="x"),
        entry("system", parentUuid=None, subtype="compact_boundary"),  # a compaction starts a new chain
        {k: v for k, v in prompt("no parentUuid key").items() if k != "parentUuid"},
        prompt("sidechain start", parentUuid=None, sidechain=True),
        {"type": "user", "parentUuid": None, "uuid": 7},  # not a string
    ]
    transcript = session(tmp_path, main, **{"agent-a1": [prompt("task", parentUuid=None)]})
    assert read_segment(transcript).roots == (main[0]["uuid"], main[2]["uuid"])


def test_entry_uuids_are_the_top_level_uuids_of_a_file(tmp_path: Path) -> None:
    main = [prompt("one"), answer("m1"), {"type": "x", "leafUuid": "nested"}, "garbage", {"uuid": 3}]
    transcript = session(tmp_path, main)
    assert entry_uuids(transcript) == {main[0]["uuid"], main[1]["uuid"]}
    assert entry_uuids(tmp_path / "missing.jsonl") == set()


# Compaction (shapes as Claude Code 2.1.197 writes them)


def test_compaction_writes_no_prompt_and_no_turn(tmp_path: Path) -> None:
    before = [prompt("work", timestamp=stamp(1)), answer("m1", tool_use("t1"), timestamp=stamp(2))]
    compaction = [
        entry("system", subtype="compact_boundary", parentUuid=None, timestamp=stamp(10)),
        prompt("This session is being continued from a previous conversation ...", isCompactSummary=True),
        prompt("<local-command-caveat>Caveat: ...</local-command-caveat>", isMeta=True),
        prompt("<command-name>/compact</command-name>\n<command-message>compact</command-message>"),
        prompt("<local-command-stdout>Compacted (ctrl+o to see full summary)</local-command-stdout>"),
    ]
    resumed = [
        prompt([{"type": "text", "text": "Continue from where you left off."}], isMeta=True, timestamp=stamp(20)),
        answer("s1", model="<synthetic>", timestamp=stamp(20)),  # "No response requested."
        prompt("after compact", timestamp=stamp(21)),
        answer("m2", timestamp=stamp(22)),
    ]
    transcript = session(tmp_path, before)
    runs = [read_segment(transcript)]
    for lines in (compaction, resumed):
        append(transcript, lines)
        runs.append(read_segment(transcript, runs[-1].end, runs[-1].awaiting_answer))
    assert [aggregates_of(run) for run in runs] == [
        {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 1, "total_tool_calls": 1,
         "bash_call_count": 1},
        {"user_message_count": 1},  # the typed /compact is a prompt; nothing answers it
        {"user_message_count": 1, "turn_count": 1, "assistant_message_count": 1},
    ]  # fmt: skip
    whole = summarize(transcript).aggregates.as_dict()
    assert {key: sum(aggregates_of(run).get(key, 0) for run in runs) for key in AGGREGATE_KEYS} == whole


# Offsets as stored


def test_offsets_round_trip_and_reject_what_they_are_not() -> None:
    offsets = Offsets(10, {"agent-a1.jsonl": 3})
    assert Offsets.from_dict(offsets.as_dict()) == offsets
    for bad in (None, [], {"main": -1, "subagents": {}}, {"main": 1}, {"main": True, "subagents": {}},
                {"main": 1, "subagents": {"a": "2"}}, {"main": 1, "subagents": []}):  # fmt: skip
        with pytest.raises(ValueError):
            Offsets.from_dict(bad)


# Property: segments add up to the whole


def _line_ends(path: Path) -> List[int]:
    """Byte offsets of the entry boundaries of a file (after each newline), 0 first."""
    data = path.read_bytes()
    return [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]


def _segments(transcript: Path, cuts: Dict[str, List[int]]) -> List[Segment]:
    """Read the session segment by segment, each bounded as a SessionEnd would bound it."""
    names = sorted(name for name in cuts if name)
    segments: List[Segment] = []
    start, awaiting = Offsets(), False
    for i in range(len(cuts[""])):
        stop = Offsets(cuts[""][i], {name: cuts[name][i] for name in names})
        segment = read_segment(transcript, start, awaiting, stop)
        segments.append(segment)
        start, awaiting = segment.end, segment.awaiting_answer
    return segments


@st.composite
def cut_points(draw: st.DrawFn, transcript: Path, pieces: int) -> Dict[str, List[int]]:
    """For each file, `pieces` ascending entry boundaries, the last at its end."""
    files = {"": transcript, **{p.name: p for p in subagent_transcripts(transcript)}}
    cuts = {}
    for name, path in files.items():
        ends = _line_ends(path)
        inner = draw(st.lists(st.sampled_from(ends), min_size=pieces - 1, max_size=pieces - 1))
        cuts[name] = sorted(inner) + [ends[-1]]
    return cuts


def _as_written_by_one_run(line: Line, run: int) -> Line:
    """The line with every id made unique to its run (no message or tool call spans two runs) and no
    negative token count (sums clamped at zero add up only when no count is negative)."""

    def walk(value: object, key: str = "") -> object:
        if key in ("id", "tool_use_id", "requestId") and isinstance(value, str):
            return f"{value}@{run}"
        if key in USAGE_KEYS and type(value) is int and value < 0:
            return 0
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(line)


def _sum_of(segments: Sequence[Segment]) -> Dict[str, int]:
    return {key: sum(getattr(s.summary.aggregates, key) for s in segments) for key in AGGREGATE_KEYS}


RUN = st.tuples(st.lists(LINE, max_size=12), st.lists(st.lists(LINE, max_size=5), min_size=2, max_size=2))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(RUN, min_size=1, max_size=4))
def test_runs_of_a_resumed_session_add_up_to_the_whole(runs: List) -> None:
    """Each run appends to the main transcript and the subagent files, then its SessionEnd records their
    sizes; read run by run, every count adds up to the whole, and times are its min and max."""
    with tempfile.TemporaryDirectory() as tmp:
        transcript = _written(tmp, [], [[], []])
        cuts: Dict[str, List[int]] = {"": [], "agent-a0.jsonl": [], "agent-a1.jsonl": []}
        for i, (main, subagents) in enumerate(runs):
            append(transcript, [_as_written_by_one_run(line, i) for line in main])
            for k, lines in enumerate(subagents):
                append(transcript.with_suffix("") / "subagents" / f"agent-a{k}.jsonl", [
                    _as_written_by_one_run(line, i) for line in lines
                ])  # fmt: skip
            at_session_end = sizes_of(transcript)
            for name in cuts:
                cuts[name].append(at_session_end.subagents[name] if name else at_session_end.main)
        whole = summarize(transcript)
        segments = _segments(transcript, cuts)
        assert _sum_of(segments) == whole.aggregates.as_dict()
        assert sum(s.summary.skipped_lines for s in segments) == whole.skipped_lines
        starts = [s.summary.start_ns for s in segments if s.summary.start_ns is not None]
        ends = [s.summary.end_ns for s in segments if s.summary.end_ns is not None]
        assert (min(starts, default=None), max(ends, default=None)) == (whole.start_ns, whole.end_ns)
        assert segments[-1].end == sizes_of(transcript)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    main=st.lists(LINE, min_size=1, max_size=30),
    subagents=st.lists(st.lists(LINE, max_size=10), max_size=2),
    ids_per_entry=st.booleans(),
)
def test_segments_cut_at_any_entry_boundary_add_up(
    data: st.DataObject, main: List[Line], subagents: List[List[Line]], ids_per_entry: bool
) -> None:
    """Prompts and turns always add up. The other counts add up when no id is shared by two entries;
    otherwise the lines of one message or tool call that a cut separates count once on each side."""
    if ids_per_entry:
        main = [_as_written_by_one_run(line, i) for i, line in enumerate(main)]
        subagents = [[_as_written_by_one_run(line, 100 * k + i) for i, line in enumerate(s)] for k, s in
                     enumerate(subagents, 1)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        transcript = _written(tmp, main, subagents)
        whole = summarize(transcript).aggregates.as_dict()
        total = _sum_of(_segments(transcript, data.draw(cut_points(transcript, data.draw(st.integers(1, 4))))))
    for key in AGGREGATE_KEYS:
        if ids_per_entry or key in ("user_message_count", "turn_count"):
            assert total[key] == whole[key], key
        elif key not in TOKEN_SUM_KEYS:
            assert total[key] >= whole[key], key


TOKEN_SUM_KEYS = ("total_input_tokens", "total_output_tokens", "cache_creation_tokens", "cache_read_tokens")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(transcript_entry(), min_size=1, max_size=15),
    own=st.lists(LINE, max_size=15),
    subagents=st.lists(st.lists(LINE, max_size=5), max_size=2),
)
def test_copied_history_changes_nothing(history: List[dict], own: List[Line], subagents: List[List[Line]]) -> None:
    """A fork's transcript (copies first, then its own entries) counts exactly as its own entries alone."""
    copies = [dict(e, uuid=f"copied-{i}", sessionId="fork") for i, e in enumerate(history)]
    copies[0]["parentUuid"] = None
    own = [{k: v for k, v in line.items() if k not in ("uuid", "forkedFrom")} if isinstance(line, dict) else line
           for line in own]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        forked = read_segment(
            _written(tmp, copies + own, subagents), copied_history=lambda first: {c["uuid"] for c in copies}
        )
    alone = _summary_of(own, subagents)
    assert forked.copies == len(copies)
    assert dataclasses.replace(forked.summary, session_id=alone.session_id) == alone


# Bounds: a transcript is hostile or broken input too (README "Session aggregates").


def test_a_fifo_is_not_read_and_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "s.jsonl"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    segment = read_segment(fifo)
    assert segment.summary.aggregates == SessionAggregates() and segment.summary.start_ns is None
    assert segment.incomplete == "s.jsonl is not a regular file: not read"


def test_a_device_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "s.jsonl").symlink_to("/dev/zero")  # an endless line of NUL bytes
    segment = read_segment(tmp_path / "s.jsonl")
    assert segment.incomplete == "s.jsonl is not a regular file: not read"


def test_a_subagent_fifo_is_passed_over(tmp_path: Path) -> None:
    transcript = session(tmp_path, [prompt("hi", timestamp=stamp(1)), answer("m1", timestamp=stamp(2))])
    (tmp_path / "s" / "subagents").mkdir(parents=True)
    os.mkfifo(tmp_path / "s" / "subagents" / "agent-x.jsonl")
    assert summarize(transcript).aggregates.turn_count == 1


def test_a_huge_sparse_file_without_newlines_is_read_in_bounded_memory(tmp_path: Path, monkeypatch) -> None:
    """2 GB of zeros: one endless 'line'. It is read through in pieces, never held, and within the byte budget."""
    import tracemalloc

    path = tmp_path / "s.jsonl"
    write(path, [prompt("hi", timestamp=stamp(1)), answer("m1", timestamp=stamp(2))])
    with open(path, "r+b") as f:
        f.truncate(2 * 1024**3)  # sparse: no disk used
    monkeypatch.setattr(transcript_module, "MAX_LINE_BYTES", 1024 * 1024)
    tracemalloc.start()
    try:
        segment = read_segment(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert segment.summary.aggregates.turn_count == 1  # what came before is counted
    assert segment.summary.skipped_lines == 1
    assert segment.incomplete == f"read the first {limits.TRANSCRIPT_MAX_BYTES} bytes only"
    assert peak < 32 * 1024 * 1024, peak


def test_an_over_long_line_is_skipped_and_the_rest_counted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(transcript_module, "MAX_LINE_BYTES", 4096)
    huge = json.dumps(prompt("x" * 10_000, timestamp=stamp(3)))
    path = write(tmp_path / "s.jsonl", [prompt("hi", timestamp=stamp(1)), huge, answer("m1", timestamp=stamp(2))])
    segment = read_segment(path)
    assert (segment.summary.aggregates.user_message_count, segment.summary.skipped_lines) == (1, 1)
    assert segment.end.main == path.stat().st_size and segment.incomplete is None


def test_the_byte_and_time_budgets_stop_a_read_and_say_so(tmp_path: Path) -> None:
    lines = [prompt(f"p{i}", timestamp=stamp(i)) for i in range(1000)]
    path = write(tmp_path / "s.jsonl", lines)
    budget = transcript_module.ReadBudget(max_bytes=path.stat().st_size // 2)
    tally = transcript_module._Tally()
    end = transcript_module._read_file(path, tally, True, budget)
    assert 0 < end < path.stat().st_size and budget.stopped.startswith("read the first")
    slow = transcript_module.ReadBudget(seconds=0.0)
    transcript_module._read_file(path, transcript_module._Tally(), True, slow)
    assert slow.stopped == "stopped reading after 0 s"


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000Z", "2554-07-21T23:34:33.709Z", "2019-12-31T23:59:59Z"],
)
def test_implausible_timestamps_count_as_missing(tmp_path: Path, timestamp: str) -> None:
    path = write(tmp_path / "s.jsonl", [prompt("hi", timestamp=stamp(1)), entry("system", timestamp=timestamp)])
    summary = summarize(path)
    assert (summary.start_ns, summary.end_ns) == (parse_timestamp_ns(stamp(1)), parse_timestamp_ns(stamp(1)))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4000), cut=st.integers(min_value=1, max_value=64))
def test_fuzz_any_bytes_are_read_within_bounds(data: bytes, cut: int) -> None:
    """Whatever the bytes, the reader returns, keeps to its byte budget and never raises."""
    budget = transcript_module.ReadBudget(max_bytes=cut * 64)
    tally = transcript_module._Tally()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        path.write_bytes(data)
        end = transcript_module._read_file(path, tally, True, budget)
    assert end is not None and 0 <= end <= len(data)
    assert budget.bytes_left > -transcript_module.MAX_LINE_BYTES
    tally.summary()
