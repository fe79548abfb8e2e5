"""The shm transport's options: each bad one refused by name before anything is made, the
``shm`` config section, and a server whose start fails halfway leaving nothing behind."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest
from foundation_shm import ShmTransport
from foundation_shm import _server as server_module
from foundation_shm._echo import EchoHandler
from foundation_shm._objects import group_objects
from foundation_shm._options import ConnectOptions, ServeOptions, ShmSettings
from hypothesis import given
from hypothesis import strategies as st

from foundation_ml import InferenceRequest
from foundation_ml.errors import ServerUnavailable

BAD_SERVE = [
    ({"channels": 0}, "channels must be an integer 1..4_096, not 0"),
    ({"channels": 4097}, "channels must be an integer 1..4_096"),
    ({"spin_us": -1}, "spin_us must be an integer 0..1_000_000 µs, not -1"),
    ({"spin_us": 1.5}, "spin_us must be an integer"),
    ({"heartbeat_ms": 0}, "heartbeat_ms must be an integer 1..60_000 ms, not 0"),
    ({"heartbeat_ms": True}, "heartbeat_ms must be an integer"),
    ({"mode": 0o400}, "mode must be permission bits within 0o770 .* not 0o400"),
    ({"mode": 0o666}, "mode must be .* give other users nothing .* not 0o666"),
    ({"mode": 0o7777}, "mode must be .* not 0o7777"),
    ({"mode": "0660"}, "mode must be permission bits .* not '0660'"),
    ({"max_request_bytes": 0}, "max_request_bytes must be an integer 1.."),
    ({"max_tensors": 0}, "max_tensors must be an integer 1..65_535, not 0"),
    ({"default_capacity": 100}, "default_capacity must be an integer 4_096.."),
    ({"data_crc": 1}, "data_crc must be true or false, not 1"),
    ({"cuda_ipc": "yes"}, "cuda_ipc must be None, True or False"),
    ({"cuda_cache_bytes": -1}, "cuda_cache_bytes must be an integer 0..281_474_976_710_656 bytes, not -1"),
    ({"cuda_cache_bytes": 1 << 49}, "cuda_cache_bytes must be an integer .* bytes, not 562949953421312"),
    ({"cuda_cache_bytes": 1.5e9}, "cuda_cache_bytes must be an integer .* bytes, not 1500000000.0"),
    ({"cuda_cache_bytes": "1GiB"}, "cuda_cache_bytes must be an integer .* bytes, not '1GiB'"),
    ({"cuda_cache_bytes": True}, "cuda_cache_bytes must be an integer .* bytes, not True"),
]

BAD_CONNECT = [
    ({"channels": 0}, "channels must be an integer 1..4_096, not 0"),
    ({"spin_us": -1}, "spin_us must be an integer 0..1_000_000 µs, not -1"),
    ({"capacity": 0}, "capacity must be an integer 4_096.."),
    ({"timeout": 0}, "timeout must be a number of seconds > 0 and at most 1e9 or None, not 0"),
    ({"timeout": float("nan")}, "timeout must be a number of seconds > 0 and at most 1e9 or None, not nan"),
    ({"timeout": "1"}, "timeout must be a number of seconds"),
    ({"timeout": True}, "timeout must be a number of seconds > 0 and at most 1e9 or None, not True"),
    # beyond a call's own bound, every call would fail naming its timeout, not this option
    ({"timeout": 1e10}, "timeout must be a number of seconds > 0 and at most 1e9 or None, not 10000000000.0"),
    ({"timeout": float("inf")}, "timeout must be a number of seconds > 0 and at most 1e9 or None, not inf"),
    ({"connect_timeout": -1}, "connect_timeout must be a number of seconds >= 0 and at most 1e9, not -1"),
    ({"connect_timeout": 1e300}, "connect_timeout must be a number of seconds >= 0 and at most 1e9, not 1e"),
    ({"copy_outputs": None}, "copy_outputs must be true or false"),
    ({"cuda_fallback": "cpu"}, "cuda_fallback must be one of error, host, not 'cpu'"),
    (
        {"max_response_bytes": 100},
        "max_response_bytes must be an integer 4_096..281_474_976_710_656 bytes, not 100",
    ),
    ({"max_response_bytes": 1 << 49}, "max_response_bytes must be an integer .* bytes, not 562949953421312"),
    ({"max_response_bytes": 1.5e9}, "max_response_bytes must be an integer .* bytes, not 1500000000.0"),
    ({"max_response_bytes": True}, "max_response_bytes must be an integer .* bytes, not True"),
    # the response area starts at capacity: neither silently wins
    (
        {"capacity": 8192, "max_response_bytes": 4096},
        r"capacity \(8_192 bytes\) exceeds max_response_bytes \(4_096 bytes\): the response area starts "
        "at capacity; lower capacity or raise max_response_bytes",
    ),
    ({"capacity": 8 << 30}, r"capacity \(8_589_934_592 bytes\) exceeds max_response_bytes \(4_294_967_296"),
]


def _objects(name: str) -> list[str]:
    return group_objects().get(name, [])


@pytest.mark.parametrize(("bad", "message"), BAD_SERVE, ids=[str(b) for b, _ in BAD_SERVE])
def test_a_bad_serve_option_is_refused_by_name_before_anything_is_made(
    name: str, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^shm serve option {message}"):
        ShmTransport().serve(name, EchoHandler(), **bad)
    assert _objects(name) == []
    ShmTransport().serve(name, EchoHandler()).stop()  # the name is free: no lock was kept


def test_an_unknown_serve_option_is_named_with_the_known_ones(name: str) -> None:
    with pytest.raises(
        TypeError, match=r"unknown shm serve option\(s\) chanels \(options: channels, spin_us,"
    ):
        ShmTransport().serve(name, EchoHandler(), chanels=4)
    assert _objects(name) == []


@pytest.mark.parametrize(("bad", "message"), BAD_CONNECT, ids=[str(b) for b, _ in BAD_CONNECT])
def test_a_bad_connect_option_is_refused_by_name_before_connecting(
    name: str, bad: dict[str, Any], message: str
) -> None:
    # no server under ``name``: the option is checked first, so the error is the option's
    with pytest.raises(ValueError, match=f"^shm connect option {message}"):
        ShmTransport().connect(name, **bad)
    with pytest.raises(ServerUnavailable):
        ShmTransport().connect(name)


def test_an_unknown_connect_option_is_named(name: str) -> None:
    with pytest.raises(TypeError, match=r"unknown shm connect option\(s\) spin \(options: channels,"):
        ShmTransport().connect(name, spin=0)


def test_a_server_whose_start_fails_halfway_removes_what_it_made_and_frees_the_name(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> None:
        raise RuntimeError("the header cannot be written")

    monkeypatch.setattr(server_module.ShmServer, "_write_header", refuse)
    with pytest.raises(RuntimeError, match="the header cannot be written"):
        ShmTransport().serve(name, EchoHandler(), channels=2)
    assert _objects(name) == []  # semaphores, control segment and lock file: all gone
    monkeypatch.undo()
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        with ShmTransport().connect(name) as client:
            x = np.arange(4, dtype=np.float32)
            np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
    finally:
        server.stop()


@given(st.integers(min_value=-(2**16), max_value=2**16))
def test_mode_takes_exactly_the_bits_that_keep_the_owner_in_and_others_out(mode: int) -> None:
    ok = 0 <= mode <= 0o777 and mode & 0o600 == 0o600 and mode & 0o007 == 0
    try:
        ServeOptions(mode=mode)
    except ValueError:
        assert not ok
    else:
        assert ok


def test_numpy_s_numbers_are_seconds_to_the_timeout_options() -> None:
    """(np.float64(5), a float, was refused as 'no number of seconds'.)"""
    for value in (np.float64(5), np.float32(5), np.int64(5)):
        assert ConnectOptions(timeout=value, connect_timeout=value).timeout == 5


@pytest.mark.parametrize("value", [np.float32(5), np.int64(5), np.float64(5)])
def test_a_client_connected_with_numpy_s_seconds_serves_calls(name: str, value: Any) -> None:
    """The options took np.float32(5) and np.int64(5), but the client handed them on as they
    were to the region mutex's wait, which takes Python's numbers only: every call failed a
    bare TypeError ('The timeout must be None or a non-negative number')."""
    server = ShmTransport().serve(name, EchoHandler(), channels=2)
    try:
        with ShmTransport().connect(name, timeout=value, connect_timeout=value) as client:
            x = np.arange(4, dtype=np.float32)
            np.testing.assert_array_equal(client.infer(InferenceRequest("echo", {"x": x})).outputs["x"], x)
    finally:
        server.stop()


@given(st.integers(min_value=-10, max_value=5000))
def test_channels_take_exactly_1_to_4096(channels: int) -> None:
    for cls in (ServeOptions, ConnectOptions):
        try:
            cls(channels=channels)
        except ValueError:
            assert not 1 <= channels <= 4096
        else:
            assert 1 <= channels <= 4096


def test_the_config_section_defaults_are_the_options_defaults() -> None:
    settings = ShmSettings()
    serve, connect = ServeOptions(), ConnectOptions()
    assert settings.serve_options() == {k: getattr(serve, k) for k in settings.serve_options()}
    assert settings.connect_options() == {k: getattr(connect, k) for k in settings.connect_options()}
    assert settings.mode == "0600"
    # every field of the section is one of the two option sets'
    serve_fields = {f.name for f in attrs.fields(ServeOptions)}
    connect_fields = {f.name for f in attrs.fields(ConnectOptions)}
    for f in attrs.fields(ShmSettings):
        assert f.name in serve_fields or f.name.removeprefix("client_") in connect_fields


def test_the_config_section_takes_mode_as_octal_text_and_checks_every_field() -> None:
    assert ShmSettings(mode="0660").serve_options()["mode"] == 0o660
    with pytest.raises(ValueError, match=r'mode must be octal permission bits such as "0660", not \'rw\''):
        ShmSettings(mode="rw")
    with pytest.raises(ValueError, match=r"mode must be permission bits .* not 0o1644"):
        ShmSettings(mode="1644")  # the sticky bit: not a permission of these objects
    with pytest.raises(ValueError, match=r"client_spin_us must be an integer 0..1_000_000 µs, not -5"):
        ShmSettings(client_spin_us=-5)
    with pytest.raises(ValueError, match=r"cuda_cache_bytes must be an integer 0..281_474_976_710_656 bytes"):
        ShmSettings(cuda_cache_bytes=-1)
    assert ShmSettings(cuda_cache_bytes=0).serve_options()["cuda_cache_bytes"] == 0  # none kept
