"""A runtime's lifecycle: ``MLRuntime.start`` and ``close``, and closing runtimes left open at exit.

``close`` stops the servers, then unloads the models, within one drain deadline that ``hurry()``
(a second Ctrl-C) ends at once; every step runs whatever an earlier one raised. Runtimes still
open when the interpreter exits are closed then (``_close_open_runtimes``), and so is one whose
close was interrupted between its steps, unless a second ``close()`` finished it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from foundation_core import emit
from foundation_core.errors import FoundationError

from ._runtime_checks import check_drain
from ._runtime_drain import deadline_in, raise_first, time_left
from ._server_info import server_address
from ._transport import TransportServer, configured_options, make_transport
from .errors import ModelNotFound

if TYPE_CHECKING:
    from ._runtime import MLRuntime

__all__ = ["OPEN", "close", "start"]

log = logging.getLogger("foundation_ml")

#: Runtimes not closed yet: those still open when the interpreter exits are closed then.
OPEN: weakref.WeakSet[MLRuntime] = weakref.WeakSet()


@atexit.register
def _close_open_runtimes() -> None:
    """A script that started a server and ended (or failed) without ``close()`` left the shm
    transport's objects in /dev/shm and never drained its requests: each runtime still open is
    closed as ``close()`` would close it. Only this process's: a forked child (a worker forked
    after the parent started serving) must not stop and unlink the parent's servers."""
    mine = [runtime for runtime in list(OPEN) if runtime._pid == os.getpid()]
    if not mine:
        return
    with _ctrl_c_hurries(mine):
        for runtime in mine:
            try:
                runtime.close(reason="exit")
            except KeyboardInterrupt:  # a third Ctrl-C: Python's default, as documented
                raise
            except BaseException as exc:  # (a model's close() calling sys.exit): the others too
                log.warning("closing a runtime at interpreter exit failed: %r", exc)


@contextlib.contextmanager
def _ctrl_c_hurries(runtimes: list[MLRuntime]) -> Iterator[None]:
    """While ``runtimes`` close at exit, a Ctrl-C ends their drains at once (``hurry()``), as a
    second signal does for ``serve()``: what is in flight is abandoned, every object still
    released. As Python's default it raised KeyboardInterrupt inside a close, which ended the
    closing there (the runtimes after it left in /dev/shm). Another Ctrl-C acts as Python's
    default; a SIGINT handler of the script's own is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def hurry(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a third: Python's default
        for runtime in runtimes:
            runtime.hurry()

    signal.signal(signal.SIGINT, hurry)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start(runtime: MLRuntime, transport: str, name: str, options: dict[str, Any]) -> TransportServer:
    """``runtime.start`` (see there): serve on ``transport`` under ``name``, listed for ``close``
    to stop, unless the runtime is closed (before, or meanwhile: the server then stopped)."""
    with runtime._models_lock:
        if runtime._closing:
            raise _closed_error(transport, name)
    impl = make_transport(runtime.hub, transport)
    runtime._accepting = True
    options = {**configured_options(runtime.hub, transport, "serve"), **options}  # code wins over config
    try:
        server: TransportServer = impl.serve(name, runtime, **options)
    except BaseException:
        with runtime._models_lock:
            if runtime._closing:  # closed meanwhile (see below), and no server of this start serves
                runtime._accepting = False
        raise
    with runtime._models_lock:  # close() lists the servers to stop once it has set _closing
        closed = runtime._closing
        if not closed:  # named once it serves: a refused start's address named it ('bad/name')
            runtime.name = runtime.name or name
            runtime.addresses[id(server)] = name
            runtime.servers.append((transport, server))
    if closed:  # closed by another thread meanwhile, which did not see this server
        runtime._accepting = False  # (set again above, perhaps after that close had cleared it)
        server.stop(0.0)
        raise _closed_error(transport, name)
    emit("server_start", name=name, transport=transport, models=runtime.registry.names())
    return server


def _closed_error(transport: str, name: str) -> FoundationError:
    return FoundationError(
        f"the runtime is closed: start({transport!r}, {name!r}) would serve no model, and "
        "nothing would stop the server; make a new MLRuntime"
    )


def close(runtime: MLRuntime, drain_timeout: float, reason: str, drained: Callable[[], None] | None) -> None:
    """``runtime.close`` (see there): the servers stopped, ``drained()`` called, the models
    unloaded and the runtime's own hub shut down, each whatever an earlier one raised. Only a
    close that ran to its end marks the runtime closed and takes it out of ``OPEN``: one
    interrupted between its steps (a Ctrl-C) leaves the rest to the next ``close()``, or the
    exit's; the runtime refuses requests meanwhile, and every step is safe to run again."""
    drain_timeout = check_drain(drain_timeout, "close")
    mine = object()  # this close's token, once it is the one under way (runtime._closer)
    # The claim is made inside the try, so that its finally always lets go of it: a lock taken
    # before it (as this was) stayed held when a Ctrl-C came as its acquire() returned, and every
    # later close(), the exit's too, returned at once. Setting the token runs no Python code, so
    # no signal handler can run between the check and the set, nor in the finally's clearing.
    try:
        errors = _close(runtime, mine, drain_timeout, reason, drained)
    except BaseException:  # interrupted between the steps (each catches its own): not closed
        runtime._accepting = False  # a server it did not stop answers ShuttingDown from now on
        raise
    finally:
        if runtime._closer is mine:
            runtime._closer = None
    raise_first(errors, "closing the runtime also raised")


