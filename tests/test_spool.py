"""The local spool alone (spool.py): records written whole and private, listed oldest first, set aside
and dropped within their bounds, and the poke a hook leaves for a running exporter."""

from __future__ import annotations

import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from otel_metrics import spool

RECORD = {"record": spool.EVENT, "kind": "skill", "name": "pdf:extract", "session_id": "s1", "timestamp": 1}


def spooled(state: Path) -> list:
    return sorted(os.listdir(state / spool.SPOOL_DIR))


def test_a_record_is_one_private_file_named_by_the_time_it_was_written(state: Path) -> None:
    before = time.time_ns()
    name = spool.append(str(state), RECORD)
    after = time.time_ns()
    assert spooled(state) == [name]  # no temporary file left beside it
    assert name.endswith(spool.SUFFIX) and not name.endswith(spool.NO_WAKE_SUFFIX)
    assert before <= spool.written_ns(name) <= after
    assert spool.read(str(state), name) == RECORD
    assert stat.S_IMODE((state / spool.SPOOL_DIR / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((state / spool.SPOOL_DIR).stat().st_mode) == 0o700


def test_records_are_listed_oldest_first_and_only_whole_ones(state: Path) -> None:
    names = [spool.append(str(state), dict(RECORD, timestamp=n)) for n in range(5)]
    (state / spool.SPOOL_DIR / f".{spool.record_name(1, 'x')}.tmp").write_text("{half")  # a hook still writing
    (state / spool.SPOOL_DIR / "notes.txt").write_text("not a record")
    assert spool.pending(str(state)) == names
    assert [spool.read(str(state), name)["timestamp"] for name in names] == list(range(5))


def test_concurrent_hooks_never_collide(state: Path) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        names = list(pool.map(lambda n: spool.append(str(state), dict(RECORD, timestamp=n)), range(200)))
    assert len(set(names)) == 200
    assert sorted(spool.read(str(state), name)["timestamp"] for name in spool.pending(str(state))) == list(range(200))


def test_records_that_wake_no_exporter_wait_for_one(state: Path) -> None:
    assert not spool.has_work(str(state))  # no spool at all
    start = spool.append(str(state), {"record": spool.SESSION_START, "session_id": "s1"}, wake=False)
    assert start.endswith(spool.NO_WAKE_SUFFIX)
    assert spool.pending(str(state)) == [start]  # the exporter sends it with the next
    assert not spool.has_work(str(state))
    spool.append(str(state), RECORD)
    assert spool.has_work(str(state))


def test_a_hook_input_the_shell_spooled_is_work_but_no_record(state: Path) -> None:
    spool.append(str(state), {"record": spool.SESSION_START, "session_id": "s1"}, wake=False)
    (state / spool.SPOOL_DIR / ".session-end-7.tmp").write_text("{")  # still being written: nothing yet
    assert not spool.has_work(str(state)) and spool.hook_inputs(str(state)) == []
    (state / spool.SPOOL_DIR / "session-end-7.hookinput").write_text("{}")
    assert spool.has_work(str(state))
    assert spool.hook_inputs(str(state)) == ["session-end-7.hookinput"]
    assert all(name.endswith(spool.NO_WAKE_SUFFIX) for name in spool.pending(str(state)))


def test_a_record_that_is_gone_or_not_a_json_object_reads_as_none(state: Path) -> None:
    name = spool.append(str(state), RECORD)
    for text in ("{not json", "[1, 2]", '"a string"'):
        (state / spool.SPOOL_DIR / name).write_text(text)
        assert spool.read(str(state), name) is None
    spool.remove(str(state), name)
    spool.remove(str(state), name)  # removing twice is no error: another round may have removed it
    assert spool.read(str(state), name) is None
    assert spool.pending(str(state)) == []


def test_write_replaces_a_record_whole_under_its_name(state: Path) -> None:
    name = spool.record_name(time.time_ns(), "session-0001") + spool.SUFFIX
    spool.write(str(state), name, {"record": spool.SESSION, "segment": 0})
    spool.write(str(state), name, {"record": spool.SESSION, "segment": 1})
    assert spool.pending(str(state)) == [name]
    assert spool.read(str(state), name) == {"record": spool.SESSION, "segment": 1}


def test_names_sort_by_the_time_they_were_written(state: Path) -> None:
    early, late = spool.record_name(999, "b"), spool.record_name(1000, "a")
    assert sorted([late, early]) == [early, late]  # zero-padded: text order is time order
    assert (spool.written_ns(early), spool.written_ns(late)) == (999, 1000)
    assert spool.written_ns("not-a-time.json") == 0


# Set aside: records that can never be sent leave the spool, with why, and stay bounded.


def test_a_record_set_aside_leaves_the_spool_with_its_reason(state: Path) -> None:
    name = spool.append(str(state), RECORD)
    spool.set_aside(str(state), name, "refused for good (HTTP 400)")
    assert spool.pending(str(state)) == []
    rejected = state / spool.REJECTED_DIR
    assert json.loads((rejected / name).read_text()) == RECORD
    assert (rejected / (name + ".why")).read_text() == "refused for good (HTTP 400)\n"
    spool.set_aside(str(state), name, "again")  # gone from the spool already: nothing happens
    assert (rejected / (name + ".why")).read_text() == "refused for good (HTTP 400)\n"


def test_set_aside_records_are_bounded_the_newest_kept(state: Path) -> None:
    names = [spool.append(str(state), dict(RECORD, timestamp=n)) for n in range(spool.REJECTED_MAX_RECORDS + 5)]
    for name in names:
        spool.set_aside(str(state), name, "unreadable")
    kept = sorted(os.listdir(state / spool.REJECTED_DIR))
    newest = names[5:]
    assert kept == sorted([*newest, *(name + ".why" for name in newest)])


# Bounds: the spool of a machine that is never online stays small.


def test_beyond_max_items_the_oldest_records_are_dropped(state: Path) -> None:
    names = [spool.append(str(state), dict(RECORD, timestamp=n)) for n in range(7)]
    assert spool.enforce_bounds(str(state), max_items=3, max_age_seconds=3600) == 4
    assert spool.pending(str(state)) == names[4:]
    assert spool.enforce_bounds(str(state), max_items=3, max_age_seconds=3600) == 0


def test_records_older_than_max_age_are_dropped(state: Path) -> None:
    now = time.time()
    old = spool.record_name(int((now - 7200) * 1e9), "old") + spool.SUFFIX
    spool.write(str(state), old, RECORD)
    fresh = spool.append(str(state), RECORD)
    assert spool.enforce_bounds(str(state), max_items=100, max_age_seconds=3600, now=now) == 1
    assert spool.pending(str(state)) == [fresh]


def test_temporary_files_a_killed_hook_left_are_swept_once_old(state: Path) -> None:
    spool.append(str(state), RECORD)
    directory = state / spool.SPOOL_DIR
    left, writing = directory / ".00000000000000000001-1-dead.tmp", directory / ".00000000000000000002-2-live.tmp"
    left.write_text("{half")
    writing.write_text("{half")
    os.utime(left, (time.time() - 7200, time.time() - 7200))  # a hook killed two hours ago
    assert spool.enforce_bounds(str(state), max_items=100, max_age_seconds=3600) == 0  # no record dropped
    assert not left.exists()
    assert writing.exists()  # a hook may be writing it now


def test_bounds_of_a_state_without_a_spool(state: Path) -> None:
    assert spool.enforce_bounds(str(state), max_items=1, max_age_seconds=1) == 0
    assert spool.pending(str(state)) == []


# The poke: how a hook tells a running exporter that it fired, and with which settings.


def test_each_poke_changes_the_token_and_carries_the_hooks_settings(state: Path) -> None:
    assert (spool.last_poke(str(state)), spool.poked_settings(str(state))) == (None, None)
    spool.poke(str(state), {"CLAUDE_METRICS_URL": "https://a"})
    first = spool.last_poke(str(state))
    assert spool.poked_settings(str(state)) == {"CLAUDE_METRICS_URL": "https://a"}
    spool.poke(str(state), {"CLAUDE_METRICS_URL": "https://b"})
    assert spool.last_poke(str(state)) != first  # a new file renamed into place: a new inode
    assert spool.poked_settings(str(state)) == {"CLAUDE_METRICS_URL": "https://b"}
    assert spool.pending(str(state)) == []  # the poke is no record
    assert [name for name in spooled(state) if name.endswith(".tmp")] == []
