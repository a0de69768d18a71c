"""The anonymous id: one per state directory, even when many processes create it at once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from otel_metrics.identity import anonymous_id, read_anonymous_id

CREATE = "import sys; from otel_metrics.identity import anonymous_id; print(anonymous_id(sys.argv[1]))"


def test_created_once_and_kept(tmp_path: Path) -> None:
    first = anonymous_id(str(tmp_path))
    assert first is not None and uuid.UUID(first).version == 4
    assert anonymous_id(str(tmp_path)) == first == read_anonymous_id(str(tmp_path))


def test_concurrent_first_uses_end_with_one_id(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", CREATE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(20)
    ]
    ids = {proc.communicate()[0].strip() for proc in procs}
    assert ids == {(tmp_path / ".anonymous_id").read_text().strip()}
    assert not list(tmp_path.glob("*.tmp"))


def test_deleting_the_file_makes_a_new_id(tmp_path: Path) -> None:
    first = anonymous_id(str(tmp_path))
    (tmp_path / ".anonymous_id").unlink()
    second = anonymous_id(str(tmp_path))
    assert second is not None and second != first


def test_none_when_it_cannot_be_stored(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    assert anonymous_id(str(not_a_dir)) is None


def test_a_corrupt_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".anonymous_id").write_text("not-a-uuid\n")
    assert read_anonymous_id(str(tmp_path)) is None
    fresh = anonymous_id(str(tmp_path))
    assert fresh is not None and read_anonymous_id(str(tmp_path)) == fresh
