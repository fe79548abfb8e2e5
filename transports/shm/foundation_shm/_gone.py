"""A call whose request no handler saw, its server gone (stopped or dead): its private failures,
found before the request is sent (``check_before_sending``) or while it waits, and its one more
attempt on a new connection (``once_more``, ``again``: spec 10.3, 7.5); a caller only ever sees a
plain ``ServerUnavailable``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import posix_ipc

from foundation_ml.errors import InferenceError, ServerUnavailable

from . import _layout as L

if TYPE_CHECKING:
    from ._channel import _Connection
    from ._client import ShmClient

__all__ = [
    "_GoneBeforeDispatch",
    "_GoneBeforeSending",
    "_GoneWhileWaiting",
    "again",
    "check_before_sending",
    "gone_before_sending",
    "once_more",
]

_STATE = L.RegionField.STATE // 4
_STOPPED = int(L.RegionState.STOPPED)
_T = TypeVar("_T")


class _GoneBeforeSending(ServerUnavailable):
    """The server had stopped (its region STOPPED: a graceful stop) before the request was
    published: nothing was sent, so ``infer`` (host or CUDA inputs), ``metadata`` and ``stats``
    send it once more on a new connection (``again``: a server restarted under the same name,
    the first call after the restart failed, where the C, Rust and Go clients reconnect first).
    Never seen by a caller: a loan, whose areas are the old connection's, raises it as a plain
    ``ServerUnavailable`` (``gone_before_sending``)."""

    # what the call's failure says when the new connection cannot be had (spec 10.3)
    not_sent = "not sent again"


class _GoneBeforeDispatch(_GoneBeforeSending):
    """The server died (10.3) with the request published but never dispatched (no answer, and
    ``server_busy`` 0), or before it was published: no handler ran it, so it is sent once more
    (``again``), to a new server of the name only. A loan's call fails as a plain
    ``ServerUnavailable``, as for ``_GoneBeforeSending``."""


class _GoneWhileWaiting(_GoneBeforeDispatch):
    """The server was found gone (dead, or stopped) while the call waited for a channel still
    with it (an abandoned call's, or one in another thread's call), or for its beat to claim one
    more (spec 7.5): the call's own request was never written, so it is
    sent once, to a new server of the name only, within the call's deadline and as its one extra
    attempt (``again``); without one the call fails '...; not sent: REASON'."""

    not_sent = "not sent"


def gone_before_sending(exc: BaseException) -> BaseException:
    """``exc``, or a plain ``ServerUnavailable`` of its message if it is a ``_GoneBeforeSending``
    that no one sends again (a loan's call): the private type is never a caller's to see."""
    return ServerUnavailable(str(exc)) if isinstance(exc, _GoneBeforeSending) else exc


def check_before_sending(conn: _Connection, closed: bool) -> None:
    """Before publishing a request: ``conn.check()``, its failure raised as ``_GoneBeforeSending``
    when the region says the server stopped, as ``_GoneBeforeDispatch`` when its process is dead
    (another thread's call found it so, and may have dropped the connection). Not when the
    client was ``closed`` (the call fails, it is not sent elsewhere), nor when the region was
    lost (shrunk under this client: its own message says more than the reconnect's would)."""
    try:
        conn.check()
    except ServerUnavailable as exc:
        if closed or conn.ctl.faulted():
            raise
        if not conn.closing and conn.ctl.u32[_STATE] == _STOPPED:
            raise _GoneBeforeSending(str(exc)) from None
        if conn.dead():
            raise _GoneBeforeDispatch(conn.gone()) from None
        raise


def once_more(client: ShmClient, attempt: Callable[[], _T], deadline: int) -> _T:
    """``attempt()``, and once more (``again``) if its server was gone before the request
    reached a handler."""
    try:
        return attempt()
    except _GoneBeforeSending as gone:
        return again(client, attempt, gone, deadline)


def again(client: ShmClient, attempt: Callable[[], _T], gone: _GoneBeforeSending, deadline: int) -> _T:
    """The second ``attempt()`` of a ``client``'s call whose first found its server gone before
    the request reached a handler (``gone``): stopped before it was sent, or dead with it not
    dispatched (``_GoneBeforeDispatch``, spec 10.3: then it goes only to a new server of the name
    that answers a reconnect within ``deadline``, and otherwise the call fails with ``gone``'s
    message), or found gone while the call waited for a channel still with it
    (``_GoneWhileWaiting``, spec 7.5: its request not written yet, it goes the same way).
    Once per call: a second such failure is a plain ``ServerUnavailable``."""
    if isinstance(gone, _GoneBeforeDispatch):
        try:  # the reconnect (10.1): a channel of a live server's new connection
            client._give(client._take(deadline))
        except InferenceError as exc:  # no server yet, the dead one's region, hung, overloaded, late
            since = exc.message
            if since == gone.message:  # the dead server's region, still there
                since = "no server has started under that name since"
            raise ServerUnavailable(f"{gone.message}; {gone.not_sent}: {since}") from None
        except (OSError, posix_ipc.Error) as exc:  # EMFILE opening its objects: typed, as gone
            raise ServerUnavailable(f"{gone.message}; {gone.not_sent}: {exc}") from None
    try:
        return attempt()
    except _GoneBeforeSending as exc:
        raise ServerUnavailable(str(exc)) from None
