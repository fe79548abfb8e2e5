"""The pluggy markers of project ``foundation``: ``hookimpl`` for plugins, ``hookspec`` for specs."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "foundation"
ENTRY_POINT_GROUP = "foundation"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
