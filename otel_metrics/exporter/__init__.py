"""The background exporter: drains the hooks' spool into OTLP, detached from Claude Code.

One at a time (the exporter lock); it stays warm for a while after its last
item, so bursts of hooks pay for the OTel SDK import once. It works only once the
hooks have been quiet for HOOKS_QUIET_SECONDS, so that its CPU time falls between
the steps of a session (or after it), not inside them: on a two-core laptop,
Claude Code comes first.
"""

HOOKS_QUIET_SECONDS = 0.5
# However busy the hooks, records wait at most this long for them to go quiet.
LONGEST_DEFERRAL_SECONDS = 5.0
