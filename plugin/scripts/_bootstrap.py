"""Find otel_metrics for the hook scripts and run its fast path.

Prints nothing on stdout and exits 0 in every case.
"""

import os
import sys


def run():
    try:
        from otel_metrics.hook.main import main
    except ImportError:
        # A checkout: the package sits beside the plugin (plugin/../otel_metrics).
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        try:
            from otel_metrics.hook.main import main
        except ImportError:
            os._exit(0)  # otel-metrics is not installed for this interpreter: stay silent
    main()
