"""The C hot path (``foundation_shm._hot``) against the pure-Python one it replaces.

Both implementations must write and accept the same bytes: ``seal`` the same header as
``write_header``'s Python path, ``repeat`` the same decisions as ``_Reader._hit``, ``fill`` the same
copies as ``_py_fill``; the sync primitives wait, publish and scan as ``_sync`` and ``_server``
expect; and a server on one path serves a client on the other, in real processes. Tests that need
the C module in this process skip under ``FDN_SHM_PURE=1``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from foundation_shm import ShmTransport, _accel, _codec, _readers, _sync
from foundation_shm._accel import hot
from foundation_shm._codec import (
    _py_fill,
    layout,
    request_payload_size,
    response_payload_size,
    views,
    write_request,
    write_response,
)
from foundation_shm._decoders import decode_request, decode_response
from foundation_shm._echo import EchoHandler
from foundation_shm._layout import CRC_OFFSET, MSG_HEADER, MSG_HEADER_SIZE, MSG_MAGIC, PROTOCOL_VERSION
from foundation_shm._objects import objects_of, remove_objects
from foundation_shm._readers import RequestReader, ResponseReader
from foundation_shm._server import ShmServer
from foundation_shm._server_channel import _Responder
from hypothesis import example, given, settings
from hypothesis import strategies as st

from foundation_ml import DataType, InferenceRequest, InferenceResponse
from foundation_ml.errors import InferenceError

PURE = os.environ.get("FDN_SHM_PURE", "").lower() in ("1", "true", "yes")
needs_c = pytest.mark.skipif(hot is None, reason="the C hot path is off here (FDN_SHM_PURE=1 or not built)")
try:  # importable even where _accel does not use it: the cross-process tests choose per process
    importlib.import_module("foundation_shm._hot")
    BUILT = True
except ImportError:
    BUILT = False
needs_build = pytest.mark.skipif(not BUILT, reason="foundation_shm._hot was not built")

_DATA_CRC = 1
_DTYPES = [d for d in DataType if d not in (DataType.BF16, DataType.BYTES)]


def _env(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FDN_SHM_PURE"}
    if pure:
        env["FDN_SHM_PURE"] = "1"
    return env


@contextlib.contextmanager
def _pure_codec() -> Iterator[None]:
    """The codec and the readers as they run without the C module (``write_header``, ``_hit``)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_codec, "hot", None)
        m.setattr(_readers, "hot", None)
        yield


# --- 1. which implementation runs ---------------------------------------------------------------


def test_the_dev_build_runs_the_c_hot_path_unless_pure_is_asked_for() -> None:
    assert _accel.implementation() == ("python" if PURE else "c")
    assert (_accel.hot is None) == PURE


@needs_c
def test_the_hot_entry_points_are_wired_to_the_c_module() -> None:
    assert _codec.fill is _codec._hot_fill  # hot.fill, then the numpy copy for what it declines
    assert _sync.fence is hot.fence


@pytest.mark.parametrize(("pure", "want"), [(True, "python"), (False, "c")])
def test_a_fresh_process_picks_its_implementation_from_the_environment(pure: bool, want: str) -> None:
    if not pure and not BUILT:
        pytest.skip("foundation_shm._hot was not built")
    code = "from foundation_shm import _accel, _codec; print(_accel.implementation(), _codec.fill.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(pure), capture_output=True, text=True, timeout=60, check=True
    )
    impl, fill_module = out.stdout.split()
    assert impl == want
    assert fill_module == ("_py_fill" if pure else "_hot_fill")


# --- 2a. seal == MSG_HEADER.pack_into + _seal ---------------------------------------------------


@needs_c
@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=700),
    cut=st.integers(0, 700),
    slack=st.integers(0, 80),
    kind=st.integers(0, 0xFFFF),
    rid=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 2**32 - 1).map(lambda f: f & ~_DATA_CRC),
    fill_byte=st.integers(0, 255),
    over=st.integers(1, 200),
)
def test_seal_writes_the_header_the_python_path_writes(
    payload: bytes, cut: int, slack: int, kind: int, rid: int, flags: int, fill_byte: int, over: int
) -> None:
    size = min(cut, len(payload))  # the declared payload may be shorter than what lies there
    c = bytearray([fill_byte]) * (MSG_HEADER_SIZE + len(payload) + slack)
    c[MSG_HEADER_SIZE : MSG_HEADER_SIZE + len(payload)] = payload
    p = bytearray(c)
    hot.seal(memoryview(c), kind, rid, size, flags)
    MSG_HEADER.pack_into(p, 0, MSG_MAGIC, PROTOCOL_VERSION, kind, rid, size, flags, 0, 0)
    _codec._seal(p, size, flags, ())
    assert c[:MSG_HEADER_SIZE] == p[:MSG_HEADER_SIZE]
    assert c == p  # and nothing past the header was touched
    # write_header takes the C path for these flags: the same bytes again
    w = bytearray(c)
    w[:MSG_HEADER_SIZE] = bytes(MSG_HEADER_SIZE)
    _codec.write_header(w, kind, rid, size, flags, ())
    assert w == p

    before = bytes(c)
    with pytest.raises(ValueError):
        hot.seal(c, kind, rid, size, flags | _DATA_CRC)
    with pytest.raises(IndexError):
        hot.seal(c, kind, rid, len(c) - MSG_HEADER_SIZE + over, flags)
    assert c == before  # a rejected seal writes nothing


@needs_c
def test_seal_rejects_what_the_header_cannot_hold() -> None:
    buf = bytearray(64)
    for args in [
        (0x10000, 1, 0, 0),  # kind is a u16
        (1, 2**64, 0, 0),  # request_id a u64
        (1, -1, 0, 0),
        (1, 1, 2**32, 0),  # payload_size a u32
        (1, 1, 0, 2**32),  # flags a u32
        (1, 1, 0, 1),  # DATA_CRC: the data's CRC is _codec._seal's job
        (1, 1, 0, 3),
    ]:
        with pytest.raises(ValueError):
            hot.seal(buf, *args)
    with pytest.raises(IndexError):
        hot.seal(buf, 1, 1, 33, 0)  # 32 + 33 > 64
    with pytest.raises(IndexError):
        hot.seal(bytearray(31), 1, 1, 0, 0)  # not even a header
    assert buf == bytearray(64)
    with pytest.raises((BufferError, TypeError)):
        hot.seal(bytes(64), 1, 1, 0, 0)  # read-only
    with pytest.raises(TypeError):
        hot.seal(buf, 1, 1, 0)
    hot.seal(buf, 0xFFFF, 2**64 - 1, 32, 2**32 - 2)  # the largest values; a payload that just fits
    magic, version, kind, rid, payload, flags, reserved, crc = MSG_HEADER.unpack_from(buf)
    assert (magic, version, kind, rid, payload, flags, reserved) == (
        MSG_MAGIC,
        PROTOCOL_VERSION,
        0xFFFF,
        2**64 - 1,
        32,
        2**32 - 2,
        0,
    )
    assert crc == zlib.crc32(buf[MSG_HEADER_SIZE:], zlib.crc32(buf[:CRC_OFFSET]))


