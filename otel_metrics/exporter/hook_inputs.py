"""Hook inputs the shell entry wrote as they came -> spool records, as soon as the exporter sees them.

At once rather than with the next drain: a SessionEnd record notes how far its transcript
reached when the session ended (a resume started later belongs to the next report).
Written whole under a name made from the input's (its time, its tag), so adopting the same
input again after a crash overwrites the same record: nothing is counted twice. The shell
writes an input in place (no interpreter, so no rename): one that does not parse yet may be
being written, and is set aside as bad only once WRITING_SECONDS have passed.
"""

from __future__ import annotations

import logging
import os
import time

from .. import hook_input, spool

log = logging.getLogger("otel_metrics.exporter")

WRITING_SECONDS = 5.0  # far beyond one printf of a few hundred bytes


def adopt(state: str) -> int:
    """Turn every hook input in the spool into its record (or set it aside); return how many were adopted."""
    adopted = 0
    for name in spool.hook_inputs(state):
        path = os.path.join(spool.directory(state), name)
        try:
            with open(path, "rb") as stream:
                fired_ns = os.fstat(stream.fileno()).st_mtime_ns
                record = hook_input.record_for(hook_input.read(stream), fired_ns)
        except FileNotFoundError:
            continue
        except hook_input.BadInput as problem:
            if time.time_ns() - fired_ns < WRITING_SECONDS * 1e9:
                continue
            spool.set_aside(state, name, str(problem))
            log.error("%s (set aside in %s)", problem, os.path.join(state, spool.REJECTED_DIR))
            continue
        if record is not None:
            suffix = spool.SUFFIX if hook_input.wakes(record) else spool.NO_WAKE_SUFFIX
            tag = name[: -len(spool.HOOK_INPUT_SUFFIX)]
            spool.write(state, spool.record_name(fired_ns, tag) + suffix, record)
        spool.remove(state, name)
        adopted += 1
    return adopted
