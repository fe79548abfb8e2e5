"""One model object is served once: a model held, unloading or closing, here or elsewhere, is refused."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from foundation_ml import MLRuntime, ModelLoadError

from ._runtime_support import _CountsCloses, _OneAtATime, _registering, _request
from .conftest import Replies, unique_name


def test_a_model_being_unloaded_is_not_registered_again_under_it(runtime: MLRuntime) -> None:
    """Registered as 'b' while its unload as 'a' waited for a call, its warm-up ran beside that
    call and the unload then closed it under 'b'."""
    model = _OneAtATime(gate=True)
    with _unloading_during_a_call(runtime, model):
        with pytest.raises(ModelLoadError, match="is being unloaded as 'a' version '1', which closes it"):
            runtime.register_model("b", model)
    assert model.calls == 1 and runtime.registry.names() == []


def test_a_model_whose_unload_timed_out_is_not_registered_again_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """An unload whose drain timed out with a call still running returns, and that call closes the
    model when it returns. Registered as 'b' in between, the model was accepted, and the late
    close of 'a' then closed it under 'b'. It stays claimed until that close has happened."""
    closes: list[str] = []

    class Model(_OneAtATime):
        def close(self) -> None:
            closes.append(",".join(runtime.registry.names()))

    model = Model(gate=True)
    runtime.register_model("a", model, warmup=False)
    replies = Replies()
    calling = threading.Thread(target=runtime, args=(_request(1), replies.respond(1)))
    calling.start()
    try:
        assert model.entered.wait(60), "the call never began"
        runtime.unload_model("a", drain_timeout=0.05)  # returns with the call still running
        with pytest.raises(ModelLoadError, match="unloaded as 'a' version '1' while a call") as info:
            runtime.register_model("b", model, warmup=False)
        assert info.value.model == "b"
        assert runtime.registry.names() == [] and closes == []
    finally:
        model.release.set()
        calling.join(60)
    assert closes == [""]  # closed once its call returned, serving nothing
    runtime.register_model("b", model)  # and free from then on
    assert runtime.registry.names() == ["b"] and closes == [""]


def test_a_model_still_closing_in_another_runtime_is_not_registered_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """Claims were kept per runtime: a model whose unload in runtime 'first' timed out with a call
    still running was accepted by another runtime, and the late close of 'a' in 'first' then
    closed it under that runtime's 'b'. It is refused, naming the other runtime, until then."""
    closes: list[str] = []

    class Model(_OneAtATime):
        def close(self) -> None:
            closes.append(",".join(runtime.registry.names()))

    model = Model(gate=True)
    first = MLRuntime(runtime.hub, name="first")
    try:
        first.register_model("a", model, warmup=False)
        calling = threading.Thread(target=first, args=(_request(1), Replies().respond(1)))
        calling.start()
        try:
            assert model.entered.wait(60), "the call never began"
            first.unload_model("a", drain_timeout=0.05)  # returns with the call still running
            with pytest.raises(ModelLoadError) as info:
                runtime.register_model("b", model, warmup=False)
            assert info.value.model == "b"
            assert info.value.message == (
                "this Model was unloaded as 'a' version '1' in another MLRuntime, 'first', while a "
                "call of it still ran, and is closed when that call returns; pass a model of its "
                "own to each name and version"
            )
            assert runtime.registry.names() == [] and closes == []
        finally:
            model.release.set()
            calling.join(60)
        assert closes == [""]  # closed once its call returned, serving nothing
        runtime.register_model("b", model)  # and free from then on
        assert runtime.registry.names() == ["b"] and closes == [""]
    finally:
        first.close()


@pytest.mark.parametrize("state", ["served", "being registered", "unnamed"])
def test_a_model_another_runtime_holds_is_refused_naming_that_runtime(runtime: MLRuntime, state: str) -> None:
    """Served (or being registered) by one runtime, a model was accepted by another: unloading it
    in either closed it under the other."""
    model = _OneAtATime(gate=state == "being registered")
    first = MLRuntime(runtime.hub, name="" if state == "unnamed" else "first")
    registering = None
    try:
        if state == "being registered":
            registering, failed = _registering(first, "a", model)
            assert model.entered.wait(60), "the first registration never warmed the model up"
        else:
            first.register_model("a", model, max_batch_size=2)
        calls = model.calls
        runtime.name = "second"
        with pytest.raises(ModelLoadError) as info:
            runtime.register_model("b", model)
        where = "another MLRuntime (unnamed)" if state == "unnamed" else "another MLRuntime, 'first',"
        says = "is being registered" if state == "being registered" else "is already served"
        assert info.value.message.startswith(f"this _OneAtATime {says} as 'a' version '1' by {where}")
        assert info.value.model == "b" and model.calls == calls  # refused before its warm-up
        if registering is not None:
            model.release.set()
            registering.join(60)
            assert not failed
        first.unload_model("a")
        runtime.register_model("b", model)  # free once the other runtime let go of it
        assert runtime.registry.names() == ["b"]
    finally:
        model.release.set()
        if registering is not None:
            registering.join(60)
        first.close()


def test_a_model_of_a_runtime_dropped_without_close_is_registered_in_another(runtime: MLRuntime) -> None:
    """A runtime dropped without close() (garbage collected) can unload nothing, so it closes none
    of its models; yet a batched one, which its batcher thread kept alive, was refused by every
    other runtime for good ('already served ... by another MLRuntime (unnamed) which closes it
    when it is unloaded'), where it was accepted before the runtimes shared their claims. It is
    accepted, and closed once, by the runtime that serves it now."""
    model = _CountsCloses()
    name = unique_name("dropped")
    first = MLRuntime(runtime.hub, name="first")
    first.register_model(name, model, max_batch_size=2, warmup=False)
    batcher = first.registry.get(name, "1").batcher
    assert batcher is not None
    gone = weakref.ref(first)
    del first
    gc.collect()
    try:
        assert gone() is None, "the runtime was not collected"
        runtime.register_model("b", model, warmup=False)
        assert runtime.registry.names() == ["b"] and model.closed == 0
        runtime.unload_model("b")
        assert model.closed == 1
    finally:
        batcher.stop(0.0)  # the dropped runtime's thread, left running by it


