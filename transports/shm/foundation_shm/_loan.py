"""Loans: writable numpy views on a channel's request area, so inputs are written once, in place."""

from __future__ import annotations

import operator
import os
import warnings
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from foundation_ml import DataType, InferenceResponse
from foundation_ml.errors import InferenceError, InvalidInput

from ._client_write import ensure, write
from ._codec import MAX_REQUEST_ID, encode_params, layout, request_payload_size, write_header
from ._codec import request_id as checked_request_id
from ._gone import _GoneAtConnect, gone_before_sending, once_more
from ._layout import MAX_NDIM

if TYPE_CHECKING:
    from ._channel import _Channel
    from ._client import ShmClient
    from ._pool import ChannelPool

__all__ = ["Loan", "TensorSpecLike", "lend"]

TensorSpecLike = tuple["DataType | np.dtype[Any] | str | type", Sequence[int]]

_LOANS: weakref.WeakSet[Loan] = weakref.WeakSet()  # every open loan, for fork
_RETURNED = "this loan was returned; take a new one"


def _refuse_after_fork() -> None:
    """In a forked child: a loan open at the fork is the parent's (its channel, and its request
    area, shared with the parent, which may be writing or sending it now). The child's copy lends
    nothing more: ``loan[name]`` and ``infer()`` raise ``ValueError`` saying so, and the input
    arrays it handed out turn read-only in the child (writing them would change the parent's
    request). Its ``close()`` gives nothing back (the pool forgot the parent's channels)."""
    for loan in list(_LOANS):
        if loan._channel is None:
            continue
        loan._channel = None
        loan._gone = (
            f"this loan was taken in process {loan._pid} before os.fork(): its channel is that "
            "process's; take a new loan in this one"
        )
        for view in loan.inputs.values():
            view.flags.writeable = False
        loan.inputs = {}


os.register_at_fork(after_in_child=_refuse_after_fork)


def _datatype(dtype: DataType | np.dtype[Any] | str | type) -> DataType:
    if isinstance(dtype, DataType):
        return dtype
    if isinstance(dtype, str) and dtype.upper() in DataType.__members__:
        return DataType[dtype.upper()]
    if dtype is None:  # np.dtype(None) is float64: not a choice to make for the caller
        raise ValueError("None is not a datatype")
    try:
        return DataType.from_numpy(np.dtype(dtype))
    except TypeError as exc:  # np.dtype("nope")
        raise ValueError(str(exc)) from None


def _spec(model: str, name: Any, spec: Any) -> tuple[str, DataType, tuple[int, ...]]:
    """One loaned input's (name, datatype, shape), or an ``InvalidInput`` naming it and what is wrong."""
    if type(name) is not str:
        raise InvalidInput(f"loan input names must be strings, not {name!r}", model=model)
    try:
        dtype, shape = spec
    except (TypeError, ValueError):
        what = f"loan input {name!r}: {spec!r} is not a (dtype, shape) pair"
        raise InvalidInput(what, model=model) from None
    try:
        datatype = _datatype(dtype)
    except ValueError as exc:
        names = ", ".join(DataType.__members__)
        raise InvalidInput(
            f"loan input {name!r}: {dtype!r} is not a protocol datatype ({exc}; datatypes: {names})",
            model=model,
        ) from None
    try:  # whole numbers only: 2.5, True or "3" are no dimension (int() would take them)
        dims = tuple(operator.index(d) if type(d) is not bool else -1 for d in shape)
        ok = not isinstance(shape, (str, bytes)) and all(d >= 0 for d in dims) and len(dims) <= MAX_NDIM
    except TypeError:
        ok = False
    if not ok:
        raise InvalidInput(
            f"loan input {name!r}: shape {shape!r} must be a sequence of at most {MAX_NDIM} "
            "non-negative integers",
            model=model,
        )
    return name, datatype, dims