def _close(
    runtime: MLRuntime,
    mine: object,
    drain_timeout: float,
    reason: str,
    drained: Callable[[], None] | None,
) -> list[BaseException]:
    """``close``'s steps, the runtime claimed for ``mine`` (nothing if a close ran to its end
    before, or one is under way); returns what they raised."""
    with runtime._models_lock:
        if runtime._closed or runtime._closer is not None:
            return []  # (one under way: another thread's, or this one's: a model's close() calling it)
        runtime._closer = mine
        runtime._closing = True  # register_model and start refuse from now on
        # start() lists its server under this lock unless closing: close stops each listed here
        runtime._stopping, runtime.servers = [*runtime._stopping, *runtime.servers], []
    deadline = deadline_in(drain_timeout)
    runtime._close_deadline = deadline
    for served in runtime.registry.all():  # queued requests run now, not after max_wait_us
        batcher = served.batcher  # read once: an unload_model in another thread lets it go
        if batcher is not None:
            batcher.drain()
    errors: list[BaseException] = []  # each step runs whatever an earlier one raised

    def failed(exc: BaseException) -> None:
        errors.append(exc)
        if not isinstance(exc, Exception):  # Ctrl-C: the rest stops at once, still released
            runtime._hurry = True

    before = runtime.abandoned  # (an interrupted close reported its own: not twice)
    _stop_servers(runtime, deadline, reason, failed)
    _report_abandoned(runtime, runtime.abandoned - before, drain_timeout)
    if drained is not None:
        try:
            drained()
        except BaseException as exc:
            failed(exc)
    _unload_models(runtime, deadline, failed)
    if runtime._own_hub:
        _step(lambda _: runtime.hub.shutdown(), 0.0, failed)
    runtime._closed = True
    OPEN.discard(runtime)
    return errors


def _stop_servers(
    runtime: MLRuntime, deadline: float, reason: str, failed: Callable[[BaseException], None]
) -> None:
    """Each server in ``_stopping`` stops accepting and waits for its in-flight requests until
    ``deadline`` (not once hurried); ``abandoned`` then counts those it gave up on. A server
    leaves the list once its stop is over (``hurry()`` reaches it till then): the stopped ones
    refer back to this runtime (their handler), and holding them made a cycle that kept a closed
    runtime, and its hub, alive until the garbage collector ran."""
    while runtime._stopping:
        transport, server = runtime._stopping[0]
        if runtime._hurry:
            runtime.hurry()
        _step(server.stop, time_left(deadline), failed)
        del runtime._stopping[0]  # (interrupted before: the next close stops it again, a no-op)
        runtime.abandoned += int(getattr(server, "abandoned", 0) or 0)
        address = server_address(server, runtime.addresses)
        runtime.addresses.pop(id(server), None)
        emit("server_stop", name=address, transport=transport, reason=reason)
    runtime._accepting = False


def _report_abandoned(runtime: MLRuntime, abandoned: int, drain_timeout: float) -> None:
    """The warning for the ``abandoned`` requests this close's stops gave up on, if any."""
    if abandoned:
        log.warning(
            "stopped without answering %d in-flight request(s): %s",
            abandoned,
            "told to stop at once (hurry(): a second signal, or SIGQUIT)"
            if runtime._hurry
            else f"the {drain_timeout:g} s drain timed out",
        )


def _unload_models(runtime: MLRuntime, deadline: float, failed: Callable[[BaseException], None]) -> None:
    """Every model unloaded within what is left until ``deadline`` (nothing once hurried), and
    those another thread is unloading waited for."""
    for name in runtime.registry.names():
        _step(functools.partial(_unload, runtime, name), 0 if runtime._hurry else time_left(deadline), failed)
    try:
        runtime._claims.wait_for_unloads()
    except BaseException as exc:
        failed(exc)


def _unload(runtime: MLRuntime, name: str, drain_timeout: float) -> None:
    with contextlib.suppress(ModelNotFound):  # unloaded meanwhile by another thread (waited for)
        runtime.unload_model(name, drain_timeout=drain_timeout)


def _step(
    step: Callable[[float], object], drain_timeout: float, failed: Callable[[BaseException], None]
) -> None:
    """``step(drain_timeout)`` (a server's stop, a model's unload, the hub's shutdown), what it
    raises handed to ``failed``. A Ctrl-C may be handled as the step begins, before it did
    anything, which left a server serving or a model loaded for good: a step a Ctrl-C interrupts
    runs once more, at once (``step(0.0)``). Each does nothing once it ran to its end."""
    for timeout in (drain_timeout, 0.0):
        try:
            step(timeout)
            return
        except BaseException as exc:
            failed(exc)
            if isinstance(exc, Exception):
                return
