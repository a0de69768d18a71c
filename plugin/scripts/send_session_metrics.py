#!/usr/bin/env python3
"""SessionStart and SessionEnd hook: sessions seen, and their aggregates when they end."""

import _bootstrap

_bootstrap.run()
