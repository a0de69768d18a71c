"""The plugin's own Python: built from the pinned requirements, with or without ensurepip, retried with backoff."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_metrics import bootstrap
from support.paths import PIP_CACHE, PLUGIN
from support.static_server import StaticServer

DEBIAN_PYTHON = Path("/usr/bin/python3.11")
DEBIAN_STDLIB = Path("/usr/lib/python3.11")


def python_without_ensurepip(root: Path) -> Path:
    """Debian's python3 as it is without the python3-venv package: its standard library minus ensurepip."""
    if not (DEBIAN_PYTHON.exists() and (DEBIAN_STDLIB / "os.py").exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's python3.11 is expected on CI machines")
        pytest.skip("needs Debian's python3.11 (/usr/bin/python3.11, /usr/lib/python3.11)")
    (root / "bin").mkdir(parents=True)
    stdlib = root / "lib" / "python3.11"
    stdlib.mkdir(parents=True)
    python = root / "bin" / "python3"
    shutil.copy2(DEBIAN_PYTHON, python)  # a copy: Python finds its library next to where it runs from
    for entry in DEBIAN_STDLIB.iterdir():
        if entry.name != "ensurepip":
            (stdlib / entry.name).symlink_to(entry)
    probe = subprocess.run([str(python), "-c", "import ensurepip"], capture_output=True)
    assert probe.returncode != 0, "the stand-in must lack ensurepip"
    return python


def test_a_python_without_ensurepip_gets_pip_from_the_index(tmp_path: Path, state: Path, monkeypatch) -> None:
    python = python_without_ensurepip(tmp_path / "debian-python")
    monkeypatch.setenv("PIP_CACHE_DIR", str(PIP_CACHE))
    bootstrap.build(str(state), str(PLUGIN), str(python))
    assert bootstrap.is_ready(str(state), str(PLUGIN))
    venv_python = bootstrap.venv_python(bootstrap.venv_dir(str(state)))
    probe = subprocess.run(
        [venv_python, "-c", "import opentelemetry.sdk, google.protobuf, requests; print('ok')"],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "ok", probe.stderr
    log = (state / bootstrap.BUILD_LOG).read_text()
    assert "--without-pip" in log and "pip-" in log
    assert sorted(p.name for p in state.iterdir()) == [bootstrap.BUILD_LOG, bootstrap.VENV_DIR]  # nothing left over


def _index_page(*links: str) -> bytes:
    return ("<html><body>" + "".join(links) + "</body></html>").encode()


def test_the_newest_pip_wheel_for_this_python_is_chosen_and_checked(tmp_path: Path, monkeypatch) -> None:
    good = b"a pip wheel"
    digest = hashlib.sha256(good).hexdigest()
    page = _index_page(
        f'<a href="../../files/pip-23.0-py3-none-any.whl#sha256={digest}">pip-23.0</a>',
        f'<a href="../../files/pip-24.1-py3-none-any.whl#sha256={digest}" data-requires-python="&gt;=3.8">x</a>',
        '<a href="../../files/pip-25.0-py3-none-any.whl#sha256=00" data-requires-python="&gt;=3.99">too new</a>',
        '<a href="../../files/pip-26.0-py3-none-any.whl#sha256=00" data-yanked="">yanked</a>',
        '<a href="../../files/pip-24.1.tar.gz#sha256=00">sdist</a>',
    )
    index = StaticServer({"/simple/pip/": page, "/files/pip-24.1-py3-none-any.whl": good})
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url + "/simple")
        path = bootstrap.fetch_pip_wheel(str(tmp_path), sys.version_info[:2])
        assert Path(path).name == "pip-24.1-py3-none-any.whl" and Path(path).read_bytes() == good
        index.files["/files/pip-24.1-py3-none-any.whl"] = b"tampered"
        with pytest.raises(bootstrap.BootstrapError, match="does not match its sha256"):
            bootstrap.fetch_pip_wheel(str(tmp_path), sys.version_info[:2])
    finally:
        index.stop()


def test_an_unreachable_index_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(bootstrap.BootstrapError, match="check the network or proxy, or set PIP_INDEX_URL"):
        bootstrap.fetch_pip_wheel(str(tmp_path), sys.version_info[:2])


def test_a_failed_build_keeps_the_venv_that_works(state: Path, monkeypatch) -> None:
    venv = Path(bootstrap.venv_dir(str(state)))
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / bootstrap.BUILT_FROM).write_text("the previous release's pins\n")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    with pytest.raises(bootstrap.BootstrapError, match=r"package index \(http://127\.0\.0\.1:9/simple\)"):
        bootstrap.build(str(state), str(PLUGIN))
    assert (venv / bootstrap.BUILT_FROM).read_text() == "the previous release's pins\n"
    assert sorted(p.name for p in state.iterdir()) == [bootstrap.BUILD_LOG, bootstrap.VENV_DIR]