def test_a_model_closing_in_a_runtime_dropped_since_is_not_registered_until_its_late_close(
    runtime: MLRuntime,
) -> None:
    """A runtime dropped after an unload whose drain timed out with a call still running: that
    call's return closes the model all the same, so it is refused until then (the test above
    must not free it)."""

    class Model(_OneAtATime):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    model = Model(gate=True)
    first = MLRuntime(runtime.hub, name="first")
    first.register_model("a", model, warmup=False)
    served = first.registry.get("a", "1")
    respond = Replies().respond(1)
    calling = threading.Thread(target=served.submit, args=(_request(1), respond, time.monotonic_ns()))
    calling.start()
    try:
        assert model.entered.wait(60), "the call never began"
        first.unload_model("a", drain_timeout=0.05)  # returns with the call still running
        gone = weakref.ref(first)
        del first
        gc.collect()
        assert gone() is None, "the runtime was not collected"
        with pytest.raises(ModelLoadError, match=r"was unloaded as 'a' version '1' in another MLRuntime"):
            runtime.register_model("b", model, warmup=False)
        assert runtime.registry.names() == [] and model.closed == 0
    finally:
        model.release.set()
        calling.join(60)
    assert model.closed == 1  # closed once its call returned
    runtime.register_model("b", model, warmup=False)  # and free from then on
    assert runtime.registry.names() == ["b"]


def test_a_forked_child_registers_a_model_its_parents_runtime_serves() -> None:
    """Claims are shared by the runtimes of a process, and a forked child (a preforking server's
    worker, multiprocessing's 'fork') inherited its parent's: a model object the parent's runtime
    served was refused in the child ('already served ... by another MLRuntime, 'parent''), though
    that runtime is the parent's, left serving there, and closes nothing in the child; and a
    parent thread holding the claims' lock at the fork (a registration under way) left it held in
    the child, whose first register_model then hung for ever. Each child registers it."""
    code = """
        import os, signal, threading, traceback
        import foundation_core
        from foundation_ml import FunctionModel, MLRuntime
        from foundation_ml import _claims, _plugin

        hub = foundation_core.start(plugins=[_plugin], entry_points=False)
        model = FunctionModel(lambda x: {"y": x}, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        parent = MLRuntime(hub, name="parent")
        parent.register_model("a", model, warmup=False)

        def child():  # never returns: any error is its exit status
            signal.alarm(30)  # a register_model that hangs ends the child (SIGALRM)
            status = 1
            try:
                runtime = MLRuntime(hub, name="child")
                runtime.register_model("b", model, warmup=False)
                status = 0 if runtime.registry.names() == ["b"] else 3
                runtime.close()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)

        codes = []
        for held in (False, True):
            held_now, release = threading.Event(), threading.Event()

            def hold():  # another thread of the parent's, in a claim as the fork comes
                with _claims._HELD_LOCK:
                    held_now.set()
                    release.wait()

            holder = threading.Thread(target=hold)
            if held:
                holder.start()
                held_now.wait()
            pid = os.fork()
            if pid == 0:
                child()
            release.set()
            if held:
                holder.join()
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        print("children exited", codes)
        parent.close()
        hub.shutdown()
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "children exited [0, 0]", (done.stdout, done.stderr[-2000:])


def test_close_waits_for_a_model_another_thread_is_unloading(runtime: MLRuntime) -> None:
    """close() found the model already out of the registry (another thread's unload_model was
    waiting for its call) and returned with it still open; it was closed later, when that unload
    finished. close() waits for it, and that unload's drain ends by close's deadline."""
    closed = threading.Event()

    class Model(_OneAtATime):
        def close(self) -> None:
            closed.set()

    model = Model(gate=True)
    with _unloading_during_a_call(runtime, model):
        threading.Timer(0.2, model.release.set).start()  # the call returns within close's drain
        runtime.close(drain_timeout=60)
        assert closed.is_set(), "close returned with the model still open"
    started = time.monotonic()
    with MLRuntime(runtime.hub) as rt:  # the other unload's drain ends by close's deadline
        with _unloading_during_a_call(rt, Model(gate=True)) as unloading:
            rt.close(drain_timeout=0.1)
            assert not unloading.is_alive() and time.monotonic() - started < 30


@contextlib.contextmanager
def _unloading_during_a_call(runtime: MLRuntime, model: _OneAtATime) -> Iterator[threading.Thread]:
    """``model`` registered as 'a', a call of it held at its gate, and another thread's
    ``unload_model("a")`` (yielded) waiting for that call; on leaving, the gate opens and both
    threads are joined."""
    runtime.register_model("a", model, warmup=False)
    replies = Replies()
    calling = threading.Thread(target=runtime, args=(_request(1), replies.respond(1)))
    calling.start()
    unloading = threading.Thread(target=runtime.unload_model, args=("a",), kwargs={"drain_timeout": 60})
    try:
        assert model.entered.wait(60), "the call never began"
        unloading.start()
        deadline = time.monotonic() + 60
        while not runtime._unloading and time.monotonic() < deadline:  # the unload waits for the call
            time.sleep(0.001)
        yield unloading
    finally:
        model.release.set()
        calling.join(60)
        if unloading.ident is not None:
            unloading.join(60)
