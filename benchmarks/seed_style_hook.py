#!/usr/bin/env python3
"""The baseline: a hook that does the OTel work in-process, as the legacy plugin did its HTTP.

Parses with json, imports the OTel SDK, parses the transcript, exports and waits.
Only the benchmark runs it.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from otel_metrics import __version__, config, events  # noqa: E402
from otel_metrics.emit import OtlpSender  # noqa: E402
from otel_metrics.model import Event  # noqa: E402
from otel_metrics.session_report import session_from_transcript  # noqa: E402


def main() -> None:
    hook_input = json.loads(sys.stdin.read())
    sender = OtlpSender(config.otlp_endpoint(), timeout=10)
    if hook_input.get("hook_event_name") == "SessionEnd":
        session = session_from_transcript(
            hook_input["session_id"],
            hook_input.get("transcript_path"),
            reason=hook_input.get("reason"),
            hook_time_ns=time.time_ns(),
            user_id=None,
        )
        sender.send_sessions([session])
        return
    decision = events.classify(hook_input)
    if decision is not None:
        kind, name, length = decision
        event = Event(kind, name, length, hook_input["session_id"], int(time.time()), None, __version__, "linux")
        sender.send_events([event])


main()
