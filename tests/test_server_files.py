"""What the forwarder and the endpoint write is their owner's alone: files 0600 and the directories they
make 0700, whatever umask they were started with (payloads, user ids and addresses are in there)."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Dict

from otel_metrics.payloads import event_payload
from support.legacy_sink import LegacySink
from support.otlp_requests import SKILL_EVENT, post_metrics
from support.processes import EndpointProcess, ForwarderProcess, run_cli, wait_for

POISON = dataclasses.replace(SKILL_EVENT, name="poison")


def modes(root: Path) -> Dict[str, int]:
    """Permission bits of everything under root (not root itself), by relative path; dirs end with /."""
    found = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            path = Path(directory, name)
            found[f"{path.relative_to(root)}/"] = stat.S_IMODE(path.stat().st_mode)
        for name in files:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_everything_the_servers_write_is_private_under_umask_022(tmp_path: Path) -> None:
    root = tmp_path / "servers"  # made here; everything below it, by the servers
    root.mkdir()
    endpoint = EndpointProcess(root / "endpoint" / "db" / "endpoint.sqlite")
    endpoint.umask = 0o022
    endpoint.start()
    gate = LegacySink(endpoint.url)
    gate.answer = lambda target, payload: 400 if payload["name"] == POISON.name else None
    outbox = root / "forwarder" / "state" / "outbox.sqlite"
    address = root / "forwarder" / "run" / "address.json"
    forwarder = ForwarderProcess(gate.url, outbox, ["--address-file", str(address)], None)
    forwarder.umask = 0o022
    forwarder.start()
    try:
        assert post_metrics(forwarder.url, SKILL_EVENT, POISON).status_code == 200
        wait_for(lambda: endpoint.events() == [event_payload(SKILL_EVENT)])
        wait_for(lambda: "1 dead letter" in run_cli("forwarder", "dead-letters", "--outbox", str(outbox)).stdout)
        running = modes(root)
    finally:
        forwarder.stop()
        gate.close()
        endpoint.stop()
    expected = {
        "endpoint/", "endpoint/db/", "endpoint/db/endpoint.sqlite", "endpoint/db/endpoint.sqlite-wal",
        "endpoint/db/endpoint.sqlite-shm", "forwarder/", "forwarder/state/", "forwarder/state/outbox.sqlite",
        "forwarder/state/outbox.sqlite-wal", "forwarder/state/outbox.sqlite-shm", "forwarder/state/outbox.sqlite.lock",
        "forwarder/run/", "forwarder/run/address.json",
    }  # fmt: skip
    assert set(running) == expected  # the database journals and the lock and address files too
    assert {path: mode for path, mode in running.items() if mode != (0o700 if path.endswith("/") else 0o600)} == {}
    left = modes(root)
    assert {path: mode for path, mode in left.items() if mode != (0o700 if path.endswith("/") else 0o600)} == {}
