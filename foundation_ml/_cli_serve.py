"""``foundation serve``: load models, serve them until a stop signal, drain and release."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli import parse_model_arg
from ._plugin import DEMO_MODEL, DEMO_SPEC

if TYPE_CHECKING:
    from foundation_core import Hub

    from ._runtime import MLRuntime

__all__ = ["serve_main"]


def serve_main(args: argparse.Namespace, hub: Hub) -> int:
    hub.configure(args.config, args.set)
    problem = _serve_problem(args, hub)
    if problem:
        print(f"foundation serve: error: {problem}", file=sys.stderr)
        return 2
    with _StartupSignals() as signals:
        try:
            return _serve(args, hub, signals)
        except _Stopped as exc:  # nothing was served: say so, and exit as the signal would
            name = signal.Signals(exc.signum).name
            print(
                f"foundation serve: stopped by {name} while loading models (nothing was served)",
                file=sys.stderr,
            )
            return 128 + exc.signum


class _Stopped(KeyboardInterrupt):
    """A stop signal arrived while ``serve`` loaded its models: raised by ``_StartupSignals`` in
    the main thread. A KeyboardInterrupt, so that a model's load or warm-up lets it through
    (``is_ctrl_c``) and whatever was loaded is released on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StartupSignals:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT stop ``serve`` cleanly before it serves (``_Stopped``); once
    ``serving()`` is called the runtime's own handlers drain instead, and a signal after they are
    gone (the runtime is closing) is ignored, so that the release is not cut short."""

    def __init__(self) -> None:
        self.loading = True
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StartupSignals:
        from ._serve_until import STOP_SIGNALS

        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.loading:
            self.loading = False  # once: the clean-up on the way out is not interrupted again
            raise _Stopped(signum)

    def serving(self) -> None:
        self.loading = False

    def __exit__(self, *exc: object) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def _serve(args: argparse.Namespace, hub: Hub, signals: _StartupSignals) -> int:
    from ._runtime import MLRuntime

    hub.startup()
    try:
        runtime = MLRuntime(
            hub, device=args.device, max_batch_size=args.max_batch_size, max_wait_us=args.max_wait_us
        )
        try:
            status = _load_models(runtime, args)
            if status is None:
                status = _serve_loaded(runtime, args, signals)
            if status:
                return status
        finally:
            runtime.close()
        if runtime.abandoned:  # the runtime logged why (a drain timeout, a second signal)
            _say(f"stopped: abandoned {runtime.abandoned} in-flight request(s); released the transport")
        else:
            _say("stopped: drained in-flight requests and released the transport")
        return 0
    finally:
        hub.shutdown()


def _load_models(runtime: MLRuntime, args: argparse.Namespace) -> int | None:
    """Register every ``--model`` (the demo when none is given), a line for each; the exit
    status when one cannot be (2: bad input; a model that fails raises), else None."""
    from ._package import is_package, read_manifest
    from .errors import PackageError

    models = [parse_model_arg(m) for m in args.model] or [(DEMO_MODEL, DEMO_SPEC)]
    options: dict[str, Any] = {"threads": args.threads} if args.threads else {}  # 0: torch's
    for name, spec in models:
        if name is None and not is_package(spec):
            missing = _looks_like_a_path(spec) and not Path(spec).exists()
            what = "no such model package" if missing else "write NAME=SPEC"
            if not missing and "=" in spec:  # my:model=SPEC: a NAME of that shape reads as a spec
                what += " (a NAME holds no '/' or ':')"
            print(f"foundation serve: --model {spec!r}: {what}", file=sys.stderr)
            return 2
        try:
            if name is None:
                name = str(read_manifest(spec)["name"])
            meta = runtime.register_model(name, spec, **options)
        except PackageError as exc:  # a bad package is bad input (a model that fails: exit 1)
            print(f"foundation serve: error: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:  # a name no transport can carry (ModelLoadError: not this)
            print(f"foundation serve: --model {name}={spec}: {exc}", file=sys.stderr)
            return 2
        batching = runtime.metadata(name)["batching"]
        how = f", batching up to {batching['max_batch_size']}" if batching["enabled"] else ""
        _say(f"loaded {name} v{meta.versions[-1]} ({meta.platform}{how}): {meta.signature()}")
    return None


def _serve_loaded(runtime: MLRuntime, args: argparse.Namespace, signals: _StartupSignals) -> int:
    """Serve the loaded models until a stop signal; the exit status (0: stopped, 2: an option the
    transport refuses, 1: the transport could not serve or its serving loop died)."""
    from .errors import InternalError

    def ready() -> None:
        signals.serving()
        names = ", ".join(runtime.registry.names())
        _say(f"ready: serving {names} on {args.transport} as {args.name!r}; stop with Ctrl-C or SIGTERM")

    try:
        runtime.serve(args.transport, args.name, ready=ready, metrics_file=args.metrics_file)
    except ValueError as exc:  # an option the transport refuses
        print(f"foundation serve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the name is taken by a live server; the metrics file went away
        print(f"foundation serve: error: {exc}", file=sys.stderr)
        return 1
    except InternalError as exc:  # the transport's serving loop died: exit, to be restarted
        print(f"foundation serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _say(line: str) -> None:
    """Print one of ``serve``'s progress lines, flushed; a reader that went away (``foundation
    serve | head -1``) is no error: stdout goes to /dev/null, and the server serves and stops on."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):  # no file descriptor (captured): nothing to do
            pass


def _serve_problem(args: argparse.Namespace, hub: Hub) -> str:
    """What makes these ``serve`` arguments unusable, found before any model loads ("" if none):
    no such transport, a name it refuses (``a/b`` for shm), a metrics file that cannot be written."""
    from foundation_core.errors import NotRegisteredError

    try:
        hub.transports.get(args.transport)().check_address(args.name)
    except (NotRegisteredError, ValueError) as exc:
        return str(exc)
    if args.metrics_file == "":  # not taken as "no metrics file": say so
        return "--metrics-file '': name a file"
    if args.metrics_file:
        from ._metrics_file import metrics_target

        try:
            path, _ = metrics_target(args.metrics_file)
        except OSError as exc:  # a directory, a device, a FIFO: never renamed over
            return f"--metrics-file {args.metrics_file}: {exc.strerror or exc}"
        try:  # the file is written beside it, then renamed: probe with such a file (no user file touched)
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"--metrics-file {args.metrics_file}: cannot write it: {exc.strerror or exc}"
    return ""


def _looks_like_a_path(spec: str) -> bool:
    return "/" in spec or spec.endswith((".zip", ".pt", ".pt2", ".ts", ".torchscript", ".jit", ".json"))
