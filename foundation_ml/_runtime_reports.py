"""What a runtime reports: a model's metadata document and the stats (``MLRuntime.metadata``, ``stats``).

Each is taken from one snapshot of the registry, so a version loaded or unloaded meanwhile is in
it whole or not at all.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._registry import metadata_of
from ._runtime_checks import check_str
from ._server_info import in_flight_of, server_stats
from ._serving import ServedModel

if TYPE_CHECKING:
    from ._runtime import MLRuntime

__all__ = ["metadata", "stats"]


def metadata(runtime: MLRuntime, model: str) -> dict[str, Any]:
    """``runtime.metadata`` (see there)."""
    check_str(model, "metadata")
    state = runtime.registry.snapshot()  # one moment: a version unloaded meanwhile is in it or not
    doc = metadata_of(state, model).as_dict()
    doc["batching"] = _batching(state[1][model])
    doc["signatures"] = {v: _signature_doc(served) for v, served in state[0][model].items()}
    return doc


def stats(runtime: MLRuntime) -> dict[str, Any]:
    """``runtime.stats`` (see there)."""
    all_versions, latest = runtime.registry.snapshot()
    models: dict[str, Any] = {}
    for name in sorted(all_versions):
        docs = {
            v: {"version": v, **served.metrics.snapshot(), "batching": _batching(served)}
            for v, served in all_versions[name].items()
        }
        models[name] = {**docs[latest[name].version], "versions": docs}
    return {
        "server": {
            "name": runtime.name,
            "transports": {t: server_stats(s) for t, s in runtime.servers},
            # taken or waiting to be, not answered: a model call stuck holds them here, unseen
            # by the models' counts, which move only as requests are answered
            "in_flight": in_flight_of(runtime.servers),
            "uptime_s": round(time.time() - runtime.started, 3),
            "accepting": runtime._accepting,
            "rejected": _rejections(runtime),
        },
        "models": models,
    }


def _rejections(runtime: MLRuntime) -> dict[str, int]:
    with runtime._rejected_lock:
        return dict(runtime._rejected)


def _batching(served: ServedModel) -> dict[str, Any]:
    b = served.batcher
    if b is None:
        return {"enabled": False, "batchable": served.model.batchable}
    return {"enabled": True, "max_batch_size": b.max_batch_size, "max_wait_us": b.max_wait_us}


def _signature_doc(served: ServedModel) -> dict[str, Any]:
    m = served.model
    return {"inputs": [s.as_dict() for s in m.inputs], "outputs": [s.as_dict() for s in m.outputs]}
