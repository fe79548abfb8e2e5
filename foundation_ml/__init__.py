"""foundation_ml: the framework-free ML runtime: request types, transports contract, errors."""

from ._datatypes import DataType
from ._inproc import InprocTransport
from ._transport import RequestHandler, Respond, Transport, TransportClient, TransportServer
from ._types import InferenceRequest, InferenceResponse, ModelMetadata, TensorSpec, deadline_after
from .errors import ErrorCode, InferenceError

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
