"""The OTel contract between the emitting side (emit.py) and the decoding side (forwarder).

Every metric name, span name, attribute key and unit lives here once. Keys follow
OTel naming conventions: semantic-convention keys where one exists (session.id,
user.id, os.type, service.*, gen_ai.usage.*), our own under the `plugin_usage.`
namespace otherwise.
"""

from __future__ import annotations

from typing import Dict

from .model import AGGREGATE_KEYS

# Instrumentation scope shared by the meter and the tracer.
SCOPE_NAME = "otel_metrics"

# Resource: built explicitly, nothing detected (no host, no process).
RESOURCE_SERVICE_NAME = "service.name"
RESOURCE_SERVICE_VERSION = "service.version"  # the plugin version
RESOURCE_OS_TYPE = "os.type"  # darwin | linux | windows (semconv values)
RESOURCE_ENGINE = "plugin_usage.engine"  # "claude"
SERVICE_NAME = "claude-plugin-metrics"
RESOURCE_KEYS = (RESOURCE_SERVICE_NAME, RESOURCE_SERVICE_VERSION, RESOURCE_OS_TYPE, RESOURCE_ENGINE)

# Events: a monotonic Sum (counter), delta temporality, one point per distinct event.
EVENT_METRIC = "plugin_usage.events"
EVENT_UNIT = "{event}"
EVENT_DESCRIPTION = "Slash commands typed and skills invoked in Claude Code sessions."
EVENT_TYPE = "plugin_usage.event.type"  # slash_command | skill
EVENT_NAME = "plugin_usage.event.name"  # e.g. jira:solve
EVENT_PROMPT_LENGTH = "plugin_usage.event.prompt_length"  # int, characters
# When the hook fired, unix seconds: carried as an attribute because a data
# point's own time is the export time.
EVENT_TIMESTAMP = "plugin_usage.event.timestamp"
SESSION_ID = "session.id"
USER_ID = "user.id"  # the anonymous UUID; absent when none could be stored

# Sessions: one span per run of a session (a resumed session reports each run on its
# own), start/end = first/last transcript entry of that run.
SESSION_SPAN = "plugin_usage.session"
SESSION_EXIT_REASON = "plugin_usage.session.exit_reason"
# int: which run of the session the span covers, 0 for the first; absent means 0.
SESSION_SEGMENT = "plugin_usage.session.segment"

# Aggregate attribute per SessionAggregates field. Tokens use the GenAI
# semantic conventions so they line up with other GenAI telemetry.
SESSION_AGGREGATE_ATTRIBUTES: Dict[str, str] = {key: f"plugin_usage.session.{key}" for key in AGGREGATE_KEYS}
SESSION_AGGREGATE_ATTRIBUTES.update(
    {
        "total_input_tokens": "gen_ai.usage.input_tokens",
        "total_output_tokens": "gen_ai.usage.output_tokens",
        "cache_creation_tokens": "gen_ai.usage.cache_creation.input_tokens",
        "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    }
)

# Attributes that make a series per session/user/event (or per prompt length):
# dropped on the collector's fan-out branch (collector-config/fanout.yaml).
HIGH_CARDINALITY_KEYS = (SESSION_ID, USER_ID, EVENT_TIMESTAMP, EVENT_PROMPT_LENGTH)
