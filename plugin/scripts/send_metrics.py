#!/usr/bin/env python3
"""UserPromptSubmit and PreToolUse(Skill) hook: a slash command or a skill is one event."""

import _bootstrap

_bootstrap.run()
