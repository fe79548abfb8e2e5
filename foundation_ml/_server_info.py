"""What the runtime reads of its transport servers beyond the contract, each part optional.

A transport server may say that its serving loop died (``failed``), keep counters (``stats()``)
and count the requests it holds (``in_flight()``); one that does not is taken as healthy, with no
counters and nothing in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._transport import TransportServer

__all__ = ["failed_server", "in_flight", "in_flight_of", "server_address", "server_stats"]


def server_address(server: TransportServer, addresses: Mapping[int, str] | None = None) -> str:
    """The address ``server`` was started under: the runtime's record (``addresses``, by
    ``id(server)``), else the server's optional ``address``, else its class's name."""
    known = (addresses or {}).get(id(server))
    return known or str(getattr(server, "address", "") or f"<{type(server).__name__}>")


def failed_server(
    servers: list[tuple[str, TransportServer]], addresses: Mapping[int, str] | None = None
) -> str:
    """What failed, if a transport server's serving loop died (its optional ``failed``), or ""."""
    for transport, server in servers:
        failed = getattr(server, "failed", None)
        if failed is not None:
            where = server_address(server, addresses)
            return f"the {transport} server {where!r} failed: {type(failed).__name__}: {failed}"
    return ""


def server_stats(server: TransportServer) -> dict[str, Any]:
    """A transport server's own counters, when it keeps any (an optional ``stats()``)."""
    stats = getattr(server, "stats", None)
    if not callable(stats):
        return {}
    try:
        return dict(stats())
    except Exception as exc:  # observability must not break the stats call
        return {"error": repr(exc)}


def in_flight(server: TransportServer) -> int:
    """The requests a transport server has taken or queued and not answered, when it can say
    (an optional ``in_flight()``, else its ``stats()``' ``busy``), for the drain's log line."""
    count = getattr(server, "in_flight", None)
    try:
        return int(count() if callable(count) else server_stats(server).get("busy", 0))
    except Exception:  # a count for a log line must not stop the shutdown
        return 0


def in_flight_of(servers: list[tuple[str, TransportServer]]) -> dict[str, int]:
    """``{transport: in_flight(server)}`` for the servers that can say (an ``in_flight()`` or a
    ``busy`` counter): one that cannot is left out, not shown as holding nothing."""
    return {
        t: in_flight(s)
        for t, s in servers
        if callable(getattr(s, "in_flight", None)) or "busy" in server_stats(s)
    }
