"""The ``foundation`` command line: global options, built-in commands, plugin commands.

``foundation [--config FILE]... [--set KEY=VALUE]... [--strict-plugins] COMMAND [ARGS]``.
Plugins add commands through ``foundation_register_commands(cli)``::

    @hookimpl
    def foundation_register_commands(cli):
        parser = cli.add_command("breakers", "foundation_circuit_breaker._cli:breakers_main",
                                 help="list circuit breakers")
        parser.add_argument("--json", action="store_true")

A handler is ``handler(args, hub) -> int | None`` (or its lazy ``"module:attr"`` reference); the
hub it gets has loaded plugins and run registration, but not start-up. When ``--config`` or
``--set`` are given the hub is configured with them before the handler runs, so a malformed file
or override stops every command (exit 2), not only those that read configuration (unless the
command was added with ``own_config=True``: it reports their problems itself). A handler that
needs configuration calls ``hub.configure(args.config, args.set)`` (which returns that same
configuration, or builds it from the defaults, environment and ``settings.toml``) and, to start
plugins, ``hub.startup()``.
"""

from __future__ import annotations

import argparse
import difflib
import operator
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex

import attrs

from ._cli_output import (
    _escape_what_stdout_cannot_encode,
    _is_output_error,
    _output_failed,
    _show_our_warnings_plainly,
)
from ._registry import Entry, Registry, check_ref, current_plugin, resolve_ref
from ._version import __version__
from .errors import ConfigError, FoundationError

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Command", "CommandRegistrar", "main"]

Handler = Callable[[argparse.Namespace, "Hub"], "int | None"]


class _SubCommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """A command's own subcommands (``foundation shm ls``): each one's ``--help`` opens with the
    help line its parent lists for it, as the top-level commands' do."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("description") is None and kwargs.get("help"):
            kwargs["description"] = kwargs["help"]
        return super().add_parser(name, **kwargs)  # type: ignore[no-any-return]


def _options_of(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--long`` option of ``parser`` and of its subcommands' parsers (their unknown
    arguments are reported by the parser above them)."""
    found: list[str] = []
    for action in parser._actions:
        found += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options_of(sub)
    return list(dict.fromkeys(found))