# --- 2b. repeat == _Reader._hit -----------------------------------------------------------------

AREA = 8192
_corruptions = st.lists(
    st.tuples(
        st.sampled_from(["header", "rid", "body", "deadline", "anywhere"]),
        st.integers(0, 2**20),
        st.integers(0, 255),
    ),
    max_size=3,
)
_steps = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # model
        st.sampled_from([(3,), (2, 2), (5,), ()]),  # shape of the one tensor
        st.sampled_from([DataType.FP32, DataType.INT64]),
        st.sampled_from([1, 7, 2**64 - 1]),  # request id
        st.sampled_from([0, 5, 10**12, 2**64 - 1]),  # deadline (requests) / status (responses)
        _corruptions,
        st.booleans(),  # re-seal after corrupting: a CRC that matches the changed bytes
        st.booleans(),  # the previous message again (a new request id): what the caches are for
    ),
    min_size=1,
    max_size=10,
)


def _repeats(steps: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    last = None
    for step in steps:
        if step[-1] and last is not None:
            step = (*last[:3], step[3], last[4], *step[5:])
        last = step
        yield step[:-1]


def _corrupt(buf: bytearray, payload: int, corruptions: list[tuple[str, int, int]], reseal: bool) -> None:
    for where, at, value in corruptions:
        if where == "header":
            i = at % MSG_HEADER_SIZE
        elif where == "rid":
            i = 8 + at % 8
        elif where == "body":
            i = MSG_HEADER_SIZE + at % payload
        elif where == "deadline":  # the window the request reader skips (deadline_ns)
            i = MSG_HEADER_SIZE + 80 + at % 8
        else:
            i = at % AREA
        buf[i] = value
    if reseal:  # over whatever payload_size the header now claims, clipped to the area
        size = min(int.from_bytes(buf[16:20], "little"), AREA - MSG_HEADER_SIZE)
        crc = zlib.crc32(buf[MSG_HEADER_SIZE : MSG_HEADER_SIZE + size], zlib.crc32(buf[:CRC_OFFSET]))
        buf[CRC_OFFSET : CRC_OFFSET + 4] = crc.to_bytes(4, "little")


def _normal(result: Any) -> Any:
    if isinstance(result, InferenceError):
        return type(result).__name__
    if result is None or (isinstance(result, tuple) and not hasattr(result, "_asdict")):
        return result
    fields = result._asdict()
    for key in ("inputs", "outputs"):
        if isinstance(fields.get(key), dict):
            fields[key] = {n: (a.dtype.str, a.shape, a.tobytes()) for n, a in fields[key].items()}
    return fields


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return _normal(call())
    except InferenceError as exc:
        return _normal(exc)


def _pure_outcome(call: Callable[[], Any]) -> Any:
    with _pure_codec():
        return _outcome(call)


@needs_c
@settings(max_examples=100, deadline=None)
@given(steps=_steps)
def test_request_repeat_decides_as_the_python_reader_does(steps: list[tuple[Any, ...]]) -> None:
    buf = bytearray(AREA)
    area = memoryview(buf).toreadonly()
    c, p = RequestReader(area, AREA), RequestReader(area, AREA)
    for model, shape, dtype, rid, deadline, corruptions, reseal in _repeats(steps):
        x = (np.arange(int(np.prod(shape))) + rid % 5).astype(dtype.numpy).reshape(shape)
        refs, _ = layout([("x", dtype, shape)], request_payload_size(1, 1, 0))
        buf[refs[0].offset : refs[0].offset + refs[0].size] = x.tobytes()
        payload = write_request(
            buf, request_id=rid, model=model, inputs=refs, deadline_ns=deadline, outputs=["y"]
        )
        _corrupt(buf, payload, corruptions, reseal)
        hit = _outcome(c._hit)
        assert hit == _pure_outcome(p._hit)
        got = _outcome(c.read)
        assert got == _pure_outcome(p.read)
        assert got == _outcome(lambda: decode_request(bytes(buf), AREA))
        if isinstance(hit, tuple):  # a hit reports the request's own deadline
            assert hit[3] == int.from_bytes(buf[MSG_HEADER_SIZE + 80 : MSG_HEADER_SIZE + 88], "little")


@needs_c
@settings(max_examples=100, deadline=None)
@given(steps=_steps)
# an OK response whose required_bytes is not 0, resealed, then repeated: the repeat answered the
# 0 it had remembered, where the full decode says 1
@example(
    steps=[
        ("a", (3,), DataType.FP32, 1, 0, [], False, False),
        ("a", (3,), DataType.FP32, 1, 0, [], False, False),
        ("b", (3,), DataType.INT64, 1, 0, [("body", 145008, 1)], True, False),
        ("b", (3,), DataType.INT64, 1, 0, [("body", 145008, 1)], True, False),
    ]
)
def test_response_repeat_decides_as_the_python_reader_does(steps: list[tuple[Any, ...]]) -> None:
    buf = bytearray(AREA)
    area = memoryview(buf).toreadonly()
    c, p = ResponseReader(area, AREA), ResponseReader(area, AREA)
    for model, shape, dtype, rid, code, corruptions, reseal in _repeats(steps):
        status = 2 if code == 5 else 0  # an error is decoded in full every time: mostly successes
        y = np.full(shape, rid % 11, dtype=dtype.numpy)
        refs, _ = layout([("y", dtype, shape)], response_payload_size(1, 0, 0))
        buf[refs[0].offset : refs[0].offset + refs[0].size] = y.tobytes()
        payload = write_response(buf, request_id=rid, model=model, outputs=refs, status=status)
        _corrupt(buf, payload, corruptions, reseal)
        hit = _outcome(c._hit)
        assert hit == _pure_outcome(p._hit)
        if isinstance(hit, tuple):
            assert hit[3] == 0  # responses skip nothing
        got = _outcome(c.read)
        assert got == _pure_outcome(p.read)
        assert got == _outcome(lambda: decode_response(bytes(buf), AREA))


@needs_c
def test_repeat_reports_a_crc_mismatch_and_the_deadline_it_skipped() -> None:
    buf = bytearray(AREA)
    refs, _ = layout([("x", DataType.FP32, (4,))], request_payload_size(1, 0, 0))
    payload = write_request(buf, request_id=9, model="m", inputs=refs, deadline_ns=111)
    cached = bytes(buf[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload])
    assert hot.repeat(buf, AREA, cached, 80, 88) == (1, 9, 0, 111)
    write_request(buf, request_id=10, model="m", inputs=refs, deadline_ns=222)  # a new deadline only
    assert hot.repeat(buf, AREA, cached, 80, 88) == (1, 10, 0, 222)
    assert hot.repeat(buf, AREA, cached, 0, 0) is None  # without the window it is a different payload
    buf[MSG_HEADER_SIZE + 81] ^= 1  # the deadline changes but the CRC does not
    assert hot.repeat(buf, AREA, cached, 80, 88) == -1
    assert hot.repeat(buf, MSG_HEADER_SIZE + payload - 1, cached, 80, 88) is None  # past `size`
    assert hot.repeat(buf[:31], AREA, b"", 0, 0) is None
    assert hot.repeat(bytearray(AREA), AREA, cached, 80, 88) is None  # no magic


# --- 2c. fill == _py_fill -----------------------------------------------------------------------

_SRC_KINDS = ["same", "same", "same", "dtype", "shape", "strided", "fortran", "list", "scalar", "memoryview"]
_SHAPES = [(), (1,), (4,), (3, 2), (2, 1, 3), (0,), (0, 3)]


def _source(kind: str, dtype: np.dtype[Any], shape: tuple[int, ...], seed: int, other: int) -> Any:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 100, size=shape).astype(dtype)
    if kind == "dtype":
        return base.astype(
            _DTYPES[(_DTYPES.index(DataType.from_numpy(dtype)) + 1 + other) % len(_DTYPES)].numpy
        )
    if kind == "shape":
        alt = _SHAPES[(_SHAPES.index(shape) + 1 + other % (len(_SHAPES) - 1)) % len(_SHAPES)]
        return rng.integers(0, 100, size=alt).astype(dtype)
    if kind == "strided":  # the same values, every other element of a longer array
        wide = np.zeros((*shape[:-1], shape[-1] * 2) if shape else (2,), dtype)
        sub = wide[..., ::2] if shape else wide[:1].reshape(())
        sub[...] = base
        return sub
    if kind == "fortran":
        return np.asfortranarray(base)
    if kind == "list":
        return base.tolist()
    if kind == "scalar":
        return base.reshape(-1)[0].item() if base.size else 0
    if kind == "memoryview":
        return memoryview(base)
    return base


