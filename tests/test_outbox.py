"""The forwarder's outbox alone (forwarder/outbox.py), on a real SQLite file: what a commit said was
written is on disk, whatever happens to the process next; the ids each request's rows got; one forwarder
per outbox; the bound; removal and dead letters, queued and written soon even when nothing follows them;
an outbox of an earlier release."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest

from otel_metrics.forwarder.outbox import (
    RESPONSE_KEPT_CHARS,
    Commit,
    DeadLetters,
    Outbox,
    OutboxInUse,
    OutboxUnavailable,
)
from support.paths import REPO
from support.processes import wait_for

# A forwarder's outbox in another process: it adds, says so once the commit is done, then dies at once
# (SIGKILL: no close, no clean-up of any kind), or holds the outbox until killed.
ADD_THEN_DIE = """
import os, signal, sys, threading
from otel_metrics.forwarder.outbox import Outbox
outbox = Outbox(sys.argv[1])
written = threading.Event()
outbox.submit([("events", '{"n": 1}', 1), ("sessions", '{"n": 2}', 2)], lambda commit: written.set())
written.wait()
print("acknowledged", flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def in_another_process(path: Path, then: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", ADD_THEN_DIE, str(path), then],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "acknowledged"
    return proc


def add(outbox: Outbox, items: Sequence[Tuple[str, str, int]]) -> Commit:
    """Submit, and wait until the writer is done with them, as the receiver does before it answers."""
    written = threading.Event()
    commits: List[Commit] = []
    outbox.submit(items, lambda commit: (commits.append(commit), written.set()))
    assert written.wait(30)
    assert commits[0].error is None
    return commits[0]


def bodies(outbox: Outbox) -> List[tuple]:
    return [(item.path, item.body) for item in outbox.oldest(1000)]


def test_what_was_acknowledged_survives_the_process_dying_at_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    proc = in_another_process(path, "die")
    assert proc.wait(15) == -signal.SIGKILL
    outbox = Outbox(str(path))  # the dead process's lock went with it
    try:
        assert bodies(outbox) == [("events", '{"n": 1}'), ("sessions", '{"n": 2}'), ("sessions", '{"n": 2}')]
        assert len(outbox) == 3
    finally:
        outbox.close()


def test_a_reopened_outbox_has_what_was_added_in_order_each_copy_its_own_row(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite")
    outbox = Outbox(path)
    before = time.time()
    first = add(outbox, [("events", "a", 1), ("events", "b", 3)])
    second = add(outbox, [("sessions", "c", 1)])
    committed = [*first.payloads(), *second.payloads()]  # what delivery is handed, ids and all
    outbox.close()
    again = Outbox(path)
    try:
        items = again.oldest(10)
        assert items == committed
        assert [(item.path, item.body) for item in items] == [("events", "a")] + [("events", "b")] * 3 + [
            ("sessions", "c")
        ]
        assert len({item.id for item in items}) == 5
        assert all(before <= (item.received or 0) <= time.time() for item in items)
        assert again.oldest_received() == items[0].received
        assert [item.body for item in again.after(items[3].id, 10)] == ["c"]
    finally:
        again.close()


def test_a_second_forwarder_on_the_outbox_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    proc = in_another_process(path, "hold")
    try:
        with pytest.raises(OutboxInUse) as refused:
            Outbox(str(path))
        assert refused.value.pid == proc.pid
        assert str(refused.value) == (
            f"the outbox {path} is in use by another forwarder (pid {proc.pid}); "
            "stop it, or give this one its own --outbox"
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(15) == 0
    Outbox(str(path)).close()  # once it left, the outbox is free


def test_beyond_its_bound_nothing_of_a_request_is_taken(tmp_path: Path) -> None:
    outbox = Outbox(str(tmp_path / "outbox.sqlite"), max_items=3)
    try:
        add(outbox, [("events", "a", 2)])
        with pytest.raises(OutboxUnavailable, match=r"^the outbox is full \(2 payloads waiting\)$"):
            outbox.submit([("events", "b", 1), ("events", "c", 1)], lambda commit: None)  # all or none
        assert bodies(outbox) == [("events", "a")] * 2
        add(outbox, [("events", "b", 1)])  # what fits is taken
        assert len(outbox) == 3
    finally:
        outbox.close()


def test_a_request_larger_than_the_bound_is_taken_into_an_empty_outbox(tmp_path: Path) -> None:
    """Refusing it would have the sender retry it forever."""
    outbox = Outbox(str(tmp_path / "outbox.sqlite"), max_items=2)
    try:
        add(outbox, [("events", "a", 5)])
        assert len(outbox) == 5
    finally:
        outbox.close()


def test_concurrent_requests_are_each_committed_whole(tmp_path: Path) -> None:
    outbox = Outbox(str(tmp_path / "outbox.sqlite"))
    added = []
    try:

        def request(n: int) -> None:
            add(outbox, [("events", f"{n}-a", 1), ("events", f"{n}-b", 2)])
            added.append(n)

        threads = [threading.Thread(target=request, args=(n,)) for n in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(added) == list(range(30))
        assert len(outbox) == 90
        assert sorted(body for _, body in bodies(outbox)) == sorted(
            body for n in range(30) for body in (f"{n}-a", f"{n}-b", f"{n}-b")
        )
    finally:
        outbox.close()


def test_removed_and_dead_lettered_payloads_leave_and_stay_gone(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite")
    outbox = Outbox(path)
    add(outbox, [("events", "delivered", 1), ("events", "refused", 1), ("events", "waiting", 1)])
    delivered, refused, _ = outbox.oldest(3)
    outbox.remove(delivered.id)
    outbox.dead_letter(refused, 400, "x" * (RESPONSE_KEPT_CHARS + 10))
    assert len(outbox) == 1  # at once; the rows go with the writer's next transaction
    outbox.close()  # which closing waits for
    again = Outbox(path)
    try:
        assert bodies(again) == [("events", "waiting")]
        assert again.get(delivered.id) is None and again.get(refused.id) is None
        assert (len(again), again.dead_letter_count()) == (1, 1)
        add(again, [("events", "new", 1)])
        assert [item.id for item in again.oldest()] == [refused.id + 1, refused.id + 2]  # ids are never reused
    finally:
        again.close()
    letters = DeadLetters(path)
    try:
        [letter] = letters.list()
        assert (letter.path, letter.body, letter.status) == ("events", "refused", 400)
        assert letter.received == refused.received
        assert letter.response == "x" * RESPONSE_KEPT_CHARS
        letters.refused_again(letter.id, 422, "still no")
        assert [(dead.status, dead.response) for dead in letters.list()] == [(422, "still no")]
        letters.delivered(letter.id)
        assert letters.list() == []
    finally:
        letters.close()


def test_a_removal_is_written_at_once_without_an_add_to_go_with(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(str(path))
    try:
        [item] = add(outbox, [("events", "delivered", 1)]).payloads()
        outbox.remove(item.id)
        with sqlite3.connect(path) as other:  # what a process reading the file sees
            wait_for(lambda: other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0)
        other.close()
    finally:
        outbox.close()


def test_a_closed_outbox_takes_nothing_more(tmp_path: Path) -> None:
    outbox = Outbox(str(tmp_path / "outbox.sqlite"))
    add(outbox, [("events", "a", 1)])
    outbox.close()
    with pytest.raises(OutboxUnavailable, match="^the forwarder is shutting down$"):
        outbox.submit([("events", "b", 1)], lambda commit: None)
    assert outbox.oldest() == [] and outbox.get(1) is None


def test_an_outbox_of_an_earlier_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, body TEXT NOT NULL)"
        )
        old.execute("INSERT INTO outbox (path, body) VALUES ('events', 'queued before')")
    old.close()
    outbox = Outbox(str(path))
    try:
        add(outbox, [("events", "queued after", 1)])
        first, second = outbox.oldest(10)
        assert (first.body, first.received) == ("queued before", None)  # its time is unknown, not made up
        assert second.body == "queued after" and second.received is not None
        assert outbox.oldest_received() is None
    finally:
        outbox.close()