def _near_options(unknown: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """`` (--modle: did you mean --model?)`` for the misspelled ``--options`` among ``unknown``
    (argparse before Python 3.14 suggests none); "" when none is close to one of ``parser``'s."""
    known = _options_of(parser)
    hints = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            near = difflib.get_close_matches(flag, known, n=1)
            if near:
                hints.append(f"{flag}: did you mean {near[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


class _GlobalParser(argparse.ArgumentParser):
    """``foundation``'s own parser: a misspelled global option is named with the one meant."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            message += _near_options(message[len(prefix) :].split(), self)
        super().error(message)


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: its subparsers are :class:`_SubCommands`, and a required one left
    out is named with its choices (``action (choose from 'ls', 'clean')``), not by its ``dest`` alone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubCommands)

    def error(self, message: str) -> NoReturn:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.choices:
                named = argparse._get_action_name(action)
                choices = ", ".join(repr(choice) for choice in action.choices)
                if named and not named.startswith("{"):  # a metavar of the choices lists them
                    listed = f"required: {named} (choose from {choices})"
                    message = message.replace(f"required: {named}", listed)
        super().error(message)


@attrs.define
class Command:
    name: str
    handler: Handler | str
    parser: argparse.ArgumentParser
    plugin: str
    help: str
    own_config: bool = False

    def resolve(self) -> Handler:
        return resolve_ref(self.handler) if isinstance(self.handler, str) else self.handler


class CommandRegistrar:
    """The ``cli`` object handed to ``foundation_register_commands``.

    Names follow the registries' precedence (:mod:`foundation_core._registry`): the core's own
    commands and an application's win over an installed plugin's, which is then shadowed (its
    parser is returned but never used), so no plugin can break ``foundation plugins``."""

    def __init__(self) -> None:
        self._registry: Registry[Command] = Registry("command")

    @property
    def commands(self) -> dict[str, Command]:
        """``{name: Command}`` of the commands that won their names."""
        return self._registry.items()

    def add_command(
        self,
        name: str,
        handler: Handler | str,
        *,
        help: str = "",
        description: str | None = None,
        replace: bool = False,
        own_config: bool = False,
    ) -> argparse.ArgumentParser:
        """Add ``foundation NAME``; returns its argparse parser for the command's own arguments.

        ``own_config=True``: the handler reads ``--config``/``--set`` itself and reports their
        problems its own way (``foundation config check``), so they are not checked before it."""
        plugin, app = current_plugin.get()
        if isinstance(handler, str):
            check_ref(handler)
        elif not callable(handler):
            raise TypeError(f"command {name!r} of plugin {plugin!r}: handler {handler!r} is not callable")
        parser = _CommandParser(prog=f"foundation {name}", description=description or help)
        command = Command(name, handler, parser, plugin, help, own_config)
        self._registry.add(name, command, plugin=plugin, app=app, replace=replace)
        return parser

    def entry(self, name: str) -> Entry:
        return self._registry.entry(name)

    def remove_plugin(self, plugin: str) -> None:
        self._registry.remove_plugin(plugin)

    def by_plugin(self, plugin: str) -> list[str]:
        return self._registry.by_plugin(plugin)

    def shadowed_of(self, plugin: str) -> dict[str, str]:
        return self._registry.shadowed_of(plugin)


def _global_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    lines = "\n".join(f"  {n:<16} {c.help}" for n, c in sorted(commands.items()))
    parser = _GlobalParser(
        prog="foundation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Foundation: a plugin framework for ML serving.",
        epilog=f"commands:\n{lines}\n\n`foundation COMMAND --help` describes one command.",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="a config file (toml, yaml, json); repeatable, later wins",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set retry.max_attempts=5",
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help="a plugin that fails to load is fatal (as FOUNDATION_STRICT_PLUGINS=1)",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"foundation {__version__}",
        help="print the version of foundation (`foundation version` adds every plugin's) and exit",
    )
    parser.add_argument("command", nargs="?", help="the command to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``foundation`` console script; returns the exit status."""
    from ._hub import Hub, _disabled_hint

    argv = list(sys.argv[1:] if argv is None else argv)
    _escape_what_stdout_cannot_encode()
    prefix = _show_our_warnings_plainly()  # a plugin that fails to load warns from here on
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--strict-plugins", action="store_true")
    known, _ = pre.parse_known_args(argv)
    try:
        hub = Hub(strict=True if known.strict_plugins else None)
        hub.register(_builtin_commands, name="foundation", _builtin=True)
        hub.load_entry_points()
        hub.run_registration()
    except FoundationError as exc:
        print(f"foundation: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while a plugin imports, as while a command runs: no traceback
        return 130
    parser = _global_parser(hub.commands.commands)
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    command = hub.commands.commands.get(ns.command)
    if command is None:  # a plugin disabled, failed or not installed may be why: say which
        listed = ", ".join(sorted(hub.commands.commands))
        near = difflib.get_close_matches(ns.command, list(hub.commands.commands), n=1)
        meant = f" (did you mean {near[0]!r}?)" if near else ""
        hint = _disabled_hint(hub.plugins, hub.selection, ns.command)
        parser.error(f"unknown command {ns.command!r}{meant} (commands: {listed}){hint}")
    args = _parse_command_args(command, ns.args)
    args.config, args.set, args.strict_plugins = ns.config, ns.set, ns.strict_plugins
    prefix[0] = f"foundation {ns.command}"
    return _run(command, args, hub)


_GLOBAL_OPTIONS = ("--config", "--set", "--strict-plugins", "--version")


def _parse_command_args(command: Command, argv: list[str]) -> argparse.Namespace:
    """The command's own arguments; a global option given after the command is an error that
    says where it goes, not only "unrecognized arguments"."""
    args, extras = command.parser.parse_known_args(argv)
    if extras:
        misplaced = sorted({o for a in extras for o in _GLOBAL_OPTIONS if a == o or a.startswith(o + "=")})
        hint = ""
        if misplaced:
            hint = (
                f" ({', '.join(misplaced)}: global options go before the command, "
                f"e.g. foundation {misplaced[0]} ... {command.name} ...)"
            )
        hint += _near_options(
            [a for a in extras if a.split("=", 1)[0] not in _GLOBAL_OPTIONS], command.parser
        )
        command.parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def _run(command: Command, args: argparse.Namespace, hub: Hub) -> int:
    """Call the command's handler; its errors, and a failure to write its output, become one
    line on stderr and an exit status."""
    try:
        if (args.config or args.set) and not command.own_config:  # never silently ignored
            hub.configure(args.config, args.set)
        status = _status(command, _handler(command)(args, hub))
    except _BrokenCommand as exc:
        print(f"foundation {command.name}: error: plugin {command.plugin!r}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"foundation {command.name}: {exc}", file=sys.stderr)
        return 2
    except FoundationError as exc:
        print(f"foundation {command.name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if not _is_output_error(exc):
            raise
        return _output_failed(command.name, exc)
    try:  # a full disk or a closed pipe shows here, not in the interpreter's exit
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:
        return _output_failed(command.name, exc)
    return status


class _BrokenCommand(Exception):
    """A plugin's command that cannot run: its handler does not import, or returns no status."""


def _describe(handler: object) -> str:
    if isinstance(handler, str):
        return handler
    return f"{getattr(handler, '__module__', '?')}:{getattr(handler, '__qualname__', repr(handler))}"


def _handler(command: Command) -> Handler:
    """The command's handler, imported if lazy; a failure names the reference, not a traceback."""
    try:
        handler = command.resolve()
    except KeyboardInterrupt:  # the user's Ctrl-C while it imports
        raise
    except BaseException as exc:  # in any way, sys.exit() too: not the command's status
        why = str(exc) if isinstance(exc, (ImportError, AttributeError)) else f"{type(exc).__name__}: {exc}"
        raise _BrokenCommand(f"handler {_describe(command.handler)!r} cannot be imported: {why}") from exc
    if not callable(handler):
        raise _BrokenCommand(f"handler {_describe(command.handler)!r} is not callable: {handler!r}")
    return handler


def _status(command: Command, result: object) -> int:
    """The exit status a handler returned: an int, or None for 0 (a bool is an int)."""
    if result is None:
        return 0
    if isinstance(result, SupportsIndex):  # an int, a numpy integer
        return operator.index(result)
    raise _BrokenCommand(
        f"handler {_describe(command.handler)!r} returned {result!r} "
        f"({type(result).__name__}), not an exit status (an int or None)"
    )


class _BuiltinCommands:
    """The core's own commands, registered through the same hook plugins use."""

    from ._markers import hookimpl

    @hookimpl
    def foundation_register_commands(self, cli: CommandRegistrar) -> None:
        p = cli.add_command(
            "plugins",
            "foundation_core._cli_plugins:plugins_main",
            help="list plugins, what they registered, and load errors",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object")
        cli.add_command(
            "version",
            "foundation_core._cli_plugins:version_main",
            help="print the version of foundation and of every plugin",
        )
        p = cli.add_command(
            "new-plugin",
            "foundation_core._template:new_plugin_main",
            help="write a new plugin distribution from the template",
        )
        p.add_argument("name", help="plugin name, e.g. 'my-cache' (distribution foundation-my-cache)")
        p.add_argument("--dir", default=".", help="directory to create it in (default: .)")


_builtin_commands: Any = _BuiltinCommands()
