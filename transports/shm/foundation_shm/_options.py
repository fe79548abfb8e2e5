"""The shm transport's options: what ``serve`` and ``connect`` accept, their defaults and checks,
and the ``shm`` config section that sets them from config files, the environment or ``--set``.

``ServeOptions`` and ``ConnectOptions`` are the one place the defaults and the valid ranges are
written. A bad option is a ``ValueError`` (or ``TypeError`` for an unknown name) raised before
the server or the client takes any resource, naming the option and what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from foundation_ml._types import seconds_of

from . import _layout as L

__all__ = [
    "CUDA_CACHE_BYTES",
    "MAX_RESPONSE_BYTES",
    "ConnectOptions",
    "ServeOptions",
    "ShmSettings",
    "options",
]

_O = TypeVar("_O", bound=attrs.AttrsInstance)
_Check = Callable[[Any, "attrs.Attribute[Any]", Any], None]

FALLBACKS = ("error", "host")
_MAX_SECONDS = 1e9  # ~31 years: beyond it a deadline in ns overflows the protocol's uint64


def _ints(lo: int, hi: int, unit: str = "") -> _Check:
    def check(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or not lo <= value <= hi:  # bool is an int, not a count
            raise ValueError(f"{attr.name} must be an integer {lo:_}..{hi:_}{unit}, not {value!r}")

    return check


def _optional_ints(lo: int, hi: int, unit: str = "") -> _Check:
    ints = _ints(lo, hi, unit)

    def check(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            ints(inst, attr, value)

    return check


def _seconds(*, optional: bool, positive: bool) -> _Check:
    def check(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        seconds = seconds_of(value)
        ok = seconds is not None and (seconds > 0 if positive else seconds >= 0)
        # NaN, inf: no deadline to compute; the same bound as a call's timeout (ShmClient._deadline)
        if seconds is None or not ok or not seconds <= _MAX_SECONDS:
            what = "a number of seconds" + (" > 0" if positive else " >= 0") + " and at most 1e9"
            raise ValueError(f"{attr.name} must be {what}{' or None' if optional else ''}, not {value!r}")

    return check


def _as_seconds(value: Any) -> Any:
    """A number of seconds as Python's (numpy's become a float: the waits they bound, such as
    ``posix_ipc``'s, take Python's numbers only); anything else as it is, for ``_seconds`` to
    refuse by name."""
    seconds = seconds_of(value)
    return value if seconds is None else seconds


def _bool(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bool:
        raise ValueError(f"{attr.name} must be true or false, not {value!r}")


def _tristate(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and type(value) is not bool:
        raise ValueError(f"{attr.name} must be None, True or False, not {value!r}")


def _mode(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """Permission bits for the segments, semaphores and lock file: the owner must read and write,
    and other users get nothing (spec section 13: nothing is ever world-accessible)."""
    if type(value) is not int or value & ~0o770 or value & 0o600 != 0o600:
        shown = oct(value) if type(value) is int else repr(value)
        raise ValueError(
            f"{attr.name} must be permission bits within 0o770 that let the owner read and write and "
            f"give other users nothing (0o600, the default; 0o660 lets the group in), not {shown}"
        )


def _fallback(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value not in FALLBACKS:
        raise ValueError(f"{attr.name} must be one of {', '.join(FALLBACKS)}, not {value!r}")


_BYTES = 1 << 48  # far beyond any machine's shared memory; the protocol's fields are uint64
# Bytes of clients' CUDA allocations a server keeps open between requests, all clients together:
# an open mapping keeps an allocation its client freed allocated (docs/cuda_ipc.md, "Server").
CUDA_CACHE_BYTES = 1 << 30
# The largest response (a TOO_LARGE answer's required_bytes) a client grows a response area
# for: 4 GiB, the server's default max_request_bytes, so an echo of the largest request fits.
MAX_RESPONSE_BYTES = 1 << 32


@attrs.frozen(kw_only=True)
class ServeOptions:
    """``ShmTransport.serve`` options (transports/shm/README.md, "Options", has what each one does)."""

    channels: int = attrs.field(default=32, validator=_ints(1, L.MAX_CHANNELS))
    spin_us: int = attrs.field(default=200, validator=_ints(0, 1_000_000, " µs"))
    heartbeat_ms: int = attrs.field(default=100, validator=_ints(1, 60_000, " ms"))
    mode: int = attrs.field(default=0o600, validator=_mode)
    max_request_bytes: int = attrs.field(default=1 << 32, validator=_ints(1, _BYTES))
    max_tensors: int = attrs.field(default=64, validator=_ints(1, 65_535))
    default_capacity: int = attrs.field(default=1 << 20, validator=_ints(L.PAGE, _BYTES))
    data_crc: bool = attrs.field(default=False, validator=_bool)
    cuda_ipc: bool | None = attrs.field(default=None, validator=_tristate)
    cuda_cache_bytes: int = attrs.field(default=CUDA_CACHE_BYTES, validator=_ints(0, _BYTES, " bytes"))


@attrs.frozen(kw_only=True)
class ConnectOptions:
    """``ShmTransport.connect`` options (transports/shm/README.md, "Options", has what each one does)."""

    channels: int = attrs.field(default=4, validator=_ints(1, L.MAX_CHANNELS))
    spin_us: int = attrs.field(default=250, validator=_ints(0, 1_000_000, " µs"))
    capacity: int | None = attrs.field(default=None, validator=_optional_ints(L.PAGE, _BYTES))
    copy_outputs: bool = attrs.field(default=False, validator=_bool)
    timeout: float | None = attrs.field(
        default=None, converter=_as_seconds, validator=_seconds(optional=True, positive=True)
    )
    connect_timeout: float = attrs.field(
        default=2.0, converter=_as_seconds, validator=_seconds(optional=False, positive=False)
    )
    data_crc: bool = attrs.field(default=False, validator=_bool)
    cuda_ipc: bool | None = attrs.field(default=None, validator=_tristate)
    cuda_fallback: str = attrs.field(default="error", validator=_fallback)
    # the most a server's TOO_LARGE answer (its required_bytes) may make this client grow a
    # response area to: else a server could have it reserve all of /dev/shm (spec 11, 13)
    max_response_bytes: int = attrs.field(
        default=MAX_RESPONSE_BYTES, validator=_ints(L.PAGE, _BYTES, " bytes")
    )

    def __attrs_post_init__(self) -> None:
        # the response area starts at capacity: one over the limit would be a limit that is not
        # one (refused rather than either silently winning)
        if self.capacity is not None and self.capacity > self.max_response_bytes:
            raise ValueError(
                f"capacity ({self.capacity:_} bytes) exceeds max_response_bytes "
                f"({self.max_response_bytes:_} bytes): the response area starts at capacity; "
                "lower capacity or raise max_response_bytes"
            )


def options(cls: type[_O], given: Mapping[str, Any], what: str) -> _O:
    """``cls(**given)``, with an unknown option named as such (``what``: "serve", "connect")."""
    names = [f.name for f in attrs.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"unknown shm {what} option(s) {', '.join(unknown)} (options: {', '.join(names)})")
    try:
        return cls(**given)
    except ValueError as exc:
        raise ValueError(f"shm {what} option {exc}") from None


def _like(cls: type[Any], name: str) -> Any:
    """A settings field with the default and the check of option ``name`` of ``cls``."""
    f = attrs.fields_dict(cls)[name]
    return attrs.field(default=f.default, validator=f.validator)


def _octal(_: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    try:
        bits = int(value, 8)
    except (TypeError, ValueError):
        raise ValueError(f'{attr.name} must be octal permission bits such as "0660", not {value!r}') from None
    _mode(None, attr, bits)


@attrs.frozen(kw_only=True)
class ShmSettings:
    """The ``shm`` config section: defaults for what ``foundation serve`` and the runtime serve
    with, and for clients made through a configured hub (``InferenceClient``, ``foundation
    infer``). Options passed in code win. Client fields start with ``client_``; ``mode`` is octal
    text (``"0660"``)."""

    channels: int = _like(ServeOptions, "channels")
    spin_us: int = _like(ServeOptions, "spin_us")
    heartbeat_ms: int = _like(ServeOptions, "heartbeat_ms")
    mode: str = attrs.field(default=f"0{attrs.fields(ServeOptions).mode.default:o}", validator=_octal)
    max_request_bytes: int = _like(ServeOptions, "max_request_bytes")
    max_tensors: int = _like(ServeOptions, "max_tensors")
    default_capacity: int = _like(ServeOptions, "default_capacity")
    data_crc: bool = _like(ServeOptions, "data_crc")
    cuda_cache_bytes: int = _like(ServeOptions, "cuda_cache_bytes")
    client_channels: int = _like(ConnectOptions, "channels")
    client_spin_us: int = _like(ConnectOptions, "spin_us")
    client_timeout: float | None = _like(ConnectOptions, "timeout")

    def serve_options(self) -> dict[str, Any]:
        """The server's options (``ShmTransport.serve``)."""
        return {
            "channels": self.channels,
            "spin_us": self.spin_us,
            "heartbeat_ms": self.heartbeat_ms,
            "mode": int(self.mode, 8),
            "max_request_bytes": self.max_request_bytes,
            "max_tensors": self.max_tensors,
            "default_capacity": self.default_capacity,
            "data_crc": self.data_crc,
            "cuda_cache_bytes": self.cuda_cache_bytes,
        }

    def connect_options(self) -> dict[str, Any]:
        """A client's options (``ShmTransport.connect``)."""
        return {
            "channels": self.client_channels,
            "spin_us": self.client_spin_us,
            "timeout": self.client_timeout,
        }
