"""foundation_ml: the framework-free ML runtime: request types, transports contract, errors.

Names are imported on first access (PEP 562), so that discovering the ``ml`` plugin
(``foundation_ml._plugin``) imports neither numpy nor anything else heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._datatypes import DataType
    from ._inproc import InprocTransport
    from ._transport import RequestHandler, Respond, Transport, TransportClient, TransportServer
    from ._types import InferenceRequest, InferenceResponse, ModelMetadata, TensorSpec, deadline_after
    from .errors import ErrorCode, InferenceError

_EXPORTS = {
    "DataType": "._datatypes",
    "ErrorCode": ".errors",
    "InferenceError": ".errors",
    "InferenceRequest": "._types",
    "InferenceResponse": "._types",
    "InprocTransport": "._inproc",
    "ModelMetadata": "._types",
    "RequestHandler": "._transport",
    "Respond": "._transport",
    "TensorSpec": "._types",
    "Transport": "._transport",
    "TransportClient": "._transport",
    "TransportServer": "._transport",
    "deadline_after": "._types",
}

__all__ = [
    "DataType",
    "ErrorCode",
    "InferenceError",
    "InferenceRequest",
    "InferenceResponse",
    "InprocTransport",
    "ModelMetadata",
    "RequestHandler",
    "Respond",
    "TensorSpec",
    "Transport",
    "TransportClient",
    "TransportServer",
    "deadline_after",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'foundation_ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
