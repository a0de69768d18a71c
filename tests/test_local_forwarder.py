"""The embedded default's forwarder: started on demand, one per state directory, found again, restarted
for a new metrics URL, gone when idle. Real processes on loopback."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

from otel_metrics.exporter import local_forwarder
from support.processes import wait_for


def forwarder(state: Path, idle: float = 60.0) -> local_forwarder.LocalForwarder:
    return local_forwarder.LocalForwarder(str(state), dict(os.environ, PYTHONPATH=str(Path.cwd())), idle)


def test_started_on_demand_then_found_again(state: Path, endpoint_server) -> None:
    url = forwarder(state).url(endpoint_server.url)
    assert url is not None and url.startswith("http://127.0.0.1:") and not url.endswith(":4318")
    address = local_forwarder.running(str(state))
    assert address == {"url": url, "pid": address["pid"], "metrics_url": endpoint_server.url}
    assert forwarder(state).url(endpoint_server.url) == url  # the same process, not a second one
    assert requests.post(url + "/v1/metrics", data=b"", headers={"Content-Type": "application/x-protobuf"}).ok
    assert (state / "forwarder" / "address.json").stat().st_mode & 0o777 == 0o600


def test_one_per_state_directory_when_started_at_once(state: Path, endpoint_server) -> None:
    urls = []
    threads = [
        threading.Thread(target=lambda: urls.append(forwarder(state).url(endpoint_server.url))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(urls)) == 1 and None not in urls
    log = (state / "forwarder" / local_forwarder.LOG_FILE).read_text()
    assert log.count("listening on") == 1


def test_a_new_metrics_url_restarts_it(state: Path, endpoint_server, tmp_path: Path) -> None:
    first = forwarder(state).url(endpoint_server.url)
    old_pid = local_forwarder.running(str(state))["pid"]
    second = forwarder(state).url("http://127.0.0.1:9/elsewhere")
    address = local_forwarder.running(str(state))
    assert address["metrics_url"] == "http://127.0.0.1:9/elsewhere" and address["pid"] != old_pid
    assert second is not None and first is not None


def test_a_stale_address_is_not_trusted(state: Path, endpoint_server) -> None:
    folder = state / "forwarder"
    folder.mkdir()
    (folder / "address.json").write_text('{"url": "http://127.0.0.1:9", "pid": 999999999, "metrics_url": "x"}')
    assert local_forwarder.running(str(state)) is None
    assert forwarder(state).url(endpoint_server.url) != "http://127.0.0.1:9"


def test_it_leaves_when_idle_with_an_empty_outbox(state: Path, endpoint_server) -> None:
    forwarder(state, idle=1.0).url(endpoint_server.url)
    wait_for(lambda: local_forwarder.running(str(state)) is None, 30)
    assert not (state / "forwarder" / "address.json").exists()


def test_a_forwarder_that_cannot_start_says_so(state: Path, caplog) -> None:
    broken = local_forwarder.LocalForwarder(str(state), {"PYTHONHOME": "/nonexistent"}, 60.0)  # no stdlib
    assert broken.url("http://127.0.0.1:9") is None
    assert "the local forwarder exited with status" in caplog.text