@needs_c
@settings(max_examples=100, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.sampled_from(_DTYPES),
            st.sampled_from(_SHAPES),
            st.sampled_from(_SRC_KINDS),
            st.integers(0, 2**16),
            st.integers(0, 10),
        ),
        max_size=5,
    ),
    count_delta=st.sampled_from([0, 0, 0, -1, 1]),
    as_iterable=st.booleans(),
)
def test_fill_copies_what_the_python_fill_copies(
    pairs: list[tuple[Any, ...]], count_delta: int, as_iterable: bool
) -> None:
    specs = [(f"t{i}", dt, shape) for i, (dt, shape, *_) in enumerate(pairs)]
    refs, end = layout(specs, 0)
    c_area, p_area = bytearray([0xA5]) * end, bytearray([0xA5]) * end
    c_dsts, p_dsts = views(c_area, refs), views(p_area, refs)
    srcs = [_source(kind, dt.numpy, shape, seed, other) for dt, shape, kind, seed, other in pairs]
    if count_delta < 0:
        srcs = srcs[:-1]
    elif count_delta > 0:
        srcs.append(np.zeros(1))

    def arrays() -> Any:
        return iter(srcs) if as_iterable else list(srcs)  # the callers pass dict.values()

    r_c, r_p = hot.fill(c_dsts, arrays()), _py_fill(p_dsts, arrays())
    assert type(r_c) is bool and type(r_p) is bool
    f_area = bytearray([0xA5]) * end  # what the transport calls: C, then numpy for the rest
    f_dsts = views(f_area, refs)
    assert _codec.fill(f_dsts, list(srcs)) is (r_c or r_p)
    assert f_area == (c_area if r_c else p_area)
    for ok, area, dsts in ((r_c, c_area, c_dsts), (r_p, p_area, p_dsts)):
        if not ok:
            assert area == bytearray([0xA5]) * end  # nothing copied
        else:
            for dst, src in zip(dsts, srcs, strict=True):
                assert dst.tobytes() == np.asarray(src).tobytes()
    plain = all(
        type(s) is not memoryview and (type(s) is not np.ndarray or s.flags.c_contiguous) for s in srcs
    )
    if plain:  # C-contiguous arrays, lists, scalars: the very same decision
        assert r_c == r_p
        assert c_area == p_area
    elif r_p and any(type(s) is np.ndarray and not s.flags.c_contiguous for s in srcs):
        assert not r_c  # documented: C copies C-contiguous sources only; the caller re-encodes


