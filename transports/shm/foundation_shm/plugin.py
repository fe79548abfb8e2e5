"""The shm transport's plugin: registers the ``shm`` transport, its ``shm`` config section and the
``foundation shm`` command (lazily)."""

from __future__ import annotations

from typing import Any

from foundation_core import hookimpl


@hookimpl
def foundation_register_transports(register: Any) -> None:
    register("shm", "foundation_shm._transport:ShmTransport")


@hookimpl
def foundation_config_sections(add: Any) -> None:

    add("shm", "foundation_shm._options:ShmSettings")  # imported when configuring


@hookimpl
def foundation_register_commands(cli: Any) -> None:
    parser = cli.add_command(
        "shm", "foundation_shm._cli:shm_main", help="list and clean shared-memory objects of shm servers"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("ls", help="list fdn-* objects in /dev/shm, grouped by server, with liveness")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    clean = sub.add_parser(
        "clean",
        help="remove the objects of servers that are gone (never a live one; one killed whose threads "
        "still exit, holding its lock, is waited for, up to 5 s)",
    )
    clean.add_argument("names", nargs="*", help="only these server names (default: every dead one)")
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
