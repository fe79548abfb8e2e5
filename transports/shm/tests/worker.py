"""A client process for the tests: ``python worker.py NAME CLIENT_ID REQUESTS [THREADS]``.

Each request carries data unique to (client, thread, request); every response is checked against
it. Prints ``ok COUNT`` on success, or the first error.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
from foundation_shm import ShmTransport

from foundation_ml import InferenceRequest


def run(name: str, client_id: int, requests: int, threads: int) -> int:
    client = ShmTransport().connect(name, channels=threads)
    errors: list[str] = []
    done = [0]

    def one(thread: int) -> None:
        try:
            for i in range(requests):
                size = 1 + (i * 7 + thread) % 300  # shapes vary: the codec caches must not confuse them
                tag = np.array([client_id, thread, i], dtype=np.int64)
                data = np.full(size, client_id * 1_000_000 + thread * 10_000 + i, dtype=np.float64)
                rid = (client_id << 40) | (thread << 20) | (i + 1)
                resp = client.infer(InferenceRequest("echo", {"tag": tag, "data": data}, id=rid), timeout=30)
                if resp.id != rid or not np.array_equal(resp.outputs["tag"], tag):
                    raise AssertionError(f"request {rid}: got response {resp.id} {resp.outputs['tag']}")
                if not np.array_equal(resp.outputs["data"], data):
                    raise AssertionError(f"request {rid}: data differs")
                done[0] += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=one, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.close()
    print(f"error {errors[0]}" if errors else f"ok {done[0]}", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(run(args[0], int(args[1]), int(args[2]), int(args[3]) if len(args) > 3 else 1))