@needs_c
def test_fill_declines_what_it_does_not_cover_and_copies_nothing() -> None:
    """Cases the Python fill copies but the C one leaves to the caller's general path."""
    for dsts_dtype, src in [
        (np.int64, np.arange(4, dtype=np.longlong)),  # equal dtypes, different buffer formats
        (np.int32, np.arange(8, dtype=np.int32)[::2]),  # strided
    ]:
        area = bytearray(32)
        dst = np.frombuffer(area, dsts_dtype, 4)
        assert _py_fill([dst.copy()], [src]) is True
        assert hot.fill([dst], [src]) is False
        assert area == bytearray(32)
    area = bytearray(17 * 8)
    dsts = [np.frombuffer(area, np.float64, 1, 8 * i) for i in range(17)]  # more than 16 pairs
    assert hot.fill(dsts, [np.ones(1)] * 17) is False
    assert area == bytearray(17 * 8)
    assert hot.fill(dsts[:16], [np.ones(1)] * 16) is True
    assert area[: 16 * 8] == np.ones(16).tobytes()
    assert hot.fill([np.frombuffer(bytes(8), np.float64)], [np.ones(1)]) is False  # read-only dst
    assert hot.fill([], []) is True
    with pytest.raises(TypeError):
        hot.fill(None, [])
    with pytest.raises(TypeError):
        hot.fill([], None)


@needs_c
@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.integers(0, 3), min_size=32, max_size=32),
    channels=st.lists(st.tuples(st.integers(1, 10), st.integers(11, 20), st.integers(42, 63)), max_size=6),
    start=st.integers(-8, 8),
    epoch=st.integers(0, 3),
)
def test_the_python_poll_answers_what_the_c_poll_answers(
    words: list[int], channels: list[tuple[int, int, int]], start: int, epoch: int
) -> None:
    """The server's one loop runs on either scan (``_sync.poll_channels``): they must agree."""
    buf = bytearray(np.array(words, np.uint64).tobytes())  # 32 u64 words; busy words are u32 42..63
    mv = memoryview(buf)
    cseq, sseq, busy = ([c[k] for c in channels] for k in range(3))
    want = hot.poll(mv, cseq, sseq, busy, 0, 0, 0, epoch, start)
    got = _sync._py_poll(mv.cast("Q"), mv.cast("I"), cseq, sseq, busy, 0, 0, 0, epoch, start)
    assert got == want


# --- 3. spin, publish, poll ---------------------------------------------------------------------


def _later(delay: float, action: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), action()))
    t.start()
    return t


@needs_c
def test_spin_returns_at_once_when_the_word_already_holds_the_value() -> None:
    buf = bytearray(32)
    words = memoryview(buf).cast("Q")
    words[2] = 2**64 - 1
    t0 = time.monotonic()
    assert hot.spin(words, 2, 2**64 - 1, 60 * 10**9, 0) is True
    assert hot.spin(buf, 2, 2**64 - 1, 0, 0) is True  # no window needed
    assert time.monotonic() - t0 < 30  # not the minute's window (2.5 s of 5: a loaded machine's)
    assert hot.spin(buf, 1, 5, 0, 0) is False  # no window: one look


@needs_c
def test_spin_gives_up_after_its_window() -> None:
    buf = bytearray(32)
    window = 50_000_000
    t0 = time.monotonic_ns()
    assert hot.spin(buf, 3, 1, window, 0) is False
    assert time.monotonic_ns() - t0 >= window


@needs_c
def test_spin_sees_a_store_from_another_thread_while_it_spins() -> None:
    buf = bytearray(32)
    words = memoryview(buf).cast("Q")

    def store() -> None:
        words[1] = 42

    t0 = time.monotonic()
    setter = _later(0.05, store)  # the GIL is released while spinning, or this thread never runs
    try:
        assert hot.spin(buf, 1, 42, 5 * 10**9, 0) is True
    finally:
        setter.join()
    assert time.monotonic() - t0 < 4


@needs_c
def test_publish_stores_the_word_and_reports_whether_the_peer_sleeps() -> None:
    buf = bytearray(64)
    u64, u32 = memoryview(buf).cast("Q"), memoryview(buf).cast("I")
    assert hot.publish(buf, 1, 2**64 - 1, 6) is False
    assert u64[1] == 2**64 - 1
    u32[6] = 1
    assert hot.publish(buf, 1, 5, 6) is True
    assert u64[1] == 5
    u32[6] = 0xFFFFFFFF
    assert hot.publish(u64, 7, 9, 6) is True
    assert u64[7] == 9
    assert u64.tolist() == [0, 5, 0, 0xFFFFFFFF, 0, 0, 0, 9]  # nothing else written
    with pytest.raises(ValueError):
        hot.publish(buf, 1, -1, 6)
    with pytest.raises((BufferError, TypeError)):
        hot.publish(bytes(64), 1, 1, 6)
    assert u64[1] == 5


# poll's layout: u64 word 0 the epoch, cseq words 1..3, sseq words 4..6, busy u32 words 14..16
_CSEQ, _SSEQ, _BUSY, _EPOCH = [1, 2, 3], [4, 5, 6], [14, 15, 16], 0


def _poll_area() -> tuple[bytearray, memoryview, memoryview]:
    buf = bytearray(128)
    u64, u32 = memoryview(buf).cast("Q"), memoryview(buf).cast("I")
    u64[_EPOCH] = 7
    for i in range(3):  # every channel answered up to seq 3
        u64[_CSEQ[i]] = u64[_SSEQ[i]] = 3
    return buf, u64, u32


def _poll(buf: bytearray, spin_ns: int = 0, epoch: int = 7, start: int = 0) -> int:
    return hot.poll(buf, _CSEQ, _SSEQ, _BUSY, spin_ns, 0, _EPOCH, epoch, start)  # type: ignore[no-any-return]


@needs_c
def test_poll_finds_the_pending_channel_and_skips_busy_ones() -> None:
    buf, u64, u32 = _poll_area()
    assert _poll(buf) == -1
    u64[_CSEQ[2]] = 4  # channel 2: a request
    assert _poll(buf) == 2
    u64[_CSEQ[1]] = 4
    u32[_BUSY[1]] = 1  # channel 1: pending, but the server is on it
    assert _poll(buf) == 2
    u32[_BUSY[2]] = 1
    assert _poll(buf) == -1
    u32[_BUSY[1]] = 0
    assert _poll(buf) == 1
    u64[_SSEQ[1]] = 4  # answered
    assert _poll(buf) == -1


@needs_c
@pytest.mark.parametrize(("start", "want"), [(0, 0), (1, 1), (2, 0), (3, 0), (4, 1), (-1, 0), (-2, 1)])
def test_poll_scans_round_the_ring_from_start(start: int, want: int) -> None:
    buf, u64, _ = _poll_area()
    u64[_CSEQ[0]] = u64[_CSEQ[1]] = 9  # two pending channels
    assert _poll(buf, start=start) == want


