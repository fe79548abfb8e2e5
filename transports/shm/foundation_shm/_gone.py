"""A call whose request no handler saw, its server gone (stopped or dead): its private failures,
found before the request is sent (``check_before_sending``), while it waits, or by the connect it
begins with (``_GoneAtConnect``), and its one more attempt on a new connection (``once_more``,
``again``: spec 10.3, 7.5), counted as a resend once published there (spec 10.5); a caller only
ever sees a plain ``ServerUnavailable``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import posix_ipc

from foundation_ml.errors import InferenceError, ServerUnavailable

from . import _layout as L

if TYPE_CHECKING:
    from ._channel import _Channel, _Connection
    from ._client import ShmClient
    from ._pool import ChannelPool

__all__ = [
    "Lender",
    "_GoneAtConnect",
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
# why a call whose server is gone was not sent, when no server of the name answers a connect
_NO_NEW_SERVER = "no server has started under that name since"


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


class _GoneAtConnect(ServerUnavailable):
    """A connect found the server of the name gone (its region names a dead process, or it died
    while the connect waited for a hung one's beat: 10.3). Never seen by a caller: a call that
    connects as it begins (the connection an earlier call's failure dropped: ``SlowTake``, or
    ``ClientCuda``'s look at the connection) has written nothing, and fails ``unsent()``, '...;
    not sent: no server has started under that name since'; its bare '... is gone' were the
    words of a call whose handler may have run its request. A moved call's (``again``'s attempt)
    fails as its reconnect's would, '...; not sent again: ...'. A connect that is no call's (a
    new client) and a loan's begin, which sends nothing, fail ``plain()``, '... is gone'."""

    def plain(self) -> ServerUnavailable:
        return ServerUnavailable(self.message)

    def unsent(self) -> ServerUnavailable:
        return ServerUnavailable(f"{self.message}; not sent: {_NO_NEW_SERVER}")


class Lender(Protocol):
    """Where one attempt of a call takes its channel and gives it back: the client's
    ``ChannelPool``, or for the attempt ``again`` makes, a ``_Moved`` that counts it."""

    def take(self, deadline_ns: int, pending_wait: float | None = None) -> _Channel: ...

    def give(self, ch: _Channel, *, hold: bool = False) -> None: ...


class _Moved:
    """``pool``'s channels for the attempt of a call moved to a new connection (``again``): the
    call counts as a resend (spec 10.5) when it gives back the channel it published on (its
    ``seq`` moved since the take; an attempt takes one channel, a call is moved once). Counted
    there, not at the publish, so that the publish (every call's) does no work for it; while the
    call holds the channel no other thread publishes on it."""

    __slots__ = ("pool", "seq")

    def __init__(self, pool: ChannelPool) -> None:
        self.pool = pool
        self.seq = -1

    def take(self, deadline_ns: int, pending_wait: float | None = None) -> _Channel:
        ch = self.pool.take(deadline_ns, pending_wait)
        self.seq = ch.seq
        return ch

    def give(self, ch: _Channel, *, hold: bool = False) -> None:
        if ch.seq != self.seq:
            self.pool.resent()
        self.pool.give(ch, hold=hold)


def gone_before_sending(exc: BaseException) -> BaseException:
    """``exc``, or a plain ``ServerUnavailable`` of its message if it is a ``_GoneBeforeSending``
    that no one sends again (a loan's call): the private type is never a caller's to see."""
    return ServerUnavailable(str(exc)) if isinstance(exc, _GoneBeforeSending) else exc


def check_before_sending(conn: _Connection, closed: bool) -> None:
    """Before publishing a request: ``conn.check()``, its failure raised as ``_GoneBeforeSending``
    when the region says the server stopped, as ``_GoneBeforeDispatch`` when its process is dead
    (another thread's call found it so, and may have dropped the connection: that drop, not the
    client's close, leaves the call to go elsewhere). Not when the client was ``closed`` (the call
    fails, it is not sent elsewhere), nor when the region was lost (shrunk under this client: its
    own message says more than the reconnect's would)."""
    try:
        conn.check()
    except ServerUnavailable as exc:
        if closed or conn.client_closed or conn.ctl.faulted():
            raise
        if conn.ctl.u32[_STATE] == _STOPPED:
            raise _GoneBeforeSending(str(exc)) from None
        if conn.dead():
            raise _GoneBeforeDispatch(conn.gone()) from None
        raise


def once_more(client: ShmClient, attempt: Callable[[Lender], _T], deadline: int) -> _T:
    """``attempt(lender)`` on the client's pool, and once more (``again``) if its server was gone
    before the request reached a handler."""
    try:
        return attempt(client._pool)
    except _GoneBeforeSending as gone:
        return again(client, attempt, gone, deadline)


def again(client: ShmClient, attempt: Callable[[Lender], _T], gone: _GoneBeforeSending, deadline: int) -> _T:
    """The second ``attempt(lender)`` of a ``client``'s call whose first found its server gone before
    the request reached a handler (``gone``): stopped before it was sent, or dead with it not
    dispatched (``_GoneBeforeDispatch``, spec 10.3: then it goes only to a new server of the name
    that answers a reconnect within ``deadline``, and otherwise the call fails with ``gone``'s
    message), or found gone while the call waited for a channel still with it
    (``_GoneWhileWaiting``, spec 7.5: its request not written yet, it goes the same way).
    Once per call: a second such failure is a plain ``ServerUnavailable``. Its ``lender``, a
    ``_Moved``, counts the call as a resend if it publishes its request (spec 10.5): not when the
    reconnect fails, nor when the new server too is gone before the request is sent."""
    if isinstance(gone, _GoneBeforeDispatch):
        try:  # the reconnect (10.1): a channel of a live server's new connection
            client._give(client._take(deadline))
        except InferenceError as exc:  # no server yet, the dead one's region, hung, overloaded, late
            since = exc.message
            if since == gone.message:  # the dead server's region, still there
                since = _NO_NEW_SERVER
            raise ServerUnavailable(f"{gone.message}; {gone.not_sent}: {since}") from None
        except (OSError, posix_ipc.Error) as exc:  # EMFILE opening its objects: typed, as gone
            raise ServerUnavailable(f"{gone.message}; {gone.not_sent}: {exc}") from None
    try:
        return attempt(_Moved(client._pool))
    except _GoneBeforeSending as exc:
        raise ServerUnavailable(str(exc)) from None
    except _GoneAtConnect as exc:  # the attempt's own connect (a STOPPED region that stays, or
        # a server dead since the reconnect above) found it gone: a moved call's words, as above
        since = _NO_NEW_SERVER if exc.message == gone.message else exc.message
        raise ServerUnavailable(f"{gone.message}; {gone.not_sent}: {since}") from None
