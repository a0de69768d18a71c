"""Where the metrics go: the documented order of environment, plugin options and configuration files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otel_metrics import config


@pytest.fixture
def places(state: Path, tmp_path: Path):
    """A state directory and a plugin root, for a config.json each, and an environment naming them."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    env = {config.ENV_STATE_DIR: str(state), config.ENV_PLUGIN_ROOT: str(plugin)}
    return state, plugin, env


def write(directory: Path, **settings: object) -> Path:
    path = directory / config.CONFIG_FILE
    path.write_text(json.dumps(settings))
    return path


def test_defaults_are_the_production_url_and_the_embedded_forwarder(places) -> None:
    _, _, env = places
    assert config.resolve(config.METRICS_URL, env) == (config.DEFAULT_METRICS_URL, "default")
    assert config.metrics_url(env) == config.DEFAULT_METRICS_URL
    assert config.otlp_endpoint(env) is None


def test_each_source_overrides_the_ones_after_it(places) -> None:
    state, plugin, env = places
    maintainer = write(plugin, metrics_url="https://maintainer/", otlp_endpoint="http://maintainer:4318")
    assert config.resolve(config.METRICS_URL, env) == ("https://maintainer/", str(maintainer))
    assert config.metrics_url(env) == "https://maintainer"
    assert config.otlp_endpoint(dict(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://otel:4318")) == "http://maintainer:4318"
    user = write(state, metrics_url="https://user")
    assert config.resolve(config.METRICS_URL, env) == ("https://user", str(user))
    assert config.otlp_endpoint(env) == "http://maintainer:4318"  # each setting resolves on its own
    option = dict(env, CLAUDE_PLUGIN_OPTION_METRICS_URL="https://option")
    assert config.resolve(config.METRICS_URL, option) == ("https://option", "CLAUDE_PLUGIN_OPTION_METRICS_URL")
    variable = dict(option, CLAUDE_METRICS_URL="https://variable")
    assert config.resolve(config.METRICS_URL, variable) == ("https://variable", "CLAUDE_METRICS_URL")


def test_the_documented_order_first_found_wins(places) -> None:
    """The module's order, top to bottom: each source, taken away, hands over to the next one."""
    state, plugin, env = places
    user, maintainer = write(state, otlp_endpoint="http://user:4318"), write(plugin, otlp_endpoint="http://plugin:4318")
    env = dict(
        env,
        CLAUDE_METRICS_OTLP_ENDPOINT="http://variable:4318",
        CLAUDE_PLUGIN_OPTION_OTLP_ENDPOINT="http://option:4318",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://otel:4318",
    )
    order = [
        ("http://variable:4318", "CLAUDE_METRICS_OTLP_ENDPOINT"),
        ("http://option:4318", "CLAUDE_PLUGIN_OPTION_OTLP_ENDPOINT"),
        ("http://user:4318", str(user)),  # <state>/config.json: the user's own, kept across plugin updates
        ("http://plugin:4318", str(maintainer)),
        ("http://otel:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (None, "default"),
    ]
    for value, source in order:
        assert config.resolve(config.OTLP_ENDPOINT, env) == (value, source)
        if source in env:
            del env[source]
        elif source != "default":
            Path(source).unlink()


def test_otel_variable_comes_last_and_embedded_overrides_a_collector(places) -> None:
    _, plugin, env = places
    assert config.otlp_endpoint(dict(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://otel:4318/")) == "http://otel:4318"
    write(plugin, otlp_endpoint="http://maintainer:4318")
    assert config.otlp_endpoint(dict(env, CLAUDE_PLUGIN_OPTION_OTLP_ENDPOINT="embedded")) is None
    assert config.otlp_endpoint(dict(env, CLAUDE_METRICS_OTLP_ENDPOINT="Embedded")) is None


@pytest.mark.parametrize("content", ["{not json", "[]", '{"metrics_url": 7}', '{"metrics_url": ""}'])
def test_a_broken_config_file_is_passed_over(places, content: str) -> None:
    state, plugin, env = places
    (state / config.CONFIG_FILE).write_text(content)
    write(plugin, metrics_url="https://maintainer")
    assert config.metrics_url(env) == "https://maintainer"


def test_state_directory_order() -> None:
    assert config.state_dir({"CLAUDE_METRICS_DIR": "/a", "CLAUDE_PLUGIN_DATA": "/b"}) == "/a"
    assert config.state_dir({"CLAUDE_PLUGIN_DATA": "/b", "CLAUDE_PLUGIN_ROOT": "/c"}) == "/b"
    assert config.state_dir({"CLAUDE_PLUGIN_ROOT": "/c"}) == "/c"


def test_the_plugin_ships_a_config_file_with_the_production_url() -> None:
    shipped = json.loads((Path(config.plugin_root({})) / config.CONFIG_FILE).read_text())
    assert shipped == {"metrics_url": config.DEFAULT_METRICS_URL, "otlp_endpoint": None}


def test_hook_settings_are_the_plugins_variables_and_the_network() -> None:
    env = {
        "CLAUDE_METRICS_URL": "u",
        "CLAUDE_PLUGIN_ROOT": "r",
        "CLAUDE_PLUGIN_OPTION_METRICS_URL": "o",
        "PIP_INDEX_URL": "i",
        "https_proxy": "p",
        "HOME": "/home/someone",
        "CLAUDECODE": "1",
    }
    assert config.hook_settings(env) == {k: env[k] for k in list(env)[:5]}
