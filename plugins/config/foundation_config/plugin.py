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
# caller (the CLI turns it into exit status 2). Any other exception while building is turned into
# a ConfigError too: isolating this plugin would silently replace the user's files, secrets and
# environment by the defaults. An application's own plain hookimpl of foundation_load_config
# still replaces this one: its non-None result is passed through.
@hookimpl(wrapper=True)
def foundation_load_config(
    sections: Mapping[str, type[Any]], files: Sequence[str], overrides: Sequence[str], strict: bool
) -> Generator[None, Config | None, Config]:
    replaced = yield
    if replaced is not None:
        return replaced
    from foundation_core.errors import ConfigError

    from ._loader import load_config

    try:
        return load_config(sections, files, overrides, strict=strict)
    except ConfigError:
        raise
    except Exception as exc:  # a bug or a limit not checked: never fall back to the defaults
        detail = " ".join(str(exc).split())[:200]
        message = f"the configuration could not be built: {type(exc).__name__}{': ' * bool(detail)}{detail}"
        raise ConfigError(message) from exc


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
