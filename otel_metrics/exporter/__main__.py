import time

from . import HOOKS_QUIET_SECONDS

time.sleep(HOOKS_QUIET_SECONDS)  # the hook that started us is part of a session step: let it pass first

from .run import main  # noqa: E402 - the heavy imports come after the pause

main()
