"""The metrics plugin's Python entry: `run.py wake <input>` (a hook input scripts/run spooled itself
-> its record -> the background exporter), `run.py hook` or `run.py session-end` (the same from
stdin, where the shell could not spool it) or `run.py doctor` (what works, what does not, and the fix).

Started by scripts/run with -S (no site-packages: both are stdlib only). The package is
the plugin's own copy, first on sys.path, so no other `otel_metrics` can shadow it.
A hook prints nothing on stdout and exits 0 in every case. Written for any Python 3, so
that an old one can still say what is wrong.
"""

import os
import sys

PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCTOR = sys.argv[1:2] == ["doctor"]


def complain(message):
    """Say what is wrong: on stdout for doctor; else one line in the log, once (every hook would repeat it).
    A wake's hook input goes: nothing can turn it into a record here, and it holds the prompt as typed."""
    if DOCTOR:
        print("FAIL  " + message)
        sys.exit(1)
    if sys.argv[1:2] == ["wake"] and len(sys.argv) > 2:
        try:
            os.remove(sys.argv[2])
        except OSError:
            pass
    state = os.environ.get("CLAUDE_METRICS_DIR") or os.environ.get("CLAUDE_PLUGIN_DATA") or PLUGIN_ROOT
    try:
        with open(os.path.join(state, "metrics.log"), "a+") as log:
            log.seek(0)
            if message not in log.read():
                log.write("hook: " + message + "\n")
    except OSError:
        pass
    os._exit(0)


if sys.version_info < (3, 9):
    complain(
        "{} is Python {}.{}: the plugin needs 3.9 or later first on PATH as python3; "
        "until then no usage metrics are recorded".format(sys.executable, *sys.version_info[:2])
    )
sys.path.insert(0, PLUGIN_ROOT)
try:
    if DOCTOR:
        from otel_metrics.doctor import main
    elif sys.argv[1:2] == ["wake"]:
        from otel_metrics.hook.main import wake as main
    else:
        from otel_metrics.hook.main import main
except ImportError as error:  # a damaged plugin copy: say so, stay silent on stdout
    complain("the plugin's copy of otel_metrics cannot be imported ({}): reinstall the plugin".format(error))
sys.exit(main())
