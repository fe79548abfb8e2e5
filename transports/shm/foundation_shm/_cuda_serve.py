"""A torch server for the CUDA IPC tests and benchmark: ``python -m foundation_shm._cuda_serve NAME``.

``--cuda-ipc auto|on|off`` is the server's ``cuda_ipc`` option (None, True, False). Prints
``ready FEATURES`` once clients can connect and serves until SIGTERM/SIGINT (exit 1 if its serving
loop dies). Models: ``echo``
returns its inputs; ``scale`` returns every input times 2, computed on ``cuda:0`` when there is
a device (host inputs are moved there and their outputs moved back, as a GPU model server does),
else with numpy. Device inputs give device outputs (returned by IPC handle to clients that take
them).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Any

import numpy as np

from foundation_ml import InferenceRequest, InferenceResponse, Respond
from foundation_ml._stop_flag import StopFlag
from foundation_ml.errors import ModelNotFound

from ._echo import serve_until_stopped

__all__ = ["DeviceHandler", "main"]

MODELS = ("echo", "scale")


class DeviceHandler:
    """The request handler of this server (see the module docstring)."""

    device_tensors = True  # takes torch CUDA tensors as inputs: "auto" servers accept CUDA IPC

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else None
        self.count = 0

    def _scale(self, value: Any) -> Any:
        torch = self.torch
        if isinstance(value, torch.Tensor):
            return value * 2
        if self.device is None:
            return np.asarray(value) * 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only view on the request area
            host = torch.from_numpy(np.asarray(value))
        return (host.to(self.device) * 2).cpu().numpy()

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        self.count += 1
        if request.model == "echo":
            respond(InferenceResponse(request.id, "echo", dict(request.inputs)))
        elif request.model == "scale":
            outputs = {n: self._scale(v) for n, v in request.inputs.items()}
            respond(InferenceResponse(request.id, "scale", outputs))
        else:
            raise ModelNotFound(f"model {request.model!r} is not served (served: {', '.join(MODELS)})")

    def metadata(self, model: str) -> dict[str, Any]:
        if model not in MODELS:
            raise ModelNotFound(f"model {model!r} is not served", model=model)
        return {"name": model, "versions": ["1"], "platform": "torch", "inputs": [], "outputs": []}

    def stats(self) -> dict[str, Any]:
        return {"requests": self.count}


def main(argv: list[str] | None = None) -> int:
    from ._transport import ShmTransport

    p = argparse.ArgumentParser(prog="python -m foundation_shm._cuda_serve")
    p.add_argument("name")
    p.add_argument("--cuda-ipc", choices=("auto", "on", "off"), default="on")
    args = p.parse_args(argv)
    stop = StopFlag()  # (threading.Event.set() in a signal handler can deadlock)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mode = {"auto": None, "on": True, "off": False}[args.cuda_ipc]
    handler = DeviceHandler()  # imports torch: "auto" then sees it loaded
    server = ShmTransport().serve(args.name, handler, channels=8, cuda_ipc=mode)
    print(f"ready {server._cuda.feature}", flush=True)
    return serve_until_stopped(server, stop)


if __name__ == "__main__":
    sys.exit(main())
