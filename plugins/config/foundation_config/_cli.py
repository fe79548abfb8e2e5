"""``foundation config show [--json] [--sources]`` and ``foundation config check [FILES]``."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import TYPE_CHECKING

from foundation_core import Config
from foundation_core.errors import ConfigError

if TYPE_CHECKING:
    from foundation_core import Hub

__all__ = ["add_arguments", "config_main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print every effective value (secrets masked)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument("--sources", action="store_true", help="say where each value came from")
    show.add_argument("--strict", action="store_true", help="unknown sections and keys are errors")
    check = sub.add_parser("check", help="validate the configuration without starting anything")
    check.add_argument("files", nargs="*", metavar="FILE", help="extra config files, after --config ones")
    check.add_argument("--strict", action="store_true", help="unknown sections and keys are errors")


def _load(args: argparse.Namespace, hub: Hub, files: list[str]) -> Config:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = hub.pm.hook.foundation_load_config(
                sections=hub.sections.resolved(),
                files=files,
                overrides=list(args.set),
                strict=args.strict,
            )
        finally:  # warnings first, then the error (if any) that the CLI prints
            for warning in caught:
                print(f"foundation config: warning: {warning.message}", file=sys.stderr)
    if config is None:  # another plugin took the hook over and declined
        raise ConfigError("no plugin built a configuration (is foundation-config disabled?)")
    return config  # type: ignore[no-any-return]


def config_main(args: argparse.Namespace, hub: Hub) -> int:
    from ._show import render_json, render_text

    if args.action == "check":
        config = _load(args, hub, [*args.config, *args.files])
        print(f"configuration ok: {len(config)} sections, {len(config.sources)} values")
        return 0
    config = _load(args, hub, list(args.config))
    print(render_json(config, args.sources) if args.json else render_text(config, args.sources))
    return 0
