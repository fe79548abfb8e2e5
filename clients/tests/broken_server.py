"""An shm server answering what no server may, for the native clients' tests (docs/protocol/shm.md 9, 15.2).

``python clients/tests/broken_server.py NAME`` serves until SIGTERM/SIGINT, printing ``ready``
once clients can connect. Models: those of ``foundation_shm._echo``, and three a broken server
answers: ``cuda_out`` answers output ``y`` (FP32, shape ``[2]``) as a CUDA_IPC descriptor to a
request that did not set ``FDN_FLAG_CUDA_IPC`` (a client fails the call INTERNAL, section 15.2,
rather than return an output without its bytes), ``unavailable`` answers status 10,
SERVER_UNAVAILABLE, which only a client reports, and ``unknown_status`` status 99, which this
version does not define (section 9: a client fails either call INTERNAL, naming the status). The
answers are written where the server encodes a response, as ``sized_server.py`` patches its
TOO_LARGE answers.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from foundation_shm import ShmTransport, _answers
from foundation_shm._codec import write_response
from foundation_shm._cuda_desc import CudaIpcRef, write_mixed_response
from foundation_shm._echo import EchoHandler, serve_until_stopped

from foundation_ml import DataType, InferenceRequest, InferenceResponse, Respond
from foundation_ml._stop_flag import StopFlag
from foundation_ml.errors import ErrorCode

# model: (status, text) of its answer; cuda_out's is a success with the CUDA_IPC output
BROKEN = {
    "cuda_out": (0, ""),
    "unavailable": (int(ErrorCode.SERVER_UNAVAILABLE), "this server says it is unavailable"),
    "unknown_status": (99, "a status of a later version"),
}
_HANDLE = bytes(range(1, 65))  # any handle but all zeros passes the checks of 15.3


class Broken(EchoHandler):
    """Echo's models, and the broken ones, which the patched encoder answers (no outputs here)."""

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model not in BROKEN:
            return super().__call__(request, respond)
        respond(InferenceResponse(request.id, request.model, {}))


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
    stop = StopFlag()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ShmTransport().serve(name, Broken(), channels=4)
    print("ready", flush=True)
    return serve_until_stopped(server, stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
