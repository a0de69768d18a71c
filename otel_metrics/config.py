"""Configuration from the environment (and the state directory), in one place.

Stdlib only and import-cheap: the hook fast path uses it.
"""

import os
import sys

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Mapping, Optional

DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318"
# The production endpoint of the legacy metrics service (from the seed plugin).
DEFAULT_METRICS_URL = "https://us-central1-openshift-ci-data-analysis.cloudfunctions.net/metrics-upload"
DEFAULT_FORWARDER_LISTEN = "127.0.0.1:4318"
DEFAULT_ENDPOINT_LISTEN = "127.0.0.1:8080"

ENV_STATE_DIR = "CLAUDE_METRICS_DIR"
ENV_PLUGIN_DATA = "CLAUDE_PLUGIN_DATA"
ENV_PLUGIN_ROOT = "CLAUDE_PLUGIN_ROOT"
ENV_OTLP_ENDPOINT = "CLAUDE_METRICS_OTLP_ENDPOINT"
ENV_OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_METRICS_URL = "CLAUDE_METRICS_URL"
ENV_VERBOSE = "CLAUDE_METRICS_VERBOSE"
ENV_DISABLED = "CLAUDE_METRICS_DISABLED"
ENV_EXPORTER_PYTHON = "CLAUDE_METRICS_PYTHON"  # interpreter with the OTel SDK, for the background exporter

TRUE_WORDS = ("1", "true", "yes", "on")

ANONYMOUS_ID_FILE = ".anonymous_id"
LOG_FILE = "metrics.log"
CONFIG_FILE = "config.json"  # optional {"otlp_endpoint": "..."} in the state directory


def is_true(value: "Optional[str]") -> bool:
    return (value or "").strip().lower() in TRUE_WORDS


def disabled(env: "Mapping[str, str]" = os.environ) -> bool:
    return is_true(env.get(ENV_DISABLED))


def verbose(env: "Mapping[str, str]" = os.environ) -> bool:
    return is_true(env.get(ENV_VERBOSE))


def plugin_root(env: "Mapping[str, str]" = os.environ) -> str:
    """The plugin's directory: Claude Code sets it; else the one holding scripts/."""
    root = env.get(ENV_PLUGIN_ROOT)
    if root:
        return root
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else os.getcwd()
    return os.path.dirname(os.path.dirname(script))


def state_dir(env: "Mapping[str, str]" = os.environ) -> str:
    """Where the anonymous id, the log and the spool live.

    $CLAUDE_METRICS_DIR, else $CLAUDE_PLUGIN_DATA (survives plugin updates),
    else the plugin root (the seed's behaviour).
    """
    return env.get(ENV_STATE_DIR) or env.get(ENV_PLUGIN_DATA) or plugin_root(env)


def metrics_url(env: "Mapping[str, str]" = os.environ) -> str:
    return (env.get(ENV_METRICS_URL) or DEFAULT_METRICS_URL).rstrip("/")


def otlp_endpoint(env: "Mapping[str, str]" = os.environ, state: "Optional[str]" = None) -> str:
    """Base OTLP/HTTP URL for the hooks' exports.

    Claude Code strips OTEL_* variables from hook processes, so our own variable
    (or the state directory's config file) comes first.
    """
    endpoint = env.get(ENV_OTLP_ENDPOINT)
    if not endpoint:
        endpoint = _config_file_value(state or state_dir(env), "otlp_endpoint")
    if not endpoint:
        endpoint = env.get(ENV_OTEL_ENDPOINT)
    return (endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/")


def _config_file_value(state: str, key: str) -> "Optional[str]":
    import json  # not on the hook's fast path: only the exporter resolves endpoints

    try:
        with open(os.path.join(state, CONFIG_FILE), encoding="utf-8") as f:
            value = json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def os_name(platform: str = sys.platform) -> str:
    """darwin | linux | windows, as the payloads and os.type want it."""
    if platform.startswith("win") or platform == "cygwin":
        return "windows"
    if platform == "darwin":
        return "darwin"
    return "linux"


# Tuning of the background exporter and its spool (generous defaults).
ENV_SPOOL_MAX_ITEMS = "CLAUDE_METRICS_SPOOL_MAX_ITEMS"
ENV_SPOOL_MAX_AGE_HOURS = "CLAUDE_METRICS_SPOOL_MAX_AGE_HOURS"
ENV_SESSION_QUIET_MINUTES = "CLAUDE_METRICS_SESSION_QUIET_MINUTES"
ENV_EXPORTER_IDLE_SECONDS = "CLAUDE_METRICS_EXPORTER_IDLE_SECONDS"
ENV_EXPORT_TIMEOUT_SECONDS = "CLAUDE_METRICS_EXPORT_TIMEOUT_SECONDS"


def number(env: "Mapping[str, str]", name: str, default: float) -> float:
    """A positive number from the environment, else the default."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is this machine: such traffic must bypass HTTP(S)_PROXY."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
