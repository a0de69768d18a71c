"""Which Python runs the background exporter (and the local forwarder it starts).

`CLAUDE_METRICS_PYTHON` when set (it must have the dependencies); otherwise the
plugin's own venv in the state directory, built on first use by bootstrap.py.
Never the user's python3 with whatever its site-packages hold: an unrelated
package of the same import name, or other OpenTelemetry versions, would change
what is sent.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Mapping, Optional

from .. import bootstrap, config

log = logging.getLogger("otel_metrics.exporter")


def for_exporter(env: Mapping[str, str], state: str) -> Optional[str]:
    """The interpreter to run on, building the plugin's venv if need be; None when there is none yet."""
    explicit = env.get(config.ENV_EXPORTER_PYTHON)
    if explicit:
        return explicit
    root = config.plugin_root(env)
    venv_python = bootstrap.venv_python(bootstrap.venv_dir(state))
    if bootstrap.is_ready(state, root):
        return venv_python
    if not bootstrap.retry_due(state, env):
        return None
    log.info("installing the plugin's Python dependencies into %s", bootstrap.venv_dir(state))
    started = time.monotonic()
    try:
        bootstrap.build(state, root)
    except (bootstrap.BootstrapError, OSError) as error:
        if bootstrap.record_failure(state, str(error), env):  # said once per kind of failure, not per try
            log.error("cannot set up the plugin's Python dependencies yet: %s; events are kept meanwhile", error)
        return None
    if bootstrap.record_success(state):
        log.error("the plugin's Python dependencies are installed now: sending what was kept")
    log.info("dependencies installed in %.1f s", time.monotonic() - started)
    return venv_python


def is_current(python: str, state: str) -> bool:
    """Whether `python` is the interpreter running this process."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        return True
    venv = bootstrap.venv_dir(state)
    return os.path.abspath(python) == os.path.abspath(bootstrap.venv_python(venv)) and bootstrap.runs_in(venv)


def package_path(env: Mapping[str, str]) -> str:
    """The directory that holds the otel_metrics package of the plugin these settings name."""
    return config.plugin_root(env)


def requirements(env: Mapping[str, str]) -> str:
    return bootstrap.requirements_path(config.plugin_root(env))
