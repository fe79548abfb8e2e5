"""The conformance plugin's hooks: the ``foundation conformance`` command (imports nothing heavy)."""

from __future__ import annotations

from foundation_core import CommandRegistrar, hookimpl


@hookimpl
def foundation_register_commands(cli: CommandRegistrar) -> None:
    parser = cli.add_command(
        "conformance",
        "foundation_conformance._cli:conformance_main",
        help="run the resilience pattern specs against the registered implementations",
    )
    parser.add_argument("pattern", nargs="?", help="one pattern id (default: every spec)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--specs", default=None, metavar="DIR", help="spec directory (default: the shipped specs)"
    )
