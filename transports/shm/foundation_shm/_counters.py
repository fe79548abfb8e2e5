"""What a shm client counts (spec 10.5): its reconnects and its resends, read as one value."""

from __future__ import annotations

import attrs

__all__ = ["ClientCounters"]


@attrs.frozen
class ClientCounters:
    """A snapshot of what one ``ShmClient`` counted since it was made (spec 10.5; nothing of it is
    in shared memory). Each count starts at 0 and only grows; a closed client keeps its counts.

    ``reconnects``: connections the client made after its first, each once a channel was claimed
    on it: its server had died, stopped, or its region was lost. A connect that fails is not
    counted, nor are more channels claimed on the same connection.

    ``resends``: calls (``infer``, ``ainfer``, ``metadata``, ``stats``) sent once more on a new
    connection because their server was found gone before a handler saw the request (published
    and never dispatched, found stopped or dead before publishing, or not yet written while the
    call waited for a channel), counted once the request is published there; at most once a
    call. A call whose reconnect fails, or that fails "gone" because a handler may have run its
    request, is not counted."""

    reconnects: int
    resends: int
