"""Which implementation runs the hot path: the C extension ``_hot`` when it was built, else Python;
and what a server or a client checks before it starts (``check_start``).

``FDN_SHM_PURE=1`` in the environment forces the pure-Python path (the test suite runs both; a
build without a C compiler gets it anyway). Both write and accept the same bytes. The pure path is
several µs slower per request: a server or client that runs it without ``FDN_SHM_PURE`` asking for
it logs one warning per process, with the reason and the command that rebuilds the extension.

Either path is correct on x86-64 only (total store order, docs/protocol/shm.md 7.1): the Python
code publishes and reads messages with plain stores and loads, on the C build too (everything off
the C lanes of repeated messages: a first message, a new shape, an error, a stale answer). A server
or client started on any other machine raises ``InternalError``.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import threading
from types import ModuleType

from foundation_ml.errors import InternalError

__all__ = [
    "REBUILD",
    "REBUILD_CHECKOUT",
    "check_start",
    "hot",
    "implementation",
    "summary",
    "unsupported_machine",
    "why_pure",
]

log = logging.getLogger("foundation_shm")

REBUILD = "pip install --no-cache-dir --force-reinstall --no-deps --no-binary foundation-shm foundation-shm"
REBUILD_CHECKOUT = "pip install --no-cache-dir --force-reinstall --no-deps -e transports/shm"
SUPPORTED_MACHINES = ("x86_64", "AMD64")  # platform.machine() of x86-64 on Linux and elsewhere

FORCED = os.environ.get("FDN_SHM_PURE", "").lower() in ("1", "true", "yes")
_why = "FDN_SHM_PURE=1" if FORCED else ""  # why the pure path runs ("" when C runs)


def _load() -> ModuleType | None:
    global _why
    if FORCED:
        return None
    try:
        return importlib.import_module("._hot", __package__)
    except ImportError as exc:
        _why = f"foundation_shm._hot did not load: {exc}"
        return None


hot = _load()
_warned = False
_warn_lock = threading.Lock()


def implementation() -> str:
    """``"c"`` or ``"python"``: which hot path this process runs."""
    return "c" if hot is not None else "python"


def why_pure() -> str:
    """Why this process runs the pure-Python path ("FDN_SHM_PURE=1", or the import error of
    ``foundation_shm._hot``); "" when it runs C."""
    return "" if hot is not None else _why


def unsupported_machine() -> str:
    """Why neither path may run on this machine ("" on x86-64)."""
    machine = platform.machine()
    if machine in SUPPORTED_MACHINES:
        return ""
    return (
        f"the shm transport runs on x86-64 only, and this machine is {machine or 'unknown'!r}: its "
        "Python side publishes and reads shared-memory messages with plain stores and loads, "
        "which stay in order only under x86-64's total store order (docs/protocol/shm.md, "
        "section 7.1); a weakly ordered CPU (aarch64, ppc64le, ...) could let a peer read a "
        "message before it is complete. The C hot path does not make it safe: only its "
        "repeated-message lanes use release/acquire atomics. Use another transport on this machine"
    )


def check_start() -> None:
    """What ``ShmServer`` and ``ShmClient`` call before they make or open anything: raises
    ``InternalError`` on a machine that is not x86-64; on the pure-Python path that
    ``FDN_SHM_PURE`` did not ask for, logs one warning per process (why, and how to rebuild)."""
    global _warned
    refused = unsupported_machine()
    if refused:
        raise InternalError(refused)
    if hot is not None or FORCED or _warned:
        return
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning(
        "shm: running the pure-Python hot path, several µs slower per request (%s). Rebuild the "
        "C extension (it needs a C compiler and zlib's headers): %s (from a checkout: %s); "
        "FDN_SHM_PURE=1 chooses the pure path on purpose and silences this warning",
        _why,
        REBUILD,
        REBUILD_CHECKOUT,
    )


def summary() -> str:
    """One line for ``foundation shm ls``: the hot path, why it is Python, and whether this
    machine may run the transport at all."""
    line = implementation()
    why = why_pure()
    if why and not FORCED:
        line += f" ({why}; rebuild: {REBUILD})"
    elif why:
        line += f" ({why})"
    if unsupported_machine():
        line += (
            f"; unsupported machine {platform.machine() or 'unknown'!r}: servers and clients refuse to start"
        )
    return line
