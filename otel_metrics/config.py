"""Configuration from the environment and the configuration files, in one place.

Where the metrics go is decided in this order, first found wins (`resolve`):

1. the environment: `CLAUDE_METRICS_URL`, `CLAUDE_METRICS_OTLP_ENDPOINT`;
2. the plugin's options (`userConfig` in plugin.json), which Claude Code hands to
   hooks as `CLAUDE_PLUGIN_OPTION_METRICS_URL` / `CLAUDE_PLUGIN_OPTION_OTLP_ENDPOINT`;
3. `<state dir>/config.json`, the user's own file (it survives plugin updates);
4. `<plugin root>/config.json`, the file the marketplace maintainer ships in the plugin;
5. `OTEL_EXPORTER_OTLP_ENDPOINT` (the OTLP endpoint only; Claude Code strips every
   OTEL_* variable from hooks, so this serves runs outside Claude Code);
6. the defaults: the production metrics URL, and no OTLP endpoint, which means the
   embedded default: the plugin runs its own forwarder on loopback.

Stdlib only and import-cheap: the hook fast path uses it.
"""

import os
import sys

TYPE_CHECKING = False  # typing imports `re`; the hook's fast path must not pay for it
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional, Tuple

# The production endpoint of the legacy metrics service, which the plugin replaces.
DEFAULT_METRICS_URL = "https://us-central1-openshift-ci-data-analysis.cloudfunctions.net/metrics-upload"
DEFAULT_FORWARDER_LISTEN = "127.0.0.1:4318"
DEFAULT_ENDPOINT_LISTEN = "127.0.0.1:8080"
# `otel-metrics forwarder` exits with this when another forwarder holds its outbox.
FORWARDER_EXIT_OUTBOX_IN_USE = 3
# An OTLP endpoint of this value means "none": deliver through the embedded forwarder, even
# where a configuration file further down the order names a collector.
EMBEDDED = "embedded"

ENV_STATE_DIR = "CLAUDE_METRICS_DIR"
ENV_PLUGIN_DATA = "CLAUDE_PLUGIN_DATA"
ENV_PLUGIN_ROOT = "CLAUDE_PLUGIN_ROOT"
ENV_OTLP_ENDPOINT = "CLAUDE_METRICS_OTLP_ENDPOINT"
ENV_OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_METRICS_URL = "CLAUDE_METRICS_URL"
ENV_VERBOSE = "CLAUDE_METRICS_VERBOSE"
ENV_DISABLED = "CLAUDE_METRICS_DISABLED"
ENV_EXPORTER_PYTHON = "CLAUDE_METRICS_PYTHON"  # an interpreter that has the dependencies: no bootstrap
# Claude Code hands a plugin's userConfig options to its hooks as CLAUDE_PLUGIN_OPTION_<KEY>.
ENV_OPTION_PREFIX = "CLAUDE_PLUGIN_OPTION_"

TRUE_WORDS = ("1", "true", "yes", "on")

ANONYMOUS_ID_FILE = ".anonymous_id"
LOG_FILE = "metrics.log"
CONFIG_FILE = "config.json"  # {"metrics_url": ..., "otlp_endpoint": ...}, in the state dir or the plugin root

# The settings `resolve` knows: key in the config files -> (environment variable, plugin option key).
METRICS_URL = "metrics_url"
OTLP_ENDPOINT = "otlp_endpoint"
_SETTING_VARIABLES = {
    METRICS_URL: ENV_METRICS_URL,
    OTLP_ENDPOINT: ENV_OTLP_ENDPOINT,
}


def is_true(value: "Optional[str]") -> bool:
    return (value or "").strip().lower() in TRUE_WORDS


def disabled(env: "Mapping[str, str]" = os.environ) -> bool:
    return is_true(env.get(ENV_DISABLED))


def verbose(env: "Mapping[str, str]" = os.environ) -> bool:
    return is_true(env.get(ENV_VERBOSE))


def plugin_root(env: "Mapping[str, str]" = os.environ) -> str:
    """The plugin's directory: Claude Code sets it; else the one that holds this package."""
    root = env.get(ENV_PLUGIN_ROOT)
    if root:
        return root
    # <plugin>/otel_metrics/config.py: in a clone <plugin>/otel_metrics is a link to the package.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    beside = os.path.join(package_parent, "plugin")
    return beside if os.path.isfile(os.path.join(beside, ".claude-plugin", "plugin.json")) else package_parent


