"""An shm server answering what no server may, for the native clients' tests (spec 9, 15.2).

``python clients/tests/broken_server.py NAME`` serves until SIGTERM/SIGINT, printing ``ready``
once clients can connect. Models: those of ``foundation_shm._echo``; ``cuda_out``, answered
output ``y`` (FP32, shape ``[2]``) as a CUDA_IPC descriptor though the request did not set
``FDN_FLAG_CUDA_IPC`` (section 15.2: a client fails the call INTERNAL rather than return an output
without its bytes); ``unknown_status``, answered status 99, which this version does not define
(section 9: INTERNAL, naming the code); ``unavailable``, whose handler answers
SERVER_UNAVAILABLE as a handler whose own server is gone may (section 9: passed on as it is); and
``timeout``, whose handler answers DEADLINE_EXCEEDED at once, as one whose own call timed out
may, the request's deadline still ahead (a client passes it on as it is, not as its own deadline).
The broken answers are written where the server encodes a response, as ``sized_server.py``
patches its TOO_LARGE answers.
"""

from __future__ import annotations

import sys
from typing import Any

from foundation_shm import _answers
from foundation_shm._codec import write_response
from foundation_shm._cuda_desc import CudaIpcRef, write_mixed_response
from foundation_shm._echo import EchoHandler, serve_main

from foundation_ml import DataType, InferenceRequest, InferenceResponse, Respond
from foundation_ml.errors import DeadlineExceeded, ServerUnavailable

# model: (status, text) of its answer; cuda_out's is a success with the CUDA_IPC output
BROKEN = {"cuda_out": (0, ""), "unknown_status": (99, "a status of a later version")}
_HANDLE = bytes(range(1, 65))  # any handle but all zeros passes the checks of 15.3


class Broken(EchoHandler):
    """Echo's models, ``unavailable``, ``timeout``, and the broken ones, which the patched
    encoder answers."""

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model == "unavailable":
            respond(ServerUnavailable("a server this handler calls is gone", model=request.model))
        elif request.model == "timeout":
            respond(
                DeadlineExceeded("a server this handler calls did not answer in time", model=request.model)
            )
        elif request.model in BROKEN:
            respond(InferenceResponse(request.id, request.model, {}))
        else:
            super().__call__(request, respond)


def _answering_what_no_server_may() -> None:
    """Make the answers to the models of ``BROKEN`` what their names say (others: as they are)."""
    write = _answers.Answers._write

    def broken(self: Any, ch: Any, r: Any, value: Any) -> None:
        if r.model not in BROKEN:
            return write(self, ch, r, value)
        ch.wkey = None  # never the repeated-response lane: each answer is written whole
        if r.model == "cuda_out":
            y = CudaIpcRef("y", DataType.FP32, (2,), 0, _HANDLE, 0, 8)
            write_mixed_response(ch.resp, tensors=[y], request_id=r.request_id, model=r.model, version="")
        else:
            status, text = BROKEN[r.model]
            write_response(ch.resp, request_id=r.request_id, status=status, model=r.model, text=text.encode())
        return None

    _answers.Answers._write = broken  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    (name,) = argv
    _answering_what_no_server_may()
    return serve_main(name, Broken(), channels=4)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