@needs_c
def test_poll_gives_up_after_its_window_or_when_the_epoch_moves() -> None:
    buf, u64, _ = _poll_area()
    window = 30_000_000
    t0 = time.monotonic_ns()
    assert _poll(buf, spin_ns=window) == -1
    assert time.monotonic_ns() - t0 >= window
    t0 = time.monotonic_ns()
    assert _poll(buf, spin_ns=5 * 10**9, epoch=6) == -2  # the epoch word is 7
    assert time.monotonic_ns() - t0 < 4 * 10**9
    u64[_CSEQ[0]] = 4
    assert _poll(buf, epoch=6) == 0  # a pending request comes first
    assert hot.poll(buf, [], [], [], 0, 0, _EPOCH, 7, 0) == -1
    assert hot.poll(buf, [], [], [], 0, 0, _EPOCH, 8, 5) == -2


@needs_c
@pytest.mark.parametrize("event", ["request", "epoch"])
def test_poll_sees_a_store_from_another_thread_while_it_waits(event: str) -> None:
    buf, u64, _ = _poll_area()

    def store() -> None:
        if event == "request":
            u64[_CSEQ[1]] = 4
        else:
            u64[_EPOCH] = 8

    t0 = time.monotonic()
    setter = _later(0.05, store)  # the GIL is released while polling
    try:
        assert _poll(buf, spin_ns=5 * 10**9) == (1 if event == "request" else -2)
    finally:
        setter.join()
    assert time.monotonic() - t0 < 4


@needs_c
def test_word_indices_outside_the_buffer_raise_index_error() -> None:
    buf = bytearray(128)  # 16 u64 words, 32 u32 words
    for index in (16, -1, 1000):
        with pytest.raises(IndexError):
            hot.spin(buf, index, 0, 0, 0)
        with pytest.raises(IndexError):
            hot.publish(buf, index, 1, 0)
        with pytest.raises(IndexError):
            hot.poll(buf, [1], [2], [3], 0, 0, index, 0, 0)
        with pytest.raises(IndexError):
            hot.poll(buf, [index], [2], [3], 0, 0, 0, 0, 0)
        with pytest.raises(IndexError):
            hot.poll(buf, [1], [index], [3], 0, 0, 0, 0, 0)
    for index in (32, -1, 1000):
        with pytest.raises(IndexError):
            hot.publish(buf, 1, 1, index)
        with pytest.raises(IndexError):
            hot.poll(buf, [1], [2], [index], 0, 0, 0, 0, 0)
    assert buf == bytearray(128)  # a refused publish stores nothing
    hot.publish(buf, 15, 1, 31)  # the last words are in
    assert hot.spin(buf, 15, 1, 0, 0) is True
    with pytest.raises(IndexError):
        hot.spin(bytearray(7), 0, 0, 0, 0)
    with pytest.raises(ValueError):
        hot.poll(buf, [1, 2], [3], [4], 0, 0, 0, 0, 0)  # lengths differ
    with pytest.raises(TypeError):
        hot.poll(buf, 1, [3], [4], 0, 0, 0, 0, 0)


# Each probe in its own process: with the bug below, some of these indices crash the interpreter.
_PROBE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("foundation_shm._hot", sys.argv[1])
hot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hot)
big = bytearray(64)
view = memoryview(big)[16:]  # just before the buffer lies more of ours: a stray access there is seen
index = int(sys.argv[3])
call = {
    "spin": lambda: hot.spin(view, index, 0, 0, 0),
    "publish_seq": lambda: hot.publish(view, index, 1, 0),
    "publish_peer": lambda: hot.publish(view, 0, 1, index),
    "poll_epoch": lambda: hot.poll(view, [0], [1], [0], 0, 0, index, 0, 0),
}[sys.argv[2]]
try:
    result = call()
except IndexError:
    print("IndexError" if big[:16] == bytes(16) else "IndexError, but wrote before the buffer")
else:
    print(f"returned {result!r}; the 16 bytes before the buffer: {big[:16].hex()}")
