"""The model's rules: what an exit reason may be, and the aggregate keys' two kinds."""

from __future__ import annotations

import pytest

from otel_metrics.model import AGGREGATE_KEYS, COUNT_KEYS, COUNTED_TOOLS, TOKEN_KEYS, normalize_exit_reason


@pytest.mark.parametrize(
    "reason, expected",
    [
        ("clear", "clear"),
        ("prompt_input_exit", "prompt_input_exit"),
        ("bypass_permissions_disabled", "bypass_permissions_disabled"),
        ("Clear", "other"),
        ("", "other"),
        ("has space", "other"),
        ("9lives", "other"),
        ("x" * 33, "other"),
        ("/home/alice/secret", "other"),
        (None, "other"),
        (3, "other"),
    ],
)
def test_exit_reason_is_kept_only_when_a_short_lowercase_identifier(reason: object, expected: str) -> None:
    assert normalize_exit_reason(reason) == expected


def test_every_aggregate_is_a_count_or_a_token_sum() -> None:
    assert sorted(COUNT_KEYS + TOKEN_KEYS) == sorted(AGGREGATE_KEYS)
    assert not set(COUNT_KEYS) & set(TOKEN_KEYS)
    assert set(COUNTED_TOOLS.values()) <= set(COUNT_KEYS)
