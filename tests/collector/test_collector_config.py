"""collector-config/: the collector accepts it, the distribution holds exactly what it uses,
one release is pinned everywhere, and the fan-out branch drops exactly the high-cardinality keys."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest
import yaml

from otel_metrics import schema
from support.collector_process import BASE_CONFIG, CONFIG_DIR, FANOUT_CONFIG
from support.paths import REPO

BUILDER_CONFIG = CONFIG_DIR / "builder-config.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
BETA_VERSION = "v0.165.0"  # the collector release pinned everywhere ...
STABLE_VERSION = "v1.71.0"  # ... and its stable-module twin


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def component_types(*configs: Path) -> Dict[str, Set[str]]:
    """The component types (the part before '/') each kind of the merged configs declares."""
    types: Dict[str, Set[str]] = {kind: set() for kind in KINDS}
    for config in configs:
        for kind in KINDS:
            types[kind] |= {name.split("/")[0] for name in (load(config).get(kind) or {})}
    return types


def builder_modules() -> List[str]:
    manifest = load(BUILDER_CONFIG)
    return [entry["gomod"] for kind in (*KINDS, "providers") for entry in manifest.get(kind, [])]


def test_every_module_is_pinned_to_one_release() -> None:
    for gomod in builder_modules():
        module, version = gomod.split()
        expected = STABLE_VERSION if "/confmap/provider/" in module else BETA_VERSION
        assert version == expected, gomod
    assert load(BUILDER_CONFIG)["dist"]["version"] == BETA_VERSION[1:]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^OCB_VERSION := (\S+)$", makefile, re.MULTILINE).group(1) == BETA_VERSION


def test_the_forwarder_pipelines_neither_aggregate_nor_rewrite() -> None:
    """Only memory_limiter: every event data point reaches the forwarder as the hook sent it."""
    base = load(BASE_CONFIG)
    for pipeline in base["service"]["pipelines"].values():
        assert pipeline == {
            "receivers": ["otlp"],
            "processors": ["memory_limiter"],
            "exporters": ["otlp_http/forwarder"],
        }
    queue = base["exporters"]["otlp_http/forwarder"]["sending_queue"]
    assert queue["storage"] == "file_storage"
    assert base["exporters"]["otlp_http/forwarder"]["retry_on_failure"]["max_elapsed_time"] == "0s"


def test_the_fanout_keeps_every_schema_key_except_the_high_cardinality_ones() -> None:
    every_key = {
        *schema.RESOURCE_KEYS,
        schema.EVENT_TYPE,
        schema.EVENT_NAME,
        schema.EVENT_PROMPT_LENGTH,
        schema.EVENT_TIMESTAMP,
        schema.SESSION_ID,
        schema.USER_ID,
        schema.SESSION_EXIT_REASON,
        schema.SESSION_SEGMENT,
        *schema.SESSION_AGGREGATE_ATTRIBUTES.values(),
    }
    redaction = load(FANOUT_CONFIG)["processors"]["redaction/bounded_cardinality"]
    assert redaction["allow_all_keys"] is False
    assert set(redaction["allowed_keys"]) == every_key - set(schema.HIGH_CARDINALITY_KEYS)
    fanout_pipelines = load(FANOUT_CONFIG)["service"]["pipelines"]
    for name in ("metrics/fanout", "traces/fanout"):
        assert fanout_pipelines[name]["processors"] == ["memory_limiter", "redaction/bounded_cardinality"]


@pytest.mark.collector
@pytest.mark.parametrize("configs", [[BASE_CONFIG], [BASE_CONFIG, FANOUT_CONFIG]], ids=["local", "compose"])
def test_the_collector_validates_the_configuration(collector_binary: Path, configs: List[Path]) -> None:
    args = [str(collector_binary), "validate", *(f"--config={config}" for config in configs)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.collector
def test_the_distribution_holds_exactly_the_components_the_configuration_uses(collector_binary: Path) -> None:
    listed = yaml.safe_load(
        subprocess.run([str(collector_binary), "components"], capture_output=True, text=True, check=True).stdout
    )
    built = {kind: {component["name"] for component in listed.get(kind) or []} for kind in KINDS}
    assert built == component_types(BASE_CONFIG, FANOUT_CONFIG)
    assert listed["buildinfo"]["version"] == BETA_VERSION[1:]
    modules = {component["module"] for kind in KINDS for component in listed.get(kind) or []}
    assert modules == {gomod for gomod in builder_modules() if "/confmap/provider/" not in gomod}
