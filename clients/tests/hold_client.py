"""A client that holds a gate server's serving loop, for the native clients' tests of what is sent
again (docs/protocol/shm.md 10.3): a request queued behind its own is never dispatched.

``python clients/tests/hold_client.py NAME MODEL`` calls ``MODEL`` (a ``hold...`` model of
``gate_server.py``) of the server ``NAME`` once, with no deadline, and exits once it is answered,
or with 1 when the call fails (the server gone, or seen STOPPED by the test that wrote it).
"""

from __future__ import annotations

import sys

import numpy as np
from foundation_shm import ShmTransport

from foundation_ml import InferenceRequest
from foundation_ml.errors import ServerUnavailable


def main(argv: list[str]) -> int:
    name, model = argv
    with ShmTransport().connect(name, timeout=20) as client:
        try:
            client.infer(InferenceRequest(model, {"x": np.zeros(1, np.int32)}))
        except ServerUnavailable:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
