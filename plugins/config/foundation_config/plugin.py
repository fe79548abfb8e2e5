"""The hookimpls of foundation-config: build the layered configuration, add ``foundation config``.

Cheap to import: dynaconf and cattrs are imported inside ``foundation_load_config``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from foundation_core import hookimpl

if TYPE_CHECKING:
    from foundation_core import CommandRegistrar, Config, SectionAdder


@hookimpl
def foundation_config_sections(add: SectionAdder) -> None:
    add("config", "foundation_config._settings:ConfigSettings")


# A wrapper, not a plain hookimpl: the hub isolates a plugin whose plain hookimpl raises (and
# would fall back to defaults), but a ConfigError is the user's bad input and must reach the
# caller (the CLI turns it into exit status 2). An application's own plain hookimpl of
# foundation_load_config still replaces this one: its non-None result is passed through.
@hookimpl(wrapper=True)
def foundation_load_config(
    sections: Mapping[str, type[Any]], files: Sequence[str], overrides: Sequence[str], strict: bool
) -> Generator[None, Config | None, Config]:
    replaced = yield
    if replaced is not None:
        return replaced
    from ._loader import load_config

    return load_config(sections, files, overrides, strict=strict)


@hookimpl
def foundation_register_commands(cli: CommandRegistrar) -> None:
    from ._cli import add_arguments

    parser = cli.add_command(
        "config",
        "foundation_config._cli:config_main",
        help="show the effective configuration and its sources, or check config files",
        own_config=True,  # `config check` reports every problem of the files and overrides
    )
    add_arguments(parser)
