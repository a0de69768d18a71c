"""The plugin directory as Claude Code copies it: every hook through the one entry, the package linked in,
one version, and the pinned requirements the tests themselves run."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

from otel_metrics import __version__, bootstrap
from support.paths import PLUGIN, REPO
from support.plugin_hooks import hook_commands


def test_every_hook_runs_the_one_entry() -> None:
    commands = hook_commands()
    # UserPromptExpansion fires for typed commands only: plain prompts start nothing.
    assert set(commands) == {"UserPromptExpansion", "PreToolUse", "SessionStart", "SessionEnd"}
    # SessionEnd, the one Claude Code waits for, is spooled by the shell entry itself (no interpreter).
    assert commands.pop("SessionEnd") == 'sh "${CLAUDE_PLUGIN_ROOT}/scripts/run" session-end'
    assert set(commands.values()) == {'sh "${CLAUDE_PLUGIN_ROOT}/scripts/run" hook'}
    hooks = json.loads((PLUGIN / "hooks" / "hooks.json").read_text())["hooks"]
    assert hooks["PreToolUse"][0]["matcher"] == "Skill"
    # Claude Code waits for SessionEnd only: it exits right after, and would kill an async hook
    # still reading the transcript. The others fire while the session goes on (a command or a
    # skill is followed by a model request), so their few milliseconds need not be waited for.
    assert {event: bool(entry[0]["hooks"][0].get("async")) for event, entry in hooks.items()} == {
        "UserPromptExpansion": True,
        "PreToolUse": True,
        "SessionStart": True,
        "SessionEnd": False,
    }


def test_the_package_travels_with_the_plugin_as_one_copy() -> None:
    link = PLUGIN / "otel_metrics"
    assert link.is_symlink() and link.resolve() == (REPO / "otel_metrics").resolve()


def test_one_version() -> None:
    manifest = json.loads((PLUGIN / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["version"] == __version__


def test_the_options_users_can_set() -> None:
    manifest = json.loads((PLUGIN / ".claude-plugin" / "plugin.json").read_text())
    assert set(manifest["userConfig"]) == {"metrics_url", "otlp_endpoint"}
    assert all(not option.get("required") and not option.get("sensitive") for option in manifest["userConfig"].values())


def test_the_tests_run_the_pins_users_install() -> None:
    """Every pin for this Python in plugin/requirements.txt is what the tests' venv has installed."""
    pins = {}
    for line in Path(bootstrap.requirements_path(str(PLUGIN))).read_text().splitlines():
        found = re.fullmatch(r'([A-Za-z0-9_.-]+)==(\S+) ; python_version (>=|<) "3\.10"', line.strip())
        if found and (found.group(3) == ">=") == (sys.version_info >= (3, 10)):
            pins[found.group(1)] = found.group(2)
    assert "opentelemetry-sdk" in pins and "protobuf" in pins
    assert {name: metadata.version(name) for name in pins} == pins


def test_no_message_names_a_package_that_is_not_ours() -> None:
    """PyPI's `otel-metrics` is an unrelated project (import name otel_metrics too): installing it
    would shadow nothing of ours but help no one. No message, doc or error says to install it."""
    foreign = re.compile(r"pip install\s+['\"]?otel[-_]metrics\b|otel-metrics\[")
    texts = [*REPO.glob("otel_metrics/**/*.py"), PLUGIN / "scripts" / "run", PLUGIN / "scripts" / "run.py"]
    texts += [*PLUGIN.glob("commands/*.md")]
    texts += [REPO / "README.md", *REPO.glob("docs/*.md"), REPO / "Dockerfile"]
    offenders = [str(path.relative_to(REPO)) for path in texts if foreign.search(path.read_text(errors="replace"))]
    assert offenders == []
