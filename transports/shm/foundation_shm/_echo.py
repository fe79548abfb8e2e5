"""A trivial echo server for tests, benchmarks and other languages' clients.

``python -m foundation_shm._echo NAME [--channels N] [--spin-us US]`` serves until SIGTERM/SIGINT,
printing ``ready`` once clients can connect. Models: ``echo`` returns its inputs as outputs;
``fail`` raises (HANDLER_ERROR); ``busy`` raises Overloaded; ``sleep`` waits
``parameters["ms"]`` before answering; ``later`` answers from another thread. Others: MODEL_NOT_FOUND.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from foundation_ml import InferenceRequest, InferenceResponse, Respond
from foundation_ml._stop_flag import StopFlag
from foundation_ml.errors import ModelNotFound, Overloaded

__all__ = ["EchoHandler", "main"]

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


def main(argv: list[str] | None = None) -> int:
    from ._transport import ShmTransport

    p = argparse.ArgumentParser(prog="python -m foundation_shm._echo")
    p.add_argument("name")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--spin-us", type=int, default=200)
    p.add_argument("--mode", type=lambda s: int(s, 8), default=0o600)
    args = p.parse_args(argv)
    stop = StopFlag()  # (threading.Event.set() in a signal handler can deadlock)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ShmTransport().serve(
        args.name, EchoHandler(), channels=args.channels, spin_us=args.spin_us, mode=args.mode
    )
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
