"""``foundation plugins`` and ``foundation version``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from ._hub import Hub


def plugins_main(args: argparse.Namespace, hub: Hub) -> int:
    infos = hub.plugin_infos()
    if args.json:
        doc = {
            "foundation_version": __version__,
            "strict": hub.strict,
            "selection": {
                "only": sorted(hub.selection.only) if hub.selection.only is not None else None,
                "disabled": sorted(hub.selection.disabled),
            },
            "plugins": [i.as_dict() for i in infos],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for info in infos:
        dist = f"{info.distribution} {info.version}" if info.distribution else info.source
        print(f"{info.name}  [{info.status}]  {dist}")
        if info.hooks:
            print(f"    hooks: {', '.join(info.hooks)}")
        for kind, names in sorted(info.registered.items()):
            if names:
                print(f"    {kind}: {', '.join(names)}")
        for kind, hidden in sorted(info.shadowed.items()):
            if hidden:  # registered, but another plugin's registration of the name wins
                by = ", ".join(f"{name} (by {winner})" for name, winner in hidden.items())
                print(f"    {kind} shadowed: {by}")
        if info.error:
            print(f"    error: {info.error}")
        if info.status in {"disabled", "not-selected"}:
            print(f"    {hub.selection.reason(info.name)}")
    return 0


def version_main(args: argparse.Namespace, hub: Hub) -> int:
    print(f"foundation {__version__}")
    for info in hub.plugin_infos():
        if info.source == "entry-point":
            print(f"  {info.name}: {info.distribution} {info.version} [{info.status}]")
    return 0
