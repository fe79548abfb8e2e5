"""Typed inference errors, one class per wire error code of the protocol.

A transport carries the ``code`` and ``message`` of an error across the process boundary; the
client raises the matching class, so ``except ModelNotFound`` works the same over every transport.
"""

from __future__ import annotations

__all__ = [
    "BadChecksum",
    "BadMagic",
    "BadVersion",
    "CudaUnavailable",
    "DeadlineExceeded",
    "ErrorCode",
    "HandlerError",
    "InferenceError",
    "InternalError",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "Overloaded",
    "PackageError",
    "ServerUnavailable",
    "ShuttingDown",
    "TooLarge",
    "error_for_code",
]

import enum
from typing import Self

from foundation_core.errors import FoundationError


class ErrorCode(enum.IntEnum):
    """Wire status codes (``uint32`` in the protocol). 0 is success."""

    OK = 0
    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_CHECKSUM = 3
    MODEL_NOT_FOUND = 4
    INVALID_INPUT = 5  # bad name, dtype, shape or size; the message states the expected signature
    TOO_LARGE = 6
    DEADLINE_EXCEEDED = 7
    OVERLOADED = 8
    HANDLER_ERROR = 9
    SERVER_UNAVAILABLE = 10
    SHUTTING_DOWN = 11
    CUDA_UNAVAILABLE = 12
    INTERNAL = 13


class InferenceError(Exception):
    """Base of every error an inference call raises; ``code`` is its wire status, ``message``
    the message as given (``str()`` adds ``model 'NAME': `` before it): a transport carries
    ``code``, ``message``, ``model`` and ``request_id``, and rebuilds with ``error_for_code``."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, model: str = "", request_id: int = 0) -> None:
        self.message = message
        self.model = model
        self.request_id = request_id
        where = f"model {model!r}: " if model else ""
        super().__init__(f"{where}{message}")

    def with_call(self, model: str, request_id: int = 0) -> Self:
        """Name the call this error fails, where it does not yet: ``model`` fills an empty
        ``model`` (``str()`` then starts with ``model 'NAME': ``), ``request_id`` a 0
        ``request_id``; what it names already is kept. Returns the error (as ``with_traceback``
        does). A transport's client calls it where a call catches what it raises, for the errors
        made where the call was not known (the client closed, the server gone, no channel)."""
        if model and type(model) is str and not self.model:  # (a caller's request may hold anything)
            self.model = model
            self.args = (f"model {model!r}: {self.message}",)
        if request_id and type(request_id) is int and not self.request_id:
            self.request_id = request_id
        return self


class BadMagic(InferenceError):
    code = ErrorCode.BAD_MAGIC


class BadVersion(InferenceError):
    code = ErrorCode.BAD_VERSION


class BadChecksum(InferenceError):
    code = ErrorCode.BAD_CHECKSUM


class ModelNotFound(InferenceError, LookupError):
    code = ErrorCode.MODEL_NOT_FOUND


class InvalidInput(InferenceError, ValueError):
    code = ErrorCode.INVALID_INPUT


class TooLarge(InferenceError):
    code = ErrorCode.TOO_LARGE


class DeadlineExceeded(InferenceError, TimeoutError):
    code = ErrorCode.DEADLINE_EXCEEDED


class Overloaded(InferenceError):
    code = ErrorCode.OVERLOADED


class HandlerError(InferenceError):
    """The model (or handler) raised; ``message`` carries its exception text."""

    code = ErrorCode.HANDLER_ERROR


class ServerUnavailable(InferenceError, ConnectionError):
    """No live server under that name, or it died while the request was in flight."""

    code = ErrorCode.SERVER_UNAVAILABLE


class ShuttingDown(InferenceError):
    code = ErrorCode.SHUTTING_DOWN


class CudaUnavailable(InferenceError):
    code = ErrorCode.CUDA_UNAVAILABLE


class InternalError(InferenceError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[int, type[InferenceError]] = {
    cls.code: cls
    for cls in (
        BadMagic,
        BadVersion,
        BadChecksum,
        ModelNotFound,
        InvalidInput,
        TooLarge,
        DeadlineExceeded,
        Overloaded,
        HandlerError,
        ServerUnavailable,
        ShuttingDown,
        CudaUnavailable,
        InternalError,
    )
}


def error_for_code(code: int, message: str, *, model: str = "", request_id: int = 0) -> InferenceError:
    """The typed error for a wire status code (unknown codes become ``InternalError``)."""
    cls = _BY_CODE.get(code, InternalError)
    if cls is InternalError and code not in _BY_CODE:
        message = f"unknown error code {code}: {message}"
    return cls(message, model=model, request_id=request_id)


# --- load-time errors (raised at start-up, never sent over the wire) ---------------------------


class ModelLoadError(FoundationError):
    """A model could not be loaded: bad spec, unreadable file, failed factory, signature mismatch.

    ``model`` is the model's name, ``file`` the file at fault (empty when none is).
    """

    def __init__(self, message: str, *, model: str = "", file: str = "") -> None:
        self.message = message
        self.model = model
        self.file = file
        where = f"model {model!r}: " if model else ""
        at = f"{file}: " if file and file not in message else ""
        super().__init__(f"{where}{at}{message}")


class PackageError(ModelLoadError):
    """A model package is invalid: missing file, checksum mismatch, bad or inconsistent manifest."""
