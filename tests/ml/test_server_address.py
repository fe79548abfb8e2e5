"""A transport server need only have ``stop()``: the runtime remembers the address it started
each one under (``foundation serve`` crashed at SIGTERM with ``AttributeError: 'X' object has no
attribute 'address'`` for a third-party server written from docs/transports.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import foundation_core
from foundation_core import Hub, hookimpl
from foundation_ml import MLRuntime, Transport
from foundation_ml import _plugin as ml_plugin
from foundation_ml._inproc import InprocTransport
from foundation_ml._server_info import failed_server
from foundation_ml._transport import RequestHandler, TransportClient, TransportServer

from .conftest import unique_name


class BareServer(TransportServer):
    """A server with nothing but ``stop()`` (no ``address``), over an inproc one."""

    def __init__(self, inner: TransportServer) -> None:
        self._inner = inner

    def stop(self, drain_timeout: float = 5.0) -> None:
        self._inner.stop(drain_timeout)


class BareTransport(Transport):
    name = "bare"

    def serve(self, address: str, handler: RequestHandler, **options: Any) -> TransportServer:
        return BareServer(InprocTransport().serve(address, handler, **options))

    def connect(self, address: str, **options: Any) -> TransportClient:
        return InprocTransport().connect(address, **options)


class Plugin:
    def __init__(self) -> None:
        self.stopped: list[tuple[str, str, str]] = []

    @hookimpl
    def foundation_register_transports(self, register: Any) -> None:
        register("bare", BareTransport)

    @hookimpl
    def foundation_on_server_stop(self, name: str, transport: str, reason: str) -> None:
        self.stopped.append((name, transport, reason))


@pytest.fixture
def plugin() -> Plugin:
    return Plugin()


@pytest.fixture
def bare_hub(plugin: Plugin) -> Iterator[Hub]:
    with foundation_core.start(plugins=[ml_plugin, plugin], entry_points=False) as h:
        yield h


def test_a_server_without_address_closes_and_is_named(bare_hub: Hub, plugin: Plugin) -> None:
    runtime = MLRuntime(bare_hub)
    name = unique_name()
    server = runtime.start("bare", name)
    assert not hasattr(server, "address")
    runtime.close()
    assert plugin.stopped == [(name, "bare", "closed")]
    assert runtime.addresses == {}


def test_a_failed_server_without_address_is_named(bare_hub: Hub) -> None:
    runtime = MLRuntime(bare_hub)
    name = unique_name()
    server = runtime.start("bare", name)
    try:
        server.failed = RuntimeError("its loop died")  # type: ignore[attr-defined]
        assert failed_server(runtime.servers, runtime.addresses) == (
            f"the bare server {name!r} failed: RuntimeError: its loop died"
        )
    finally:
        runtime.close()
