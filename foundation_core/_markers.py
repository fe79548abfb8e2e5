"""The pluggy markers of project ``foundation``: ``hookimpl`` for plugins, ``hookspec`` for specs."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "foundation"
ENTRY_POINT_GROUP = "foundation"
CORE_DISTRIBUTION = "foundation"  # the distribution of foundation_core, as PEP 503 normalises it

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
