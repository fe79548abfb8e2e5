"""``MLRuntime.serve``: serve until a stop signal, then shut down gracefully (the drain, a second
signal to hurry it, the metrics file, a transport whose serving loop died)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from foundation_core.errors import FoundationError

from ._metrics_file import MetricsWriter, metrics_problem
from ._server_info import failed_server, in_flight
from ._stop_flag import StopFlag
from .errors import InternalError

if TYPE_CHECKING:
    from ._runtime import MLRuntime

__all__ = ["STOP_SIGNALS", "serve_until_stopped"]

log = logging.getLogger("foundation_ml")

# the signals ``serve`` stops on: Ctrl-C, kill/systemd/docker stop, a closed terminal or ssh
# session; and Ctrl-\ (SIGQUIT), which stops at once: no drain, everything still released
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def serve_until_stopped(
    runtime: MLRuntime,
    transport: str,
    name: str,
    ready: Any,
    metrics_file: str | None,
    options: dict[str, Any],
) -> int:
    """``runtime.serve``: start ``transport`` under ``name``, call ``ready()``, then wait for a
    stop signal (or a dead serving loop), and close; the exit status (see ``MLRuntime.serve``)."""
    stop = StopFlag()  # set by the handler: threading.Event.set() there can deadlock (_stop_flag)
    reason = ["stopped"]

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():  # the second: end the drain now; a third acts as Python's default
            runtime.hurry()
            for s, h in previous.items():
                signal.signal(s, h)
            return
        reason[0] = signal.Signals(signum).name
        if signum == signal.SIGQUIT:
            runtime._hurry = True  # close() abandons what is in flight instead of draining it
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # signal.signal's bare ValueError
        raise FoundationError(
            f"serve({transport!r}, {name!r}) waits for SIGINT/SIGTERM, whose handlers only the main "
            "thread can set: call it from the main thread, or from this one start() the server and "
            "close() the runtime when done (nothing was started)"
        )
    why = metrics_problem(metrics_file) if metrics_file else ""
    if why:  # it was a warning each second while it served on, where foundation serve refuses it
        raise ValueError(f"serve: metrics_file {metrics_file!r}: {why} (nothing was started)")
    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    metrics = MetricsWriter(metrics_file, runtime.prometheus) if metrics_file else None
    broken = ""
    try:
        runtime.start(transport, name, **options)
        if ready is not None:
            ready()
        while not stop.wait(1.0 if metrics_file else 0.5):
            broken = failed_server(runtime.servers, runtime.addresses)
            if broken:
                reason[0] = "failed"
                break
            if metrics:
                metrics()
    finally:
        waiting = sum(in_flight(s) for _, s in runtime.servers)
        if waiting and stop.is_set() and not runtime._hurry:
            log.warning("draining %d in-flight request(s) (signal again to stop at once)", waiting)
        try:
            runtime.close(reason=reason[0], drained=metrics)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    if broken:
        raise InternalError(f"{broken}; the server stopped (a supervisor may restart it)")
    return 0
