"""docker-compose.yml, checked without a Docker engine: it parses, what it mounts and builds
exists, its ports and service URLs agree with the collector configuration, the images are the
releases the builder manifest and the Makefile pin (tests/stack runs those), and the dashboard
queries use schema names on a stock Grafana. tests/stack runs the queries themselves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Set
from urllib.parse import urlsplit

import pytest
import yaml

from otel_metrics import schema
from otel_metrics.cli import build_parser
from otel_metrics.endpoint import exposition
from otel_metrics.store import open_store
from support.paths import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: Dict[str, dict] = COMPOSE["services"]
COLLECTOR = SERVICES["collector"]
COLLECTOR_ENV: Dict[str, str] = COLLECTOR["environment"]
CONFIG_DIR = REPO / "collector-config"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Z0-9_]+)(?::-[^}]*)?\}")
GRAFANA = REPO / "deploy" / "grafana"


def bind_mounts(service: dict) -> Dict[str, str]:
    """host path -> container path, for the volumes that are host paths."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[source] = target
    return mounts


def published(service: dict) -> Dict[int, int]:
    """container port -> host port."""
    ports = {}
    for mapping in service.get("ports", []):
        *_, host, container = mapping.split(":")
        ports[int(container)] = int(host)
    return ports


def option(service: dict, name: str) -> str:
    """The value of --name=value in the service's command."""
    [value] = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"--{name}=")]
    return value


def listen_port(service: dict) -> int:
    return int(option(service, "listen").rsplit(":", 1)[1])


def service_url(url: str) -> tuple:
    parts = urlsplit(url)
    assert parts.hostname in SERVICES, f"{url} names no service"
    return parts.hostname, parts.port, parts.path


def collector_configs() -> List[Path]:
    mounts = bind_mounts(COLLECTOR)
    [(source, target)] = [(s, t) for s, t in mounts.items() if Path(s).resolve() == CONFIG_DIR.resolve()]
    paths = []
    for arg in COLLECTOR["command"]:
        assert arg.startswith(f"--config={target}/"), arg
        paths.append(REPO / source / arg.split("=", 1)[1][len(target) + 1 :])
    return paths


def test_every_mounted_file_and_build_context_exists() -> None:
    for name, service in SERVICES.items():
        for source in bind_mounts(service):
            assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file(), name
    named = {volume.split(":")[0] for s in SERVICES.values() for volume in s.get("volumes", [])}
    assert {v for v in named if not v.startswith(".")} == set(COMPOSE["volumes"])


def test_the_collector_image_is_the_release_the_builder_manifest_pins() -> None:
    manifest = yaml.safe_load((CONFIG_DIR / "builder-config.yaml").read_text())
    image, tag = COLLECTOR["image"].split(":")
    assert image == "otel/opentelemetry-collector-contrib"
    assert tag == manifest["dist"]["version"]


def test_the_collector_runs_the_base_configuration_with_the_fanout_merged() -> None:
    assert [path.name for path in collector_configs()] == ["otelcol.yaml", "fanout.yaml"]
    for path in collector_configs():
        assert path.is_file()


def test_every_collector_variable_is_one_the_configuration_reads() -> None:
    read: Set[str] = set()
    for path in collector_configs():
        read |= set(ENV_REFERENCE.findall(path.read_text()))
    assert set(COLLECTOR_ENV) <= read
    # Everything that must differ from the local defaults inside a container is set.
    assert read - set(COLLECTOR_ENV) <= {"OTEL_METRICS_SPANMETRICS_FLUSH_INTERVAL"}


def test_the_collector_listens_where_the_readme_points_the_hooks() -> None:
    """The README's compose walk-through sets the hooks' otlp_endpoint to http://localhost:4318."""
    receiver_port = int(COLLECTOR_ENV["OTEL_METRICS_COLLECTOR_LISTEN"].rsplit(":", 1)[1])
    assert published(COLLECTOR)[receiver_port] == 4318
    assert "CLAUDE_METRICS_OTLP_ENDPOINT=http://localhost:4318" in (REPO / "README.md").read_text()
    grpc_port = int(COLLECTOR_ENV["OTEL_METRICS_COLLECTOR_GRPC_LISTEN"].rsplit(":", 1)[1])
    assert grpc_port in published(COLLECTOR)
    for listen in ("OTEL_METRICS_COLLECTOR_LISTEN", "OTEL_METRICS_HEALTH_LISTEN"):
        assert COLLECTOR_ENV[listen].startswith("0.0.0.0:"), "inside a container, listen on every interface"


def test_the_collector_exports_to_the_forwarder_which_posts_to_the_endpoint() -> None:
    host, port, path = service_url(COLLECTOR_ENV["OTEL_METRICS_FORWARDER_URL"])
    assert (host, path) == ("forwarder", "")
    assert port == listen_port(SERVICES["forwarder"])
    host, port, _ = service_url(option(SERVICES["forwarder"], "metrics-url"))
    assert (host, port) == ("endpoint", listen_port(SERVICES["endpoint"]))
    assert published(SERVICES["endpoint"])[port] == port


def test_the_fanout_reaches_prometheus_and_jaeger_by_otlp() -> None:
    host, port, path = service_url(COLLECTOR_ENV["OTEL_METRICS_PROMETHEUS_OTLP_URL"])
    assert (host, port, path) == ("prometheus", 9090, "/api/v1/otlp")
    assert "--web.enable-otlp-receiver" in SERVICES["prometheus"]["command"]
    # Delta points are stored as they come (tests/stack/test_late_and_racing.py shows why not converted).
    assert "--enable-feature=otlp-native-delta-ingestion" in SERVICES["prometheus"]["command"]
    host, port, _ = service_url(COLLECTOR_ENV["OTEL_METRICS_JAEGER_OTLP_URL"])
    assert (host, port) == ("jaeger", 4318)  # Jaeger v2's own OTLP/HTTP port, inside its container


