"""What one check of the transport kit started (recorders, clients, servers and runtimes, the
threads its calls run in), ended however the check ends: ``clean_up`` after each check ends
what the check did not, and says what went wrong doing so. And what a failed expectation raises
(``_expect``: ``_Fail``; ``_names_call``: an error that does not name its call)."""

from __future__ import annotations

import concurrent.futures.thread
import enum
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

from ..errors import InferenceError

__all__ = ["Phase", "_Fail", "_Owned", "_expect", "_names_call", "_raised"]


class _Fail(Exception):
    pass


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _Fail(what)


def _raised(what: str, exc: BaseException) -> str:
    return f"{what} raised {type(exc).__name__}: {exc}"


class Phase(enum.IntEnum):
    """The order clean-up ends things in: hung requests answered before clients close, clients
    closed before their servers stop."""

    RELEASE = 0
    CLOSE = 1
    STOP = 2


class _Owned:
    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._lock = threading.Lock()
        # id(thing) -> (phase, what ending it is, end, the thing: held, so its id stays its own)
        self._open: dict[int, tuple[Phase, str, Callable[[], Any], object]] = {}
        self._threads: list[threading.Thread] = []

    def add(self, thing: object, phase: Phase, what: str, end: Callable[[], Any]) -> None:
        """``thing`` was started: ``end()`` ends it at clean-up unless ``ended`` says it was."""
        with self._lock:
            self._open[id(thing)] = (phase, what, end, thing)

    def ended(self, thing: object) -> None:
        """The check ended ``thing`` itself (its stop or close returned, or raised: not tried
        again)."""
        with self._lock:
            self._open.pop(id(thing), None)

    def thread(self, target: Callable[..., Any], *args: Any) -> threading.Thread:
        """A daemon thread running ``target(*args)``, started now and joined at clean-up."""
        thread = threading.Thread(target=target, args=args, name="foundation-kit", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def call(self, fn: Callable[[], Any], what: str, wait: float) -> Any:
        """Run ``fn`` in a thread; a call still running after ``wait`` s is a failure (it hung),
        as is one that raised what is no ``Exception`` there (a transport's ``SystemExit``): an
        interrupt while this thread waits (Ctrl-C) is this thread's own, and goes on up."""
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(("ok", fn()))
            except BaseException as exc:
                box.append(("err", exc))

        thread = self.thread(run)
        thread.join(wait)
        _expect(not thread.is_alive(), f"{what} had not returned after {wait:g} s")
        kind, value = box[0]
        if kind == "err":
            raise value if isinstance(value, Exception) else _Fail(_raised(what, value))
        return value

    def clean_up(self, before: Collection[threading.Thread] = ()) -> list[str]:
        """End what is still open (recorders released, clients closed, servers stopped, each
        given ``patience`` s), then join every thread started (``patience`` s for them all), the
        kit's and any other not in ``before`` (the threads running when the check began: those
        a transport's servers and clients started must end once they are stopped and closed);
        returns what went wrong, one line each."""
        problems: list[str] = []
        self._end_open(problems)
        end = time.monotonic() + self.patience
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._end_open(problems)  # what a call returned while it was joined (a late connect's client)
        with self._lock:  # (the threads that ended it: joined, or already named as hung)
            threads, self._threads = threads + self._threads, []
        running = sum(thread.is_alive() for thread in threads)
        if running:
            problems.append(f"{running} thread(s) of the kit's calls still running after clean-up")
        else:  # (a call still running may hold threads of the transport's: named above)
            lingering = _lingering({*before, *threads}, end)
            if lingering:
                names = Counter(thread.name for thread in lingering)
                listed = ", ".join(
                    f"{name!r}" + (f" x{n}" if n > 1 else "") for name, n in sorted(names.items())
                )
                problems.append(
                    f"{len(lingering)} thread(s) started during the check still running after its clients"
                    f" were closed and its servers stopped (waited {self.patience:g} s): {listed};"
                    " close() and stop() must end the threads they started"
                )
        return problems

    def _end_open(self, problems: list[str]) -> None:
        with self._lock:
            # by phase; within one, the latest started first
            left = sorted(reversed(self._open.values()), key=lambda item: item[0])
            self._open.clear()
        for _, what, end, _ in left:
            try:
                self.call(end, what, self.patience)
            except Exception as exc:  # noted, and the rest still ended
                problems.append(str(exc) if isinstance(exc, _Fail) else _raised(what, exc))


def _lingering(known: set[threading.Thread], end: float) -> list[threading.Thread]:
    """The threads running now and not in ``known``, each given until ``end`` (monotonic) to end.
    A thread of another language's that called into Python (``threading._DummyThread``) is not
    counted: it never ends as far as ``threading`` knows. Nor is a worker of a
    ``concurrent.futures`` thread pool: a pool kept for the process (the timeout pattern's, used
    by a client) starts workers as calls come, during any check, and keeps them idle on purpose."""
    dummy = getattr(threading, "_DummyThread", ())
    left: list[threading.Thread] = []
    for _ in range(2):  # again: a thread ending may have started another
        left = [
            t
            for t in threading.enumerate()
            if t not in known and not isinstance(t, dummy) and not _pool_worker(t)
        ]
        for thread in left:
            thread.join(max(0.0, end - time.monotonic()))
    return [thread for thread in left if thread.is_alive()]


def _pool_worker(thread: threading.Thread) -> bool:
    """Whether ``thread`` is a worker of a ``concurrent.futures.ThreadPoolExecutor`` (CPython runs
    each on ``concurrent.futures.thread._worker``; ``_target`` is ``Thread``'s own attribute)."""
    return getattr(thread, "_target", None) is getattr(concurrent.futures.thread, "_worker", ())


def _names_call(exc: BaseException, model: str, rid: int | None, what: str) -> None:
    """``exc`` names the call: its ``model``, its ``request_id`` (``rid``; None: not asked), and
    ``str()`` starting with ``model 'NAME': ``."""
    assert isinstance(exc, InferenceError)
    named = (exc.model, exc.request_id) if rid is not None else (exc.model,)
    call = (model, rid) if rid is not None else (model,)
    _expect(
        named == call,
        f"{what}: {type(exc).__name__}({str(exc)!r:.120}) names model {exc.model!r} and request id"
        f" {exc.request_id}, not the call's ({model!r}{'' if rid is None else f', {rid}'})",
    )
    _expect(
        str(exc).startswith(f"model {model!r}: "),
        f"{what}: str() of its {type(exc).__name__} is {str(exc)!r:.120}, not starting with the call's"
        f" model {model!r}",
    )
