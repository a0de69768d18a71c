"""Where things are: the repository, the plugin, the shared transcript fixtures, the caches tests keep."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugin"
# Real Claude Code transcripts with their expected aggregates (shared/ beside the repository).
FIXTURES = REPO.parent / "shared" / "fixtures" / "transcripts"
# A real session of 3 MB with subagent transcripts, and its expected aggregates beside it.
FIXTURE_TRANSCRIPT = FIXTURES / "marot-spotter" / "4d5611e5-241a-462a-8d15-5122611a9569.jsonl"
# pip's cache for the tests that install the plugin's dependencies: the first run downloads like a new user.
PIP_CACHE = REPO / ".cache" / "pip-acceptance"
