"""foundation_ml: the framework-free ML runtime: runtime, model registry, client, types, errors.

``MLRuntime`` serves models (loaded through backend plugins) on any registered transport;
``InferenceClient`` calls them from another process.

Names are imported on first access (PEP 562), so that discovering the ``ml`` plugin
(``foundation_ml._plugin``) imports neither numpy nor anything else heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation_core import lazy_exports

if TYPE_CHECKING:
    from ._backend import FunctionModel, LoadedModel, ModelBackend
    from ._client import InferenceClient
    from ._datatypes import DataType
    from ._inproc import InprocTransport
    from ._package import open_package, write_package
    from ._runtime import MLRuntime
    from ._signature import example_inputs, parse_signature, parse_tensor_spec
    from ._transport import (
        RequestHandler,
        Respond,
        Transport,
        TransportClient,
        TransportServer,
        call_abandoned,
        configured_options,
    )
    from ._types import (
        ClientCounters,
        InferenceRequest,
        InferenceResponse,
        ModelMetadata,
        TensorSpec,
        call_deadline,
        deadline_after,
    )
    from .errors import ErrorCode, InferenceError, ModelLoadError, PackageError

_EXPORTS = {
    "ClientCounters": "._types",
    "DataType": "._datatypes",
    "ErrorCode": ".errors",
    "FunctionModel": "._backend",
    "InferenceClient": "._client",
    "InferenceError": ".errors",
    "InferenceRequest": "._types",
    "InferenceResponse": "._types",
    "InprocTransport": "._inproc",
    "LoadedModel": "._backend",
    "MLRuntime": "._runtime",
    "ModelBackend": "._backend",
    "ModelLoadError": ".errors",
    "ModelMetadata": "._types",
    "PackageError": ".errors",
    "RequestHandler": "._transport",
    "Respond": "._transport",
    "TensorSpec": "._types",
    "Transport": "._transport",
    "TransportClient": "._transport",
    "TransportServer": "._transport",
    "call_abandoned": "._transport",
    "call_deadline": "._types",
    "configured_options": "._transport",
    "deadline_after": "._types",
    "example_inputs": "._signature",
    "open_package": "._package",
    "parse_signature": "._signature",
    "parse_tensor_spec": "._signature",
    "write_package": "._package",
}

__all__ = [
    "ClientCounters",
    "DataType",
    "ErrorCode",
    "FunctionModel",
    "InferenceClient",
    "InferenceError",
    "InferenceRequest",
    "InferenceResponse",
    "InprocTransport",
    "LoadedModel",
    "MLRuntime",
    "ModelBackend",
    "ModelLoadError",
    "ModelMetadata",
    "PackageError",
    "RequestHandler",
    "Respond",
    "TensorSpec",
    "Transport",
    "TransportClient",
    "TransportServer",
    "call_abandoned",
    "call_deadline",
    "configured_options",
    "deadline_after",
    "example_inputs",
    "open_package",
    "parse_signature",
    "parse_tensor_spec",
    "write_package",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
