"""The hooks' fast path: decide, record durably, wake the background exporter, return.

Everything here is stdlib-only and import-cheap (no json, re, typing, logging,
subprocess, dataclasses): a hook must cost no more than the interpreter's start.
"""