"""


@needs_build
@pytest.mark.parametrize("call", ["spin", "publish_seq", "publish_peer", "poll_epoch"])
def test_huge_word_indices_raise_index_error_and_never_crash(call: str) -> None:
    so = importlib.import_module("foundation_shm._hot").__file__
    assert so is not None
    for index in (2**60, 2**61 - 1, 2**62 - 1, 2**62, 2**63 - 1):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, so, call, str(index)], capture_output=True, text=True, timeout=60
        )
        assert (out.returncode, out.stdout.strip()) == (0, "IndexError"), (index, out.returncode, out.stdout)


# --- 3b. the lanes: exchange (the client's repeated request) and answer (the server's) ----------

# the lanes' control words: u64 1 cseq, u64 2 sseq, u64 3 served; u32 10 the server's sleeping
# word, u32 11 busy, u32 12 the client's sleeping word
_LCSEQ, _LSSEQ, _LSERVED, _LPEER, _LBUSY, _LSLEEPING = 1, 2, 3, 10, 11, 12


def _lane_request(dtype: DataType, shape: tuple[int, ...], rid: int, deadline: int) -> tuple[Any, ...]:
    """A request area holding a request for one input, its views, payload and refs."""
    req = bytearray(AREA)
    refs, _ = layout([("x", dtype, shape)], request_payload_size(1, 0, 0))
    payload = write_request(req, request_id=rid, model="m", inputs=refs, deadline_ns=deadline)
    return req, views(req, refs), payload, refs


def _lane_response(dtype: DataType, shape: tuple[int, ...], rid: int) -> tuple[Any, ...]:
    """A response area holding a response with one output: the area, views, payload, refs."""
    resp = bytearray(AREA)
    refs, _ = layout([("y", dtype, shape)], response_payload_size(1, 0, 0))
    payload = write_response(resp, request_id=rid, model="m", outputs=refs)
    return resp, views(resp, refs), payload, refs


def _exchange(
    ctl: bytearray,
    req: bytearray,
    resp: bytearray,
    dsts: Any,
    arrays: Any,
    rid: int,
    payload: int,
    deadline: int,
    seq: int,
    cached: bytes,
    spin_ns: int = 0,
) -> Any:
    return hot.exchange(
        ctl, req, resp, dsts, arrays, rid, payload, deadline, _LCSEQ, seq, _LPEER, _LSSEQ, spin_ns, 0, cached
    )


_lane_dtypes = st.sampled_from(_DTYPES)
_lane_shapes = st.sampled_from([(1,), (4,), (3, 2), (2, 1, 3), (0,)])
_request_ids = st.integers(1, 2**64 - 1)


@needs_c
@settings(max_examples=60, deadline=None)
@given(dtype=_lane_dtypes, shape=_lane_shapes, rid=_request_ids, deadline=st.integers(0, 2**64 - 1))
def test_exchange_writes_the_request_the_python_path_writes(
    dtype: DataType, shape: tuple[int, ...], rid: int, deadline: int
) -> None:
    req, dsts, payload, refs = _lane_request(dtype, shape, 1, 0)
    x = (np.arange(int(np.prod(shape))) % 7).astype(dtype.numpy).reshape(shape)
    want = bytearray(req)  # the pure path: _py_fill, the deadline packed, write_header
    _py_fill(views(want, refs), [x])
    want[MSG_HEADER_SIZE + 80 : MSG_HEADER_SIZE + 88] = deadline.to_bytes(8, "little")
    with _pure_codec():
        _codec.write_header(want, 1, rid, payload, 0, refs)
    ctl, resp = bytearray(128), bytearray(AREA)
    assert _exchange(ctl, req, resp, dsts, [x], rid, payload, deadline, 5, b"") == 2  # nobody answers
    assert req == want
    assert memoryview(ctl).cast("Q")[_LCSEQ] == 5
    dec = decode_request(bytes(req), AREA)
    assert (dec.request_id, dec.deadline_ns) == (rid, deadline)
    assert dec.inputs["x"].tobytes() == x.tobytes()


@needs_c
def test_exchange_reports_each_outcome() -> None:
    req, dsts, payload, _ = _lane_request(DataType.FP32, (4,), 1, 0)
    resp, _, rpayload, _ = _lane_response(DataType.FP32, (4,), 7)
    cached = bytes(resp[MSG_HEADER_SIZE : MSG_HEADER_SIZE + rpayload])
    ctl = bytearray(128)
    u64, u32 = memoryview(ctl).cast("Q"), memoryview(ctl).cast("I")
    x = np.arange(4, dtype=np.float32)
    u64[_LSSEQ] = 3  # already answered: the response in place repeats the cached one, id 7
    assert _exchange(ctl, req, resp, dsts, [x], 7, payload, 0, 3, cached) == 0
    assert _exchange(ctl, req, resp, dsts, [x], 8, payload, 0, 3, cached) == 3  # another request id
    assert _exchange(ctl, req, resp, dsts, [x], 7, payload, 0, 3, cached[:-1] + b"\x01") == 3  # new shape
    resp[MSG_HEADER_SIZE] ^= 1  # the response's CRC no longer matches: decoded (and rejected) in full
    assert _exchange(ctl, req, resp, dsts, [x], 7, payload, 0, 3, cached) == 3
    resp[MSG_HEADER_SIZE] ^= 1
    u32[_LPEER] = 1  # the server sleeps: published, not awaited
    assert _exchange(ctl, req, resp, dsts, [x], 7, payload, 0, 4, cached) == 1
    assert u64[_LCSEQ] == 4
    u32[_LPEER] = 0
    t0 = time.monotonic()
    assert _exchange(ctl, req, resp, dsts, [x], 7, payload, 0, 5, cached, spin_ns=2_000_000) == 2
    assert time.monotonic() - t0 >= 0.002  # it spun its window
    before = bytes(req)
    for bad in (
        np.arange(5, dtype=np.float32),
        np.arange(4, dtype=np.float64),
        np.arange(8, dtype=np.float32)[::2],
    ):
        assert _exchange(ctl, req, resp, dsts, [bad], 9, payload, 0, 6, cached) == -1  # the general way
    assert bytes(req) == before and u64[_LCSEQ] == 5  # nothing written, nothing published


@needs_c
def test_exchange_sees_an_answer_from_another_thread_while_it_spins() -> None:
    req, dsts, payload, _ = _lane_request(DataType.INT32, (3,), 1, 0)
    resp, _, rpayload, rrefs = _lane_response(DataType.INT32, (3,), 1)
    cached = bytes(resp[MSG_HEADER_SIZE : MSG_HEADER_SIZE + rpayload])
    ctl = bytearray(128)
    u64 = memoryview(ctl).cast("Q")

    def server() -> None:  # answers request 1 with the same response, as soon as it is published
        deadline = time.monotonic() + 5
        while u64[_LCSEQ] != 1 and time.monotonic() < deadline:
            pass
        write_response(resp, request_id=21, model="m", outputs=rrefs)
        u64[_LSSEQ] = 1

    t = threading.Thread(target=server)
    t.start()
    try:
        got = _exchange(ctl, req, resp, dsts, [np.ones(3, np.int32)], 21, payload, 0, 1, cached, 5 * 10**9)
    finally:
        t.join()
    assert got == 0


@needs_c
def test_exchange_and_answer_check_their_indices_and_sizes() -> None:
    req, dsts, payload, _ = _lane_request(DataType.FP32, (4,), 1, 0)
    x = [np.zeros(4, np.float32)]
    with pytest.raises(IndexError):
        hot.exchange(bytearray(16), req, bytearray(64), dsts, x, 1, payload, 0, 1, 1, 10, 2, 0, 0, b"")
    with pytest.raises(IndexError):  # a payload past the area
        _exchange(bytearray(128), req, bytearray(64), dsts, x, 1, AREA, 0, 1, b"")
    with pytest.raises(IndexError):  # a payload too short to hold the deadline
        _exchange(bytearray(128), req, bytearray(64), dsts, x, 1, 40, 0, 1, b"")
    with pytest.raises(TypeError):
        hot.exchange(bytearray(128), req)
    resp, rdsts, rpayload, _ = _lane_response(DataType.FP32, (4,), 1)
    with pytest.raises(IndexError):
        hot.answer(bytearray(16), resp, rdsts, x, 1, rpayload, 1, 2, 1, 10, 3, 12)
    with pytest.raises(IndexError):
        hot.answer(bytearray(128), resp, rdsts, x, 1, AREA, 1, 2, 1, 10, 3, 12)


# take's words: u64 1 cseq, u64 2 sseq, u64 4 the data segment's generation; u32 11 busy
_TGEN = 4


def _take(ctl: bytearray, req: bytearray, cached: bytes, gen: int = 7) -> Any:
    return hot.take(ctl, req, cached, AREA, _LCSEQ, _LSSEQ, _LBUSY, _TGEN, gen)


def _pending() -> tuple[bytearray, Any, bytes, bytearray, memoryview]:
    """A request (id 3) in its area, its refs, its payload as cached, and control words that make
    it pending as seq 6 of a data segment of generation 7 (and the u32 view of those words)."""
    req, _, payload, refs = _lane_request(DataType.FP32, (4,), 3, 0)
    ctl = bytearray(128)
    u64 = memoryview(ctl).cast("Q")
    u64[_LCSEQ], u64[_LSSEQ], u64[_TGEN] = 6, 5, 7
    return req, refs, bytes(req[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload]), ctl, memoryview(ctl).cast("I")


@needs_c
def test_take_reports_nothing_pending_and_leaves_the_busy_word() -> None:
    req, _, payload, _ = _lane_request(DataType.FP32, (4,), 3, 0)
    cached = bytes(req[MSG_HEADER_SIZE : MSG_HEADER_SIZE + payload])
    ctl = bytearray(128)
    u64, u32 = memoryview(ctl).cast("Q"), memoryview(ctl).cast("I")
    u64[_LCSEQ] = u64[_LSSEQ] = 5
    assert _take(ctl, req, cached) is None
    assert u32[_LBUSY] == 0


@needs_c
def test_take_returns_a_repeated_request_with_its_id_and_deadline_and_sets_busy() -> None:
    req, refs, cached, ctl, u32 = _pending()
    assert _take(ctl, req, cached) == (6, 3, 0)
    assert u32[_LBUSY] == 1
    write_request(req, request_id=2**64 - 1, model="m", inputs=refs, deadline_ns=123)  # a new deadline
    assert _take(ctl, req, cached) == (6, 2**64 - 1, 123)


@needs_c
def test_take_sends_anything_but_a_repeated_infer_request_to_the_full_decoder() -> None:
    req, refs, cached, ctl, u32 = _pending()
    general = (6, None, 0)
    assert _take(ctl, req, cached, gen=8) == general  # the client attached a new data segment
    assert u32[_LBUSY] == 1  # busy either way: the request is the server's now
    assert _take(ctl, req, cached[:-1] + b"\x01") == general  # another payload
    assert _take(ctl, req, b"") == general  # nothing cached
    req[MSG_HEADER_SIZE + 81] ^= 1  # the deadline changes, the CRC does not: decoded (and rejected) in full
    assert _take(ctl, req, cached) == general
    write_request(req, request_id=3, model="m", inputs=refs, kind=3)  # METADATA_REQUEST, same payload
    assert _take(ctl, req, cached) == general
    write_request(req, request_id=3, model="m", inputs=refs, flags=2)  # the client wants CUDA IPC outputs
    assert _take(ctl, req, cached) == general
    write_request(req, request_id=3, model="m", inputs=refs)
    assert _take(ctl, req, cached) == (6, 3, 0)
    with pytest.raises(IndexError):
        hot.take(bytearray(16), req, cached, AREA, _LCSEQ, _LSSEQ, _LBUSY, _TGEN, 7)


def _answer(ctl: bytearray, resp: bytearray, dsts: Any, arrays: Any, rid: int, payload: int, seq: int) -> Any:
    return hot.answer(
        ctl, resp, dsts, arrays, rid, payload, _LCSEQ, _LSSEQ, seq, _LBUSY, _LSERVED, _LSLEEPING
    )


@needs_c
@settings(max_examples=60, deadline=None)
@given(dtype=_lane_dtypes, shape=_lane_shapes, rid=_request_ids)
def test_answer_writes_the_response_the_python_path_writes(
    dtype: DataType, shape: tuple[int, ...], rid: int
) -> None:
    resp, dsts, payload, refs = _lane_response(dtype, shape, 1)
    y = (np.arange(int(np.prod(shape))) % 5).astype(dtype.numpy).reshape(shape)
    want = bytearray(resp)
    _py_fill(views(want, refs), [y])
    with _pure_codec():
        _codec.write_header(want, 2, rid, payload, 0, refs)
    ctl = bytearray(128)
    u64, u32 = memoryview(ctl).cast("Q"), memoryview(ctl).cast("I")
    u64[_LCSEQ], u64[_LSSEQ], u64[_LSERVED], u32[_LBUSY] = 8, 7, 40, 1
    assert _answer(ctl, resp, dsts, [y], rid, payload, 8) == 0
    assert resp == want
    assert (u64[_LSSEQ], u32[_LBUSY], u64[_LSERVED]) == (8, 0, 41)
    dec = decode_response(bytes(resp), AREA)
    assert dec.request_id == rid and dec.outputs["y"].tobytes() == y.tobytes()


@needs_c
def test_answer_wakes_a_sleeping_client_and_leaves_stale_or_new_shapes_to_the_general_path() -> None:
    resp, dsts, payload, _ = _lane_response(DataType.FP32, (4,), 1)
    ctl = bytearray(128)
    u64, u32 = memoryview(ctl).cast("Q"), memoryview(ctl).cast("I")
    y = [np.ones(4, np.float32)]
    u64[_LCSEQ], u64[_LSSEQ], u32[_LBUSY], u32[_LSLEEPING] = 2, 1, 1, 1
    assert _answer(ctl, resp, dsts, y, 5, payload, 2) == 1  # the client sleeps: wake it
    u32[_LBUSY] = 1
    u64[_LCSEQ] = 3
    words, area = bytes(ctl), bytes(resp)
    assert _answer(ctl, resp, dsts, y, 5, payload, 2) == -1  # answered already
    assert _answer(ctl, resp, dsts, y, 5, payload, 4) == -1  # not the pending request
    assert _answer(ctl, resp, dsts, [np.ones(5, np.float32)], 5, payload, 3) is None  # a new shape
    assert _answer(ctl, resp, dsts, [], 5, payload, 3) is None  # another number of outputs
    assert bytes(ctl) == words and bytes(resp) == area  # none of them wrote anything


# --- 4. one implementation serves the other, in real processes ---------------------------------

_SERVER = (
    "import sys; from foundation_shm import _accel; print(_accel.implementation(), flush=True); "
    "from foundation_shm._echo import main; sys.exit(main(sys.argv[1:]))"
)
_CLIENT = r"""
import sys
import numpy as np
from foundation_shm import ShmTransport, _accel
from foundation_ml import InferenceRequest
from foundation_ml.errors import HandlerError

