"""The private failures of a call whose request no handler saw, its server gone (stopped or dead):
``ShmClient._again`` sends it once more on a new connection (spec 10.3, 7.5); a caller only ever
sees a plain ``ServerUnavailable``."""

from __future__ import annotations

from foundation_ml.errors import ServerUnavailable

__all__ = ["_GoneBeforeDispatch", "_GoneBeforeSending", "_GoneWhileWaiting", "gone_before_sending"]


class _GoneBeforeSending(ServerUnavailable):
    """The server had stopped (its region STOPPED: a graceful stop) before the request was
    published: nothing was sent, so ``infer`` (host or CUDA inputs), ``metadata`` and ``stats``
    send it once more on a new connection (``ShmClient._again``: a server restarted under the
    same name, the first call after the restart failed, where the C, Rust and Go clients
    reconnect first). Never seen by a caller: a loan, whose areas are the old connection's, raises it as
    a plain ``ServerUnavailable`` (``gone_before_sending``)."""

    # what the call's failure says when the new connection cannot be had (spec 10.3)
    not_sent = "not sent again"


class _GoneBeforeDispatch(_GoneBeforeSending):
    """The server died (10.3) with the request published but never dispatched (no answer, and
    ``server_busy`` 0), or before it was published: no handler ran it, so it is sent once more
    (``ShmClient._again``), to a new server of the name only. A loan's call fails as a plain
    ``ServerUnavailable``, as for ``_GoneBeforeSending``."""


class _GoneWhileWaiting(_GoneBeforeDispatch):
    """The server was found gone (dead, or stopped) while the call waited for a channel still
    with it, an abandoned call's (spec 7.5): the call's own request was never written, so it is
    sent once, to a new server of the name only, within the call's deadline and as its one extra
    attempt (``ShmClient._again``); without one the call fails '...; not sent: REASON'."""

    not_sent = "not sent"


def gone_before_sending(exc: BaseException) -> BaseException:
    """``exc``, or a plain ``ServerUnavailable`` of its message if it is a ``_GoneBeforeSending``
    that no one sends again (a loan's call): the private type is never a caller's to see."""
    return ServerUnavailable(str(exc)) if isinstance(exc, _GoneBeforeSending) else exc
