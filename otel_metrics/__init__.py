"""otel-metrics: anonymous usage metrics for Claude Code plugins, on OpenTelemetry."""

__version__ = "0.1.0"