def state_dir(env: "Mapping[str, str]" = os.environ) -> str:
    """Where the anonymous id, the log, the spool and the plugin's own Python live.

    $CLAUDE_METRICS_DIR, else $CLAUDE_PLUGIN_DATA (survives plugin updates),
    else the plugin root.
    """
    return env.get(ENV_STATE_DIR) or env.get(ENV_PLUGIN_DATA) or plugin_root(env)


# Variables a background process's work depends on: the plugin's own, and how it reaches the
# network (pip's settings and proxies, for installing the dependencies and for delivery).
_SETTINGS_PREFIXES = ("CLAUDE_METRICS_", "CLAUDE_PLUGIN_", "PIP_")
_NETWORK_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def network_settings(env: "Mapping[str, str]" = os.environ) -> "Dict[str, str]":
    """How this process reaches the network: pip's settings and proxies."""
    return {k: env[k] for k in env if k.startswith("PIP_") or k.upper() in _NETWORK_VARIABLES}


def hook_settings(env: "Mapping[str, str]" = os.environ) -> "Dict[str, str]":
    """The variables that configure the plugin's background work, as a hook sees them.

    Hooks hand them to a running exporter (spool.poke), which restarts itself when they
    differ from its own: a changed option, a plugin update (a new plugin root), a fixed proxy.
    One pass over the names, values looked up only for the few that match: os.environ
    decodes every item it yields, and this runs on the hooks' fast path.
    """
    return {k: env[k] for k in env if k.startswith(_SETTINGS_PREFIXES) or k.upper() in _NETWORK_VARIABLES}


def resolve(key: str, env: "Mapping[str, str]" = os.environ) -> "Tuple[Optional[str], str]":
    """(value, where it came from) of a setting, by the order in this module's docstring."""
    variable = _SETTING_VARIABLES[key]
    option = ENV_OPTION_PREFIX + key.upper()
    for name in (variable, option):
        value = env.get(name)
        if value:
            return value, name
    for path in (os.path.join(state_dir(env), CONFIG_FILE), os.path.join(plugin_root(env), CONFIG_FILE)):
        value = _config_file_value(path, key)
        if value:
            return value, path
    if key == OTLP_ENDPOINT and env.get(ENV_OTEL_ENDPOINT):
        return env[ENV_OTEL_ENDPOINT], ENV_OTEL_ENDPOINT
    return (DEFAULT_METRICS_URL if key == METRICS_URL else None), "default"


def fallback_state_dir(env: "Mapping[str, str]" = os.environ) -> str:
    """Where the hooks record when the state directory cannot be written (read-only, a plain
    file, a full disk): the user's cache directory, one place per state directory."""
    import zlib

    primary = state_dir(env)
    base = env.get("XDG_CACHE_HOME") or (env.get("LOCALAPPDATA") if os.name == "nt" else None)
    base = base or os.path.join(os.path.expanduser("~"), ".cache")
    name = os.path.basename(os.path.normpath(primary)) or "state"
    return os.path.join(base, "claude-plugin-usage-metrics", f"{name}-{zlib.crc32(os.fsencode(primary)):08x}")


def metrics_url(env: "Mapping[str, str]" = os.environ) -> str:
    return str(resolve(METRICS_URL, env)[0]).rstrip("/")


def otlp_endpoint(env: "Mapping[str, str]" = os.environ) -> "Optional[str]":
    """The OTLP/HTTP base URL the hooks export to; None for the embedded forwarder."""
    value = resolve(OTLP_ENDPOINT, env)[0]
    if not value or value.strip().lower() == EMBEDDED:
        return None
    return value.rstrip("/")


def _config_file_value(path: str, key: str) -> "Optional[str]":
    import json  # not on the hook's fast path: only the exporter and doctor resolve settings

    try:
        with open(path, encoding="utf-8") as f:
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
ENV_FORWARDER_IDLE_SECONDS = "CLAUDE_METRICS_FORWARDER_IDLE_SECONDS"
ENV_BOOTSTRAP_RETRY_SECONDS = "CLAUDE_METRICS_BOOTSTRAP_RETRY_SECONDS"


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
