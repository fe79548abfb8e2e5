"""The shm server of the native clients' tests of what is sent again (docs/protocol/shm.md 10.3).

``python clients/tests/unavailable_server.py NAME`` serves until SIGTERM/SIGINT, printing
``ready`` once clients can connect. Models: those of ``foundation_shm._echo``, and
``unavailable``, whose handler runs and fails ServerUnavailable ``unavailable: call N`` (N counts
its calls since the server started): an answer with that status is the handler's, and a client
that sends such a request again runs the handler twice (the message then says ``call 2``).
"""

from __future__ import annotations

import sys

from foundation_shm._echo import EchoHandler, serve_main

from foundation_ml import InferenceRequest, Respond
from foundation_ml.errors import ServerUnavailable


class Unavailable(EchoHandler):
    """Echo's models, and ``unavailable``: the handler runs and answers SERVER_UNAVAILABLE."""

    def __init__(self) -> None:
        super().__init__()
        self.unavailable = 0

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model != "unavailable":
            return super().__call__(request, respond)
        self.unavailable += 1
        raise ServerUnavailable(f"unavailable: call {self.unavailable}", model=request.model)


def main(argv: list[str]) -> int:
    (name,) = argv
    return serve_main(name, Unavailable())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
