"""The shm protocol's byte layout: every struct, offset, constant and name, defined once.

This module is the Python twin of ``docs/protocol/shm.md``; the spec's C structs and these
``struct.Struct`` formats must agree (``tests/test_layout.py`` checks the sizes and offsets).
All integers are little-endian.
"""

from __future__ import annotations

import enum
import re
import struct

__all__ = [
    "CHANNEL",
    "CHANNEL_SIZE",
    "CHANNELS_OFFSET",
    "DATA_ALIGN",
    "DATA_NAME_SIZE",
    "DESC",
    "DESC_SIZE",
    "MAX_CHANNELS",
    "MAX_NDIM",
    "MSG_HEADER",
    "MSG_HEADER_SIZE",
    "MSG_MAGIC",
    "NAME_SIZE",
    "PROTOCOL_VERSION",
    "REGION",
    "REGION_HEADER_SIZE",
    "REGION_MAGIC",
    "REQ_BODY",
    "RESP_BODY",
    "BODY_SIZE",
    "SERVER_NAME_MAX",
    "ChannelField",
    "Feature",
    "Location",
    "MessageFlag",
    "MessageKind",
    "RegionField",
    "RegionState",
    "align",
    "channel_sem_name",
    "control_name",
    "data_name",
    "doorbell_name",
    "lock_file",
    "mutex_name",
    "server_name",
    "validate_name",
]

MSG_MAGIC = 0xF0C01234
REGION_MAGIC = 0xF0C05E6D
PROTOCOL_VERSION = 1  # major; readers reject any other major
PROTOCOL_MINOR = 1  # 1.1: the CUDA IPC variant (spec section 15)
MAX_NDIM = 8
NAME_SIZE = 64  # tensor and model names: UTF-8, NUL-padded, at most 63 bytes
VERSION_SIZE = 16  # model version string, at most 15 bytes
DATA_ALIGN = 64  # encoders place tensor data at multiples of 64 from the area start
PAGE = 4096


class MessageKind(enum.IntEnum):
    INFER_REQUEST = 1
    RESPONSE = 2
    METADATA_REQUEST = 3
    STATS_REQUEST = 4


class MessageFlag(enum.IntFlag):
    DATA_CRC = 1  # the CRC also covers every tensor's data bytes, in descriptor order
    CUDA_IPC = 2  # request: the client takes outputs as CUDA_IPC descriptors (spec 15.2)


class Location(enum.IntEnum):
    HOST = 0  # data at data_offset in the same area
    CUDA_IPC = 1  # device memory: ipc_handle + ipc_offset on device (spec section 15)


class Feature(enum.IntFlag):
    DATA_CRC = 1  # the server verifies DATA_CRC messages
    CUDA_IPC = 2  # the server accepts CUDA_IPC descriptors and has CUDA (spec section 15)


class RegionState(enum.IntEnum):
    STARTING = 0
    READY = 1
    STOPPING = 2
    STOPPED = 3


# --- message header (32 bytes, at offset 0 of a request or response area) -----------------------
# magic, version, kind, request_id, payload_size, flags, reserved, crc32
MSG_HEADER = struct.Struct("<IHHQIIII")
MSG_HEADER_SIZE = MSG_HEADER.size  # 32
CRC_OFFSET = 28  # the CRC covers header bytes [0, 28), then the payload

# --- request body (112 bytes, right after the header) ------------------------------------------
# model, version, deadline_ns, input_count, output_count, params_size, reserved, reserved
REQ_BODY = struct.Struct("<64s16sQIIIIQ")
# --- response body (112 bytes) -----------------------------------------------------------------
# status, output_count, text_size, params_size, required_bytes, model, version, reserved
RESP_BODY = struct.Struct("<IIIIQ64s16sQ")
BODY_SIZE = 112

# --- tensor descriptor (256 bytes) -------------------------------------------------------------
# name, dtype, ndim, shape[8], data_offset, data_size, location, flags, device, reserved,
# ipc_handle[64], ipc_offset, 16 reserved bytes
DESC = struct.Struct("<64sII8QQQIIiI64sQ16x")
DESC_SIZE = DESC.size  # 256
HEADER_AND_BODY = struct.Struct("<IHHQIIII64s16sQIIIIQ")  # header + request body, one unpack
HEADER_AND_RESP = struct.Struct("<IHHQIIIIIIIIQ64s16sQ")  # header + response body, one unpack

