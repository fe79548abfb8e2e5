"""``foundation package``, the ``--model NAME=SPEC`` argument that ``serve`` takes too, and the
``--transport`` check that ``serve``, ``infer`` and ``stats`` share.

The ml plugin's other commands: ``serve`` is in ``_cli_serve``, ``infer`` and ``stats`` (a
running server's client) in ``_cli_client``, which reads ``--input`` files with ``_cli_inputs``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foundation_core import Hub

__all__ = ["check_cross_process", "package_main", "parse_model_arg"]

# what a command of its own process could not do over a transport that does not cross processes
_IN_PROCESS_ONLY = {
    "serve": "no client could ever call the server it starts",
    "infer": "every server is in another process, where it cannot reach one",
    "stats": "every server is in another process, where it cannot reach one",
}


def parse_model_arg(text: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` or a bare ``SPEC`` (a package: its manifest names it)."""
    name, sep, spec = text.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, spec
    return None, text


def check_cross_process(hub: Hub, transport: str, command: str) -> None:
    """Raise ``ValueError`` saying why when ``transport``'s servers cannot be reached from another
    process (``Transport.cross_process`` false: inproc): ``foundation COMMAND`` runs in a process
    of its own, so a server it starts would serve nobody, and a client it starts would find no
    server. The message names the installed transports that do cross processes. A transport not
    registered raises ``NotRegisteredError``, as ``hub.transports.get`` does."""
    from ._transport import make_transport

    if make_transport(hub, transport).cross_process:
        return
    crossing = [n for n in hub.transports.names() if n != transport and _crosses(hub, n)]
    if crossing:
        use = "use " + " or ".join(f"--transport {n}" for n in crossing)
    else:
        use = "no transport installed crosses processes (pip install 'foundation[shm]' adds shm)"
    raise ValueError(
        f"--transport {transport} is in-process only: its servers are reached only from the process "
        f"that serves them, and `foundation {command}` is a process of its own, so "
        f"{_IN_PROCESS_ONLY[command]}; {use}"
    )


def _crosses(hub: Hub, transport: str) -> bool:
    from ._transport import make_transport

    try:
        return bool(make_transport(hub, transport).cross_process)
    except Exception:  # a transport plugin that fails to load is named by `foundation plugins`
        return False


def package_main(args: argparse.Namespace, hub: Hub) -> int:
    from foundation_core._registry import check_ref
    from foundation_core.errors import NotRegisteredError

    from ._names import MAX_VERSION_BYTES, check_name
    from ._package import archive_refusal, archive_suffix, open_package
    from .errors import PackageError

    def usage(problem: str) -> int:
        print(f"foundation package: error: {problem}", file=sys.stderr)
        return 2

    try:
        backend = hub.model_backends.get(args.backend)()
    except NotRegisteredError as exc:
        return usage(f"--backend {args.backend}: {exc}")
    name, spec = parse_model_arg(args.model)
    try:  # the backend checks them too, but cannot say which flag gave them
        if args.name is not None:  # an empty --name is a bad name, not none
            check_name(args.name, "--name")
        if name is not None:
            check_name(name, f"--model {args.model}: the model name")
        check_name(args.version, "--version", MAX_VERSION_BYTES)
    except ValueError as exc:
        return usage(str(exc))
    if args.name is not None and name is not None and name != args.name:
        return usage(f"--name {args.name!r} and --model {args.model} name the model twice: give one")
    name = args.name if args.name is not None else name
    if name is None:
        return usage("name the model: --name NAME or --model NAME=SPEC")
    try:
        check_ref(spec)
    except ValueError:
        return usage(f"--model {args.model}: {spec!r} is not a factory reference 'pkg.module:build'")
    if not args.out:  # Path("") is "."
        return usage("--out '': name a directory to create, or a .zip file")
    out = Path(args.out)
    if archive_suffix(out):  # never a directory named model.tar: nothing is built or written
        return usage(f"--out {args.out}: {archive_refusal(out)}")
    if out.exists() or out.is_symlink():  # before the factory builds anything
        return usage(f"--out {out} already exists (it is never overwritten)")
    try:
        path = backend.package(spec, args.out, name=name, version=args.version)
    except (FileExistsError, NotImplementedError) as exc:  # --out appeared meanwhile; a backend that cannot
        return usage(str(exc))
    except ValueError as exc:  # a name or version no transport can carry; a signature a package cannot hold
        return usage(str(exc))
    except OSError as exc:  # nothing is left behind (write_package writes beside, then renames)
        print(f"foundation package: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        pkg = open_package(path)  # read it back: what we wrote verifies
    except PackageError as exc:
        print(f"foundation package: error: {path} was written but does not verify: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}: {pkg.name} v{pkg.version}, files {', '.join(['manifest.json', *pkg.files])}")
    return 0
