"""The transport kit's checks of a connection's and a server's end: ``close()`` with calls in
flight and after it, ``stop()`` with a request in flight, serving an address again, and what
``serve``/``connect`` refuse. Run in ``CHECKS``' order with the others (``_checks``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._types import InferenceRequest, InferenceResponse
from ..errors import DeadlineExceeded, InferenceError, ServerUnavailable, ShuttingDown
from ._kit import _Kit, _Recorder
from ._owned import _expect, _Fail, _names_call, _raised

__all__ = ["check_close_and_stop", "check_refusals"]


def check_close_and_stop(kit: _Kit) -> None:
    """After ``close()`` every call of that client fails ``ServerUnavailable`` (the server still
    serving others), and a second ``close()`` is fine; a call in flight at ``close()`` fails; a
    request in flight when ``stop()`` is called is answered; after ``stop()`` nothing serves the
    address, calls fail ``ServerUnavailable`` (or ``ShuttingDown``), and it can be served again.
    ``stop()`` called again does nothing (the runtime's ``close()``, interrupted by a Ctrl-C, runs
    it once more), not even to a new server of the same address. Each error names its call's
    model and request id."""
    before = _leftovers(kit)
    handler = kit.recorder()
    address = kit.address()
    server = kit.serve(address, handler)
    client = kit.connect(address)
    x = np.ones((1, 1))
    closed = kit.connect(address)
    kit.close(closed)
    for call, what, model, rid in (
        (
            functools.partial(closed.infer, InferenceRequest("kit-x", {"x": x}, id=31), timeout=kit.patience),
            "infer",
            "kit-x",
            31,
        ),
        (functools.partial(closed.metadata, "kit-meta", timeout=kit.patience), "metadata", "kit-meta", None),
        (functools.partial(closed.stats, timeout=kit.patience), "stats", None, None),
    ):
        what = f"{what} after close() (the server still serving)"
        exc = kit.raises(ServerUnavailable, call, what)
        if model is not None:
            _names_call(exc, model, rid, what)
    kit.call(closed.close, "a second close()")
    _closed_in_flight(kit, address, handler)
    sent = InferenceRequest("kit-x", {"x": x}, id=6)
    r = kit.call(functools.partial(client.infer, sent, timeout=kit.patience), "another client's infer")
    _expect(r.id == 6, "another client's call failed after one client closed")

    sent_before = len(handler.requests)
    handler.delay = 0.3
    box: list[Any] = []
    request = InferenceRequest("kit-x", {"x": x}, id=8)
    t = kit.thread(
        lambda: box.append(
            _catch(functools.partial(client.infer, request, timeout=kit.patience), BaseException)
        )
    )
    deadline = time.monotonic() + kit.patience
    while len(handler.requests) <= sent_before and time.monotonic() < deadline:
        time.sleep(0.005)
    kit.stop(server, 5.0, "stop(5.0) with a request in flight")
    kit.stop(server, 0.0, "a second stop()")
    t.join(kit.patience)
    _expect(bool(box), "the call in flight at stop() had not returned")
    _expect(
        isinstance(box[0], InferenceResponse),
        f"the call in flight at stop() got {box[0]!r} instead of its answer",
    )
    kit.raises(ServerUnavailable, lambda: kit.connect(address), "connect after stop()")
    late = _catch(
        lambda: kit.call(
            lambda: client.infer(InferenceRequest("kit-x", {"x": x}, id=33), timeout=kit.patience),
            "infer after stop()",
        )
    )
    _expect(
        type(late) in (ServerUnavailable, ShuttingDown),
        f"infer after stop() gave {late!r:.200}, expected ServerUnavailable or ShuttingDown",
    )
    _names_call(late, "kit-x", 33, "infer after stop()")
    kit.close(client)
    anew = kit.serve(address, kit.recorder())
    kit.stop(server, 0.0, "stop() of a stopped server whose address is served anew")
    anew_said = "the new server of the address, once the old one's stop() ran again"
    client = _catch(lambda: kit.connect(address))
    _expect(not isinstance(client, BaseException), f"connect to {anew_said} raised {client!r:.200}")
    r = _catch(
        lambda: kit.call(
            functools.partial(client.infer, InferenceRequest("kit-x", {"x": x}, id=9), timeout=kit.patience),
            f"infer to {anew_said}",
        )
    )
    _expect(isinstance(r, InferenceResponse) and r.id == 9, f"infer to {anew_said} gave {r!r:.200}")
    kit.close(client)
    kit.stop(anew, 1.0)
    after = _leftovers(kit)
    _expect(sorted(after) == sorted(before), f"left behind after stop(): {sorted(set(after) - set(before))}")


def _leftovers(kit: _Kit) -> list[str]:
    """What ``check_transport``'s ``leftovers()`` names; a TypeError saying that the author's
    function, not the transport, is wrong when it returns anything but an iterable of str (None
    was "'NoneType' object is not iterable", read as the transport's fault)."""
    if not kit.leftovers:
        return []
    got = kit.leftovers()
    names = list(got) if isinstance(got, (list, tuple, set, frozenset)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"check_transport's leftovers() returned {type(got).__name__} {got!r:.80}, not a list of"
            " str: the names of what the transport holds (its files, say)"
        )
    return names


def _closed_in_flight(kit: _Kit, address: str, handler: _Recorder) -> None:
    """A call in flight (its request with the handler, unanswered) when its client is closed
    fails: ``ServerUnavailable`` (shm: at once), or ``DeadlineExceeded`` at its timeout (inproc:
    a call is not interrupted), naming its model and request id."""
    client = kit.connect(address)
    request = InferenceRequest("kit-hang", {"x": np.ones((1, 1))}, id=32)
    box: list[Any] = []
    timeout = min(0.5, kit.patience / 2)
    hung = len(handler.hung)
    t = kit.thread(
        lambda: box.append(_catch(functools.partial(client.infer, request, timeout=timeout), BaseException))
    )
    deadline = time.monotonic() + kit.patience
    while len(handler.hung) <= hung and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    kit.close(client, "close() with a call in flight")
    t.join(kit.patience)
    handler.release()  # answered now, late: the server holds nothing of it at stop()
    _expect(bool(box), "the call in flight at close() had not returned")
    got = box[0]
    if isinstance(got, BaseException) and not isinstance(got, InferenceError):  # reported as it is
        raise got if isinstance(got, Exception) else _Fail(_raised("the call in flight at close()", got))
    _expect(
        type(got) in (ServerUnavailable, DeadlineExceeded),
        f"the call in flight at close() gave {got!r:.200}, expected ServerUnavailable (or"
        " DeadlineExceeded at its timeout)",
    )
    _names_call(got, "kit-hang", 32, "the call in flight at close()")


def _catch(fn: Callable[[], Any], kinds: type[BaseException] = Exception) -> Any:
    """What ``fn()`` returned or raised (``kinds``: ``BaseException`` in a thread of the kit's,
    whose exceptions are all its own; never where an interrupt of the caller's may arrive)."""
    try:
        return fn()
    except kinds as exc:
        return exc


def check_refusals(kit: _Kit) -> None:
    """``connect`` to an address nothing serves is ``ServerUnavailable``; an unknown option is a
    ``TypeError`` for ``serve`` and ``connect``, and a ``serve`` refused so leaves the address
    free; an empty address is a ``ValueError`` from ``check_address``."""
    address = kit.address()
    kit.raises(ServerUnavailable, lambda: kit.connect(address), "connect to an address nothing serves")
    kit.raises(
        TypeError,
        lambda: kit.serve(address, kit.recorder(), kit_no_such_option=1),
        "serve(kit_no_such_option=1)",
    )
    server = kit.serve(address, kit.recorder())
    kit.raises(TypeError, lambda: kit.connect(address, kit_no_such_option=1), "connect(kit_no_such_option=1)")
    kit.stop(server, 1.0)
    kit.raises(ValueError, lambda: kit.transport.check_address(""), "check_address('')")