name, want = sys.argv[1], sys.argv[2]
assert _accel.implementation() == want, _accel.implementation()
rng = np.random.default_rng(7)
calls = 0


def echo(client, inputs, timeout=None):
    global calls
    resp = client.infer(InferenceRequest("echo", inputs), timeout=timeout)
    calls += 1
    assert list(resp.outputs) == list(inputs), (list(resp.outputs), list(inputs))
    for k, v in inputs.items():
        out = resp.outputs[k]
        assert out.dtype == v.dtype and out.shape == v.shape, (k, out.dtype, out.shape, v.dtype, v.shape)
        assert out.tobytes() == np.ascontiguousarray(v).tobytes(), (k, out, v)


with ShmTransport().connect(name, channels=1) as client:
    for dtype in ("float32", "int64", "uint8", "float64", "bool", "int16", "float16", "uint32"):
        for shape in ((5,), (2, 3), (), (4, 1, 2)):
            for repeat in range(3):  # the same request again: both sides' caches hit
                x = rng.integers(0, 100, size=shape).astype(dtype)
                n = np.arange(3, dtype="int32") + repeat
                echo(client, {"x": x, "n": n}, timeout=30 if repeat else None)  # deadlines change
    for n in (1, 7, 3, 300, 3, 0, 5, 5):  # the shape changes between calls: caches must notice
        echo(client, {"v": np.arange(n, dtype="float64") * n})
    for k in range(2):
        echo(client, {"s": np.arange(40, dtype="int32").reshape(4, 10)[:, ::2] + k})  # strided
    for _ in range(2):
        try:
            client.infer(InferenceRequest("fail", {"x": np.zeros(2)}))
        except HandlerError as exc:
            assert "boom" in str(exc), exc
        else:
            raise AssertionError("the fail model did not fail")
        echo(client, {"x": np.ones(4, dtype="float32")})  # and the channel goes on