def test_the_collector_queue_is_a_volume() -> None:
    storage = COLLECTOR_ENV["OTEL_METRICS_STORAGE_DIR"]
    targets = [volume.split(":")[1] for volume in COLLECTOR["volumes"] if not volume.startswith(".")]
    assert storage in targets


def test_prometheus_scrapes_the_collector_telemetry_and_the_endpoint() -> None:
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert f"collector:{COLLECTOR_ENV['OTEL_METRICS_TELEMETRY_PORT']}" in targets
    assert COLLECTOR_ENV["OTEL_METRICS_TELEMETRY_HOST"] == "0.0.0.0"
    assert f"endpoint:{listen_port(SERVICES['endpoint'])}" in targets  # GET /metrics


def makefile_variable(name: str) -> str:
    [value] = re.findall(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return value


def test_prometheus_and_jaeger_are_the_releases_the_tests_build() -> None:
    assert SERVICES["prometheus"]["image"] == f"prom/prometheus:v{makefile_variable('PROMETHEUS_VERSION')}"
    # Prometheus 3.x is the Go module's v0.3xx.y: 3.16.0 is v0.316.0.
    major, minor, patch = makefile_variable("PROMETHEUS_VERSION").split(".")
    assert makefile_variable("PROMETHEUS_MODULE_VERSION") == f"v0.{major}{int(minor):02d}.{patch}"
    jaeger_version = makefile_variable("JAEGER_VERSION")
    assert SERVICES["jaeger"]["image"] == f"jaegertracing/jaeger:{jaeger_version}"
    # Jaeger v2.x.y is tagged v1.(x+63).y too, and the Go module carries that tag.
    major, minor, patch = jaeger_version.split(".")
    go_mod = (REPO / "deploy" / "jaeger" / "go.mod").read_text()
    assert re.search(rf"^\tgithub.com/jaegertracing/jaeger v1\.{int(minor) + 63}\.{patch}( |$)", go_mod, re.MULTILINE)
    assert "tool github.com/jaegertracing/jaeger/cmd/jaeger" in go_mod


def test_jaeger_runs_the_configuration_the_tests_run() -> None:
    jaeger = SERVICES["jaeger"]
    assert bind_mounts(jaeger) == {"./deploy/jaeger/config.yaml": "/etc/jaeger/config.yaml"}
    assert jaeger["command"] == ["--config=/etc/jaeger/config.yaml"]
    config = (REPO / "deploy" / "jaeger" / "config.yaml").read_text()
    # The collector's fan-out reaches Jaeger's OTLP/HTTP default port; Grafana its query port.
    assert "${env:JAEGER_OTLP_HTTP_LISTEN:-0.0.0.0:4318}" in config
    assert "${env:JAEGER_QUERY_HTTP_LISTEN:-0.0.0.0:16686}" in config


@pytest.mark.parametrize("name", ["forwarder", "endpoint"])
def test_the_python_services_run_real_subcommands(name: str) -> None:
    args = build_parser().parse_args(SERVICES[name]["command"])
    assert args.run.__name__ == f"run_{name}"
    dockerfile = (REPO / SERVICES[name]["build"] / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install ", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["otel-metrics"]' in dockerfile


def grafana_datasources() -> Dict[str, dict]:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text())
    return {source["uid"]: source for source in provisioning["datasources"]}


def test_grafana_is_stock_and_its_datasources_point_at_compose_services() -> None:
    mounts = bind_mounts(SERVICES["grafana"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert not any(key.startswith("GF_PLUGINS") for key in SERVICES["grafana"].get("environment", {}))
    for uid, source in grafana_datasources().items():
        assert source["type"] in {"prometheus", "jaeger"}, uid  # built into Grafana
        host, port, _ = service_url(source["url"])
        assert (host, port) in {("prometheus", 9090), ("jaeger", 16686)}, uid


def prometheus_name(otel_name: str) -> str:
    """Prometheus' OTLP translation (underscore escaping): dots become underscores."""
    return otel_name.replace(".", "_")


def test_the_dashboard_queries_use_schema_names(tmp_path: Path) -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "plugin-usage.json").read_text())
    uids = set(grafana_datasources())
    queries = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        queries += [target.get("expr") or json.dumps(target) for target in panel["targets"]]
    text = "\n".join(queries)
    # The delta counter becomes a cumulative counter: <name>_total (a {curly} unit adds nothing).
    assert f"{prometheus_name(schema.EVENT_METRIC)}_total" in text
    for key in (schema.EVENT_TYPE, schema.EVENT_NAME, schema.SESSION_EXIT_REASON):
        assert prometheus_name(key) in text
    assert schema.SESSION_SPAN in text
    # The endpoint's counters (GET /metrics) under the names it exposes.
    store = open_store(str(tmp_path / "empty.sqlite"))
    try:
        exposed = set(re.findall(r"^(otel_metrics_endpoint_\w+)[ {]", exposition(store), re.MULTILINE))
    finally:
        store.close()
    used = set(re.findall(r"otel_metrics_endpoint_\w+", text))
    assert used and used <= exposed
    for key in schema.HIGH_CARDINALITY_KEYS:
        assert prometheus_name(key) not in text  # the fan-out removes them