def _dropped(pool: ChannelPool, ch: _Channel, answered: list[bool], hold: bool, model: str, pid: int) -> None:
    """A loan was dropped without ``close()`` (its ``weakref.finalize``): its channel goes back to
    the pool, as ``close()`` gives it. Never at interpreter exit (the process's end frees it all),
    nor in a forked child (``pid`` took the loan: the channel is the parent's). A request of the
    loan still with the server (its ``infer()`` was interrupted) leaves the channel busy: the pool
    takes a channel for a call only once the server has answered everything published on it."""
    if pid != os.getpid():
        return
    pool.give(ch, hold=hold and answered[0])
    warnings.warn(
        f"shm loan of model {model!r} on {pool.name!r} was not returned; its channel was given back "
        "when it was dropped (call close(), or use it as a context manager)",
        ResourceWarning,
        stacklevel=3,  # past finalize.__call__: the code that dropped it (or collected)
    )


def _pending(ch: _Channel) -> bool:
    """Whether a request published on ``ch`` is still with a server that lives (a dead one, or a
    connection the client dropped, reads nothing more)."""
    conn = ch.conn
    try:
        return conn.alive and not conn.closing and not ch.idle()
    except ValueError:  # the connection was closed under this look (the client closing)
        return False


class Loan:
    """``with client.loan("m", {"x": (DataType.FP32, (1, 784))}) as loan:
    loan["x"][:] = data; response = loan.infer()``; write again and ``infer()`` again as often as
    wanted. The views (and the response's) are valid until the loan is closed. A loan dropped
    without ``close()`` gives its channel back when it is collected (with a ``ResourceWarning``,
    as an unclosed file does).

    An ``infer()`` that fails while its request is still with the server (it passed its deadline,
    or was interrupted: the server may still be reading the inputs) ends the loan: ``loan[name]``
    and ``infer()`` then raise ``InvalidInput`` naming that request, and the views handed out are
    made read-only (a view derived from one, a slice or a reshape, is not: it must not be
    written either). Close it; a new loan takes another channel, or waits for this one's answer
    up to the client's ``connect_timeout`` (then ``DeadlineExceeded``)."""

    def __init__(
        self,
        client: ShmClient,
        channel: _Channel,
        model: str,
        inputs: Mapping[str, TensorSpecLike],
        *,
        version: str = "",
        outputs: Sequence[str] = (),
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._channel: _Channel | None = channel
        self._answered = [False]  # an infer() returned outputs that view the response area
        self._ended = 0  # the id of a request that failed while still with the server (it ended the loan)
        self._gone = _RETURNED  # why the loan lends nothing (no channel): returned, or forked
        self._pid = os.getpid()  # the process whose channel it lends
        self.model = model
        self.version = version
        self.outputs = tuple(outputs)
        self._params = encode_params(parameters or {})
        specs = [_spec(model, name, spec) for name, spec in inputs.items()]
        payload = request_payload_size(len(specs), len(self.outputs), len(self._params))
        self._refs, self._end = layout(specs, payload)
        ensure(client, channel, self._end)
        # written now, so a name too long (model, version, input, output) fails here, not on
        # every infer(); infer() then only writes the header (request id, or the deadline too)
        self._payload = write(
            client, channel, self._refs, self._end, 0, model, version, 0, self.outputs, self._params
        )
        self._written: tuple[int, int] | None = (channel.gen, 0)  # (data_gen, deadline) in place
        self._map()
        # last: a loan that failed above is given back by client.loan(), not by this as well.
        # Refers to the pool, not the client or the loan: a dropped loan is collected as usual
        hold = not client.copy_outputs
        self._finalizer = weakref.finalize(
            self, _dropped, client._pool, channel, self._answered, hold, model, self._pid
        )
        self._finalizer.atexit = False
        _LOANS.add(self)

    def _map(self) -> None:
        ch = self._live()
        self.inputs = {
            ref.name: np.frombuffer(ch.req, ref.dtype.numpy, int(np.prod(ref.shape)), ref.offset).reshape(
                ref.shape
            )
            for ref in self._refs
        }

    def _live(self) -> _Channel:
        if self._channel is None:
            raise ValueError(self._gone)
        return self._channel

    def _usable(self) -> _Channel:
        """The loan's channel, unless the loan was returned or ended (``InvalidInput``, below)."""
        ch = self._live()
        if self._ended:
            raise InvalidInput(
                f"this loan ended when its request {self._ended} failed while still with the "
                "server, which may be reading its inputs: close it and take a new loan (on another "
                "channel, or on this one once the server is done)",
                model=self.model,
                request_id=self._ended,
            )
        return ch

    def _stop_lending(self, rid: int) -> None:
        """The request ``rid`` failed while still with the server: lend the inputs no more. The
        arrays handed out become read-only (views derived from them cannot be reached)."""
        self._ended = rid
        for view in self.inputs.values():
            view.flags.writeable = False
        self.inputs = {}

    def __getitem__(self, name: str) -> np.ndarray:
        self._usable()
        return self.inputs[name]

    def infer(self, *, timeout: float | None = None, request_id: int = 0) -> InferenceResponse:
        """Send the loaned tensors as they are now; returns the response (views until the next call).
        If it fails with the request still with the server, the loan has ended (see the class)."""
        ch = self._usable()
        client = self._client
        deadline = client._deadline(0, timeout)
        rid = request_id or next(client._ids)
        if type(rid) is not int or not 0 < rid <= MAX_REQUEST_ID:
            rid = checked_request_id(rid, self.model)
        gen = ch.gen
        if self._written == (gen, deadline) and ch.wkey is None:
            write_header(ch.req, 1, rid, self._payload, client.flags, self._refs)
        else:
            self._payload = write(
                client,
                ch,
                self._refs,
                self._end,
                rid,
                self.model,
                self.version,
                deadline,
                self.outputs,
                self._params,
            )
            self._written = (gen, deadline)
        try:
            resp = client._exchange(ch, rid, self.model, deadline, retry=True)
            self._answered[0] = True
            return resp
        except BaseException as exc:
            if _pending(ch):  # the server may still read the inputs: they are not to be written
                self._stop_lending(rid)
            # a server stopped before the request was sent: a loan's areas are the old
            # connection's, so nothing sends it again; the caller sees ServerUnavailable
            plain = gone_before_sending(exc)
            if isinstance(plain, InferenceError):  # made where the call is not known (as infer's)
                plain.with_call(self.model, rid)
            if plain is exc:
                raise
            raise plain from None
        finally:
            if ch.gen != gen and not self._ended:  # the response area grew: the segment moved, and
                self._map()  # the views with it

    def close(self) -> None:
        # detach() answers once: the channel goes back here or in the finalizer, never twice
        if self._finalizer.detach() is not None and self._channel is not None:
            ch, self._channel = self._channel, None
            self.inputs = {}
            # outputs of the last infer() view the response area: keep the channel for this thread
            self._client._give(ch, hold=self._answered[0] and not self._client.copy_outputs)

    def __enter__(self) -> Loan:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def lend(
    client: ShmClient,
    model: str,
    inputs: Mapping[str, TensorSpecLike],
    timeout: float | None,
    version: str,
    outputs: Sequence[str],
    parameters: Mapping[str, Any] | None,
) -> Loan:
    """``client.loan(...)``: a ``Loan`` on a channel taken for it, waiting for one still with the
    server up to ``timeout`` and ``connect_timeout``; taken once more (``once_more``) if its
    server was found gone meanwhile."""
    deadline = client._deadline(0, timeout)
    try:
        # (the pool's take, also when moved: a loan sends nothing yet, no resend to count)
        ch = once_more(client, lambda _: client._take(deadline, client.connect_timeout), deadline)
        try:
            return Loan(client, ch, model, inputs, version=version, outputs=outputs, parameters=parameters)
        except BaseException:
            client._give(ch)
            raise
    except InferenceError as exc:  # as infer's (a loan sends no request yet: no id)
        if isinstance(exc, _GoneAtConnect):  # nothing is sent as a loan begins: '... is gone'
            raise exc.plain().with_call(model) from None
        exc.with_call(model)
        raise
