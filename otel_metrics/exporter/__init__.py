"""The background exporter: drains the hooks' spool into OTLP, detached from Claude Code.

One at a time (the exporter lock); it stays warm for a while after its last
item, so bursts of hooks pay for the OTel SDK import once.
"""