# --- region header (256 bytes at offset 0 of the control segment) ------------------------------
REGION = struct.Struct("<IHHIIIIQQQIIIIQQIIQIIQQQ64s64x")
REGION_HEADER_SIZE = REGION.size  # 256
CHANNELS_OFFSET = 256
CHANNEL_SIZE = 256
CHANNEL = struct.Struct("<QIIQQQQ64s16xQIIQ104x")
DATA_NAME_SIZE = 64  # the channel block's data_name: at most 63 bytes, then a NUL


class RegionField(enum.IntEnum):
    """Byte offsets in the region header."""

    MAGIC = 0
    VERSION_MAJOR = 4
    VERSION_MINOR = 6
    HEADER_SIZE = 8
    FEATURES = 12
    STATE = 16
    SERVER_PID = 20
    SERVER_START = 24
    HEARTBEAT = 32
    HEARTBEAT_NS = 40
    HEARTBEAT_INTERVAL_MS = 48
    SERVER_SLEEPING = 52
    CHANNEL_COUNT = 56
    CHANNEL_SIZE = 60
    CHANNELS_OFFSET = 64
    MAX_REQUEST_BYTES = 72
    MAX_TENSORS = 80
    MAX_NDIM = 84
    CONNECT_EPOCH = 88
    MUTEX_HOLDER = 96
    SPIN_US = 100
    INSTANCE_ID = 104
    DEFAULT_CAPACITY = 112
    CONTROL_TEXT_MAX = 120  # reserved u64 (0)
    NAME = 128


class ChannelField(enum.IntEnum):
    """Byte offsets in a channel block (relative to the block's start)."""

    CLIENT_SEQ = 0
    CLIENT_SLEEPING = 8
    OWNER_PID = 12
    OWNER_START = 16
    REQUEST_CAPACITY = 24
    RESPONSE_CAPACITY = 32
    DATA_GEN = 40
    DATA_NAME = 48
    SERVER_SEQ = 128
    SERVER_BUSY = 136
    SERVED = 144


def align(n: int, to: int = DATA_ALIGN) -> int:
    return (n + to - 1) // to * to


# --- names of the objects in /dev/shm ----------------------------------------------------------
MAX_CHANNELS = 4096  # channel_count's bound: channel indices have at most 4 digits
# The longest server name whose data names "/fdn-N-d{i}-{pid}-{gen}" always fit data_name with its
# NUL (spec section 2): 5 + 32 + 2 + 4 (index < 4096) + 1 + 7 (pid <= 4194304) + 1 + 11 (gen) = 63.
SERVER_NAME_MAX = 32
_NAME_RE = re.compile(rf"[A-Za-z0-9_]{{1,{SERVER_NAME_MAX}}}")
PREFIX = "fdn-"


def server_name(address: str) -> str:
    """The server name of ``address`` (``name`` or ``shm://name``), checked (``validate_name``)."""
    if type(address) is not str:
        raise TypeError(f"an shm address is a server name (str), not {type(address).__name__} {address!r}")
    return validate_name(address.removeprefix("shm://"))


def validate_name(name: str) -> str:
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        raise ValueError(f"shm server name {name!r} must be 1-{SERVER_NAME_MAX} characters of [A-Za-z0-9_]")
    return name


def control_name(name: str) -> str:
    return f"/fdn-{name}"


def mutex_name(name: str) -> str:
    return f"/fdn-{name}-lock"


def doorbell_name(name: str) -> str:
    return f"/fdn-{name}-bell"


def channel_sem_name(name: str, index: int) -> str:
    return f"/fdn-{name}-c{index}"


def data_name(name: str, index: int, pid: int, gen: int) -> str:
    """The data segment's name, refused (never cut) when it would not fit data_name with its NUL."""
    result = f"/fdn-{name}-d{index}-{pid}-{gen}"
    if len(result) >= DATA_NAME_SIZE:  # ASCII: a server name is [A-Za-z0-9_]
        raise ValueError(
            f"shm data segment name {result!r} is {len(result)} bytes;"
            f" the channel block's data_name holds at most {DATA_NAME_SIZE - 1}"
        )
    return result


def lock_file(name: str) -> str:
    return f"/dev/shm/fdn-{name}.lock"
