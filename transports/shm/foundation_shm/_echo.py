"""A trivial echo server for tests, benchmarks and other languages' clients.

``python -m foundation_shm._echo NAME [--channels N] [--spin-us US]`` serves until SIGTERM/SIGINT,
printing ``ready`` once clients can connect; should its serving loop die, it stops and exits 1.
Models: ``echo`` returns its inputs as outputs; ``fail`` raises (HANDLER_ERROR); ``busy`` raises
Overloaded; ``sleep`` waits ``parameters["ms"]`` before answering; ``later`` answers from another
thread. Others: MODEL_NOT_FOUND.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from foundation_ml import InferenceRequest, InferenceResponse, Respond
from foundation_ml._stop_flag import StopFlag
from foundation_ml.errors import ModelNotFound, Overloaded

if TYPE_CHECKING:
    from ._server import ShmServer

__all__ = ["EchoHandler", "main", "serve_until_stopped"]

MODELS = ("echo", "fail", "busy", "sleep", "later")


class EchoHandler:
    """Echoes inputs back; see the module docstring for the other models."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        self.count += 1
        model = request.model
        if model == "echo":
            respond(InferenceResponse(request.id, model, request.inputs))
        elif model == "fail":
            raise ValueError(f"boom on request {request.id}")
        elif model == "busy":
            raise Overloaded("too busy", model=model, request_id=request.id)
        elif model == "sleep":
            time.sleep(float(request.parameters.get("ms", 100)) / 1000)
            respond(InferenceResponse(request.id, model, request.inputs))
        elif model == "later":
            inputs = {k: v.copy() for k, v in request.inputs.items()}
            threading.Timer(0.001, respond, [InferenceResponse(request.id, model, inputs)]).start()
        else:
            raise ModelNotFound(f"model {model!r} is not served (served: {', '.join(MODELS)})", model=model)

    def metadata(self, model: str) -> dict[str, Any]:
        if model not in MODELS:
            raise ModelNotFound(f"model {model!r} is not served", model=model)
        return {"name": model, "versions": ["1"], "platform": "echo", "inputs": [], "outputs": []}

    def stats(self) -> dict[str, Any]:
        return {"requests": self.count}


def serve_until_stopped(server: ShmServer, stop: StopFlag) -> int:
    """Wait for ``stop`` (set by a signal's handler), or for the server's serving loop to die
    (``server.failed``; the loop logged its traceback), then stop the server: 0, or 1 when the loop
    died. A test server whose loop died kept its main thread waiting for a signal, its region
    STOPPED, until its parent gave up on it."""
    try:
        while not stop.wait(0.1):
            if server.failed is not None:
                break
    finally:
        server.stop()
    if server.failed is None:
        return 0
    print(
        f"shm {server.name}: stopped, its serving loop having died: {server.failed!r}",
        file=sys.stderr,
        flush=True,
    )
    return 1


def serve_main(
    name: str, handler: Any, serving: Callable[[ShmServer], None] | None = None, **options: Any
) -> int:
    """A test server's main: serve ``handler`` as ``name`` with ``options`` until SIGTERM or
    SIGINT, printing ``ready`` once clients can connect (after ``serving(server)``, if given);
    returns ``serve_until_stopped``'s exit status."""
    from ._transport import ShmTransport

    stop = StopFlag()  # (threading.Event.set() in a signal handler can deadlock)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ShmTransport().serve(name, handler, **options)
    if serving is not None:
        serving(server)
    print("ready", flush=True)
    return serve_until_stopped(server, stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m foundation_shm._echo")
    p.add_argument("name")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--spin-us", type=int, default=200)
    p.add_argument("--mode", type=lambda s: int(s, 8), default=0o600)
    args = p.parse_args(argv)
    return serve_main(args.name, EchoHandler(), channels=args.channels, spin_us=args.spin_us, mode=args.mode)


if __name__ == "__main__":
    sys.exit(main())