def test_ready_means_built_from_the_plugins_current_requirements(state: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / bootstrap.REQUIREMENTS_FILE).write_text("requests==2.0\n")
    assert not bootstrap.is_ready(str(state), str(plugin))
    venv = Path(bootstrap.venv_dir(str(state)))
    (venv / "bin").mkdir(parents=True)
    (venv / bootstrap.BUILT_FROM).write_text("requests==2.0\n")
    assert not bootstrap.is_ready(str(state), str(plugin))  # no interpreter
    (venv / "bin" / "python").symlink_to(sys.executable)
    assert bootstrap.is_ready(str(state), str(plugin))
    (plugin / bootstrap.REQUIREMENTS_FILE).write_text("requests==3.0\n")  # an update with other pins
    assert not bootstrap.is_ready(str(state), str(plugin))
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "uninstalled-python")  # e.g. Homebrew upgraded it away
    (plugin / bootstrap.REQUIREMENTS_FILE).write_text("requests==2.0\n")
    assert not bootstrap.is_ready(str(state), str(plugin))


def test_failures_back_off_and_are_said_once(state: Path) -> None:
    env = {"CLAUDE_METRICS_BOOTSTRAP_RETRY_SECONDS": "10"}
    assert bootstrap.seconds_until_retry(str(state), env) == 0
    assert bootstrap.record_failure(str(state), "offline", env) is True
    last = json.loads((state / bootstrap.STATUS_FILE).read_text())["last_failure"]
    assert bootstrap.seconds_until_retry(str(state), env, now=last + 1) == pytest.approx(9)
    assert bootstrap.record_failure(str(state), "offline", env) is False  # the same reason: no second log line
    last = json.loads((state / bootstrap.STATUS_FILE).read_text())["last_failure"]
    assert bootstrap.seconds_until_retry(str(state), env, now=last + 1) == pytest.approx(19)  # doubled
    assert bootstrap.seconds_until_retry(str(state), env, now=last + 10_000) == 0
    assert bootstrap.record_failure(str(state), "disk full", env) is True  # a new reason is said
    assert bootstrap.record_success(str(state)) is True
    assert bootstrap.seconds_until_retry(str(state), env) == 0


def test_other_network_settings_retry_at_once(state: Path) -> None:
    env = {"CLAUDE_METRICS_BOOTSTRAP_RETRY_SECONDS": "600", "HTTPS_PROXY": "http://old-proxy:3128"}
    bootstrap.record_failure(str(state), "offline", env)
    assert bootstrap.seconds_until_retry(str(state), env) > 500
    assert bootstrap.seconds_until_retry(str(state), dict(env, HTTPS_PROXY="http://new-proxy:3128")) == 0
    assert bootstrap.seconds_until_retry(str(state), dict(env, PIP_INDEX_URL="https://mirror/simple")) == 0


@pytest.mark.parametrize(
    ("specifier", "version", "supported"),
    [
        (">=3.9", (3, 9), True),
        (">=3.9", (3, 8), False),
        (">=3.7,!=3.8.*", (3, 8), False),
        (">=3.7,!=3.8.*", (3, 11), True),
        ("<4,>=3.8", (3, 13), True),
        ("", (3, 9), True),
    ],
)
def test_requires_python(specifier: str, version: tuple, supported: bool) -> None:
    assert bootstrap._supports(specifier, version) is supported
