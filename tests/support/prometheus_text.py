"""Reading the Prometheus text exposition format, as the forwarder and the collector expose their own metrics."""

from __future__ import annotations

import re

# One sample line of the Prometheus text format: name{labels} value
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def prometheus_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` carrying these labels, in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        sample = SAMPLE.match(line)
        if not sample or sample.group(1) != name:
            continue
        if all(f'{key}="{value}"' in (sample.group(2) or "") for key, value in labels.items()):
            total += float(sample.group(3))
    return total
