"""The shm server of the native clients' max_response_bytes tests (docs/protocol/shm.md 10.1, 13).

``python clients/tests/sized_server.py NAME`` serves until SIGTERM/SIGINT, printing ``ready``
once clients can connect, with a ``default_capacity`` of 64 pages (256 KiB). Models: those of
``foundation_shm._echo``, and ``sized``, which answers ``parameters["n"]`` zero bytes (output
``y``): a response that does not fit the response area is answered TOO_LARGE with the bytes it
needs, as any server does. ``tib`` is ``sized`` whose TOO_LARGE answer asks for 1 TiB instead,
as a hostile or broken server may (the server of transports/shm/tests/test_transport.py's
``test_a_server_asking_a_tib_for_its_response_gets_too_large_not_a_tib``, patched the same way).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from foundation_shm import _answers
from foundation_shm._echo import EchoHandler, serve_main

from foundation_ml import InferenceRequest, InferenceResponse, Respond

TIB = 1 << 40
DEFAULT_CAPACITY = 64 * 4096


class Sized(EchoHandler):
    """Echo's models, and ``sized`` and ``tib``: ``parameters["n"]`` zero bytes as output ``y``."""

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model not in ("sized", "tib"):
            return super().__call__(request, respond)
        y = np.zeros(int(request.parameters["n"]), np.uint8)
        respond(InferenceResponse(request.id, request.model, {"y": y}))


def _asking_a_tib() -> None:
    """Make a TOO_LARGE answer to model ``tib`` ask for 1 TiB (other models: what they need)."""
    write_error = _answers.Answers.write_error

    def tib(self: Any, ch: Any, r: Any, exc: Any, required: int = 0) -> None:
        write_error(self, ch, r, exc, TIB if required and r.model == "tib" else required)

    _answers.Answers.write_error = tib  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    (name,) = argv
    _asking_a_tib()
    return serve_main(name, Sized(), channels=8, default_capacity=DEFAULT_CAPACITY)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