print("ok", calls, flush=True)
"""


@contextlib.contextmanager
def _echo_server(name: str, pure: bool) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, name],
        env=_env(pure),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        impl, ready = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert (impl, ready) == ("python" if pure else "c", "ready"), (impl, ready)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.communicate()
        left = objects_of(name)
        remove_objects(name)
        assert not left, f"left in /dev/shm: {left}"


@pytest.mark.slow
@needs_build
@pytest.mark.parametrize(("server_pure", "client_pure"), [(True, False), (False, True)])
def test_a_server_on_one_path_serves_a_client_on_the_other(
    name: str, server_pure: bool, client_pure: bool
) -> None:
    with _echo_server(name, server_pure) as server:
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT, name, "python" if client_pure else "c"],
            env=_env(client_pure),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split() == ["ok", str(8 * 4 * 3 + 8 + 2 + 2)]
        assert server.poll() is None  # still serving


# --- 5. a stale answer must not leave the channel busy ------------------------------------------


def test_a_stale_answer_clears_the_busy_flag_and_writes_nothing(name: str) -> None:
    server = ShmServer(name, EchoHandler(), channels=2)
    try:
        with ShmTransport().connect(name, channels=1) as client:
            x = np.arange(4.0)
            first = client.infer(InferenceRequest("echo", {"x": x}), timeout=10)
            np.testing.assert_array_equal(first.outputs["x"], x)
            u32, u64 = server._u32, server._u64
            (ch,) = [ch for ch in server._channels if u64[ch.cseq]]
            seq = u64[ch.cseq]
            assert u64[ch.sseq] == seq and not ch.busy and u32[ch.busy_word] == 0  # answered
            assert ch.resp is not None
            response = bytes(ch.resp[:4096])
            served = u64[ch.served_word]
            for stale in (seq, seq - 1):  # answered already; an older one
                ch.busy = True  # as _dispatch leaves it while the handler runs
                u32[ch.busy_word] = 1
                responder = _Responder(server, ch, stale, first.id, "echo")
                server._answer(responder, InferenceResponse(first.id, "echo", {"x": x + 100}))
                assert ch.busy is False and u32[ch.busy_word] == 0
                assert u64[ch.sseq] == seq and u64[ch.served_word] == served
                assert bytes(ch.resp[:4096]) == response  # dropped: it would clobber the next answer
            second = client.infer(InferenceRequest("echo", {"x": x + 1}), timeout=5)
            np.testing.assert_array_equal(second.outputs["x"], x + 1)
            assert u64[ch.sseq] == seq + 1 and not ch.busy
    finally:
        server.stop()
    assert not objects_of(name)


@needs_c
@pytest.mark.parametrize(
    ("marked", "plain"), [(DataType.BF16, DataType.UINT16), (DataType.BYTES, DataType.UINT8)]
)
def test_fill_tells_marked_from_plain_and_takes_unmarked_buffers(marked: DataType, plain: DataType) -> None:
    """BF16 and BYTES are uint16 and uint8 with a mark in numpy's dtype metadata, which the buffer
    format does not show: a marked source into a plain view (or the reverse) is declined, and a
    buffer with no dtype at all (a bytearray, an array.array) is plain, taken as before the marks."""
    import array

    area = bytearray(8)
    dst_plain = np.frombuffer(area, plain.numpy)
    dst_marked = np.frombuffer(area, marked.numpy)
    bits = np.arange(len(dst_plain), dtype=plain.numpy)
    assert hot.fill([dst_plain], [bits.view(marked.numpy)]) is False
    assert hot.fill([dst_marked], [bits]) is False
    assert area == bytearray(8)
    assert hot.fill([dst_marked], [bits.view(marked.numpy)]) is True
    assert area == bits.tobytes()
    raw = array.array("H" if plain is DataType.UINT16 else "B", range(10, 10 + len(dst_plain)))
    assert hot.fill([dst_plain], [raw]) is True
    assert area == raw.tobytes()
    assert hot.fill([dst_marked], [raw]) is False
