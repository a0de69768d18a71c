"""What every suite and benchmark shares: one of each helper, imported as `support.<module>`.

Paths and processes
- paths: the repository, the plugin, the shared transcript fixtures, the caches tests keep.
- processes: `wait_for` a condition, `free_port(s)`, `run_cli`, `require`/`built` (skip, or fail
  under CI=true, without a toolchain); the reference endpoint and the forwarder as processes
  (EndpointProcess, ForwarderProcess), a forwarder's outbox from outside, a process's CPU and memory.
- raw_http: a loopback `requests` session; requests as bytes; connections no well-behaved client
  makes (all at once, trickling).
- postgres_server: a throwaway PostgreSQL server (Debian's package).
- static_server: an in-thread server of fixed files (a package index).
- prometheus_text: sums of samples in the Prometheus text format.
- collector_process: the real OpenTelemetry Collector build as a process.
- stack_processes: Prometheus and Jaeger as processes, configured as docker-compose runs them.

The plugin's side
- plugin_hooks: running the hooks as Claude Code does; their spool and log; the background
  processes they start (exporters, local forwarders), waiting for those and ending them.
- transcript_entries: transcript lines as Claude Code writes them, to build sessions from.
- naive_transcript: the reference reader the transcript reader is held to (and benchmarked against).
- model_strategies: hypothesis strategies of valid events and sessions.

What travels
- otlp_requests: OTLP requests built from the proto classes or by the SDK, attributes both ways.
- otlp_sink: an OTLP/HTTP receiver in a thread that records what it is sent (can refuse, be slow).
- legacy_sink: a stand-in for the legacy endpoint, in a thread or as a process (scripted answers).
- legacy_payloads: legacy payloads as tests expect them; `otel-metrics session-summary`'s.
- usage_data: generated payloads with the numbers a report of them must show.

The real Claude Code CLI (tests/acceptance, benchmarks/real_session.py)
- claude_cli: the pinned CLI, run as `claude -p` with our plugins.
- fake_messages_api: a scripted loopback stand-in for the Anthropic Messages API.
- git_marketplace: this repository served as a plugin marketplace over git's smart HTTP.
- claude_session_expectations: the payloads a real session must produce.
"""
