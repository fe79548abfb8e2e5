"""The shm server of the native clients' crashed-client tests (docs/protocol/shm.md 10.1, 10.4).

``python clients/tests/gate_server.py NAME DIR [--channels N]`` serves until SIGTERM/SIGINT,
printing ``ready`` once clients can connect. Models: those of ``foundation_shm._echo``, and any
model named ``gate...``, which holds its request at a gate: it creates ``DIR/MODEL.with-server``
once it has the request (so a test knows, with no sleep, that the request is with the server),
waits until ``DIR/MODEL.release`` exists, answers with the request's inputs (echo) from a thread
of its own (the serving loop goes on serving other channels meanwhile), then creates
``DIR/MODEL.answered``. A model named ``hold...`` does the same in the serving loop itself, so
that a request on another channel waits behind it, never dispatched (``server_busy`` 0), until
its gate opens (``hold_client.py`` sends one). A model named ``count...`` answers as echo and
appends a byte to ``DIR/MODEL.runs`` each time its handler runs. STATS answers the echo count
and the transport's own stats (``channels``, ``busy``, ``reclaimed``: what its heartbeat
reclaimed, spec 10.4).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from foundation_shm._echo import EchoHandler, serve_main
from foundation_shm._server import ShmServer

from foundation_ml import InferenceRequest, InferenceResponse, Respond

GATE_LIMIT_S = 600.0  # a gate nobody opens is opened after this, so the server can stop


class Gated(EchoHandler):
    """Echo's models, and ``gate*`` and ``hold*`` models held until their release file exists."""

    def __init__(self, gates: Path) -> None:
        super().__init__()
        self.gates = gates
        self.server: ShmServer | None = None

    def __call__(self, request: InferenceRequest, respond: Respond) -> None:
        if request.model.startswith("count"):
            with (self.gates / f"{request.model}.runs").open("ab") as runs:
                runs.write(b".")
            self.count += 1
            return respond(InferenceResponse(request.id, request.model, request.inputs))
        if not request.model.startswith(("gate", "hold")):
            return super().__call__(request, respond)
        self.count += 1
        inputs = {k: v.copy() for k, v in request.inputs.items()}  # the area is the client's
        answer = InferenceResponse(request.id, request.model, inputs)
        if request.model.startswith("hold"):
            return self._hold(request.model, answer, respond)
        threading.Thread(target=self._hold, args=(request.model, answer, respond), daemon=True).start()

    def _hold(self, model: str, answer: InferenceResponse, respond: Respond) -> None:
        _touch(self.gates / f"{model}.with-server")
        release, end = self.gates / f"{model}.release", time.monotonic() + GATE_LIMIT_S
        while not release.exists() and time.monotonic() < end:
            time.sleep(0.005)
        respond(answer)  # to a reclaimed channel: dropped by the server, touching nothing
        _touch(self.gates / f"{model}.answered")

    def serving(self, server: ShmServer) -> None:
        """The server this handler answers for, whose transport stats ``stats()`` adds."""
        self.server = server

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "transport": self.server.stats() if self.server else {}}


def _touch(path: Path) -> None:
    """Create ``path`` whole (written aside, then renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"")
    tmp.rename(path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gate_server.py")
    p.add_argument("name")
    p.add_argument("gates", type=Path)
    p.add_argument("--channels", type=int, default=1)
    args = p.parse_args(argv)
    handler = Gated(args.gates)
    return serve_main(args.name, handler, handler.serving, channels=args.channels)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
