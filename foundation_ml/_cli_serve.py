"""``foundation serve``: load models, serve them until a stop signal, drain and release."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli import check_cross_process, parse_model_arg
from ._plugin import DEMO_MODEL, DEMO_SPEC

if TYPE_CHECKING:
    from foundation_core import Hub

    from ._runtime import MLRuntime

__all__ = ["serve_main"]


def serve_main(args: argparse.Namespace, hub: Hub) -> int:
    hub.configure(args.config, args.set)
    try:
        _check_options(args, hub)
        models = _models_to_load(args, hub)
    except _Refused as exc:
        print(f"foundation serve: error: {exc}", file=sys.stderr)
        return 2
    with _StartupSignals() as signals:
        try:
            return _serve(args, hub, signals, models)
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


def _serve(
    args: argparse.Namespace, hub: Hub, signals: _StartupSignals, models: list[tuple[str, str]]
) -> int:
    from ._runtime import MLRuntime
    from ._transport import make_transport

    try:  # a name a live server holds: said before any model loads (serve itself says it too)
        make_transport(hub, args.transport).check_serve(args.name)
    except (OSError, ValueError) as exc:  # exit as serve would: 1 for a taken name, 2 a bad one
        print(f"foundation serve: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    hub.startup()
    try:
        runtime = MLRuntime(
            hub,
            device=args.device,
            max_batch_size=args.max_batch_size or 1,  # not given: off
            max_wait_us=500 if args.max_wait_us is None else args.max_wait_us,  # MLRuntime's default
        )
        try:
            status = _load_models(runtime, models, args.threads, args.warmup, args.backend)
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


def _load_models(
    runtime: MLRuntime,
    models: list[tuple[str, str]],
    threads: int,
    warmup: bool = True,
    backend: str | None = None,
) -> int | None:
    """Register each ``(name, spec)`` (checked by ``_models_to_load``), a line for each; the exit
    status when one cannot be (2: bad input found only now, a package failing its checksum; a
    model that fails raises), else None. ``warmup``: run each on its example input first
    (``--no-warmup``: not). ``backend`` (``--backend``) loads each SPEC that is no package.
    ``threads`` (``--threads``, torch's intra-op width) goes to the models torch loads only: another
    backend need not take a ``threads=`` option."""
    from ._package import is_package, read_manifest
    from .errors import PackageError

    options: dict[str, Any] = {"threads": threads} if threads else {}  # 0: torch's
    for name, spec in models:
        packaged = is_package(spec)
        chosen = backend if backend and not packaged else None  # a package names its own
        try:
            loader = str(read_manifest(spec)["backend"]) if packaged else backend or "torch"
        except PackageError:  # read when checked; changed since: register_model says how
            loader = "torch"
        try:
            meta = runtime.register_model(
                name, spec, backend=chosen, warmup=warmup, **(options if loader == "torch" else {})
            )
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


class _Refused(Exception):
    """An argument ``serve`` cannot use, found before any model loads: exit 2 with this message."""


_DEVICE = re.compile(r"(cpu|cuda)(:[0-9]+)?", re.ASCII)


def _check_options(args: argparse.Namespace, hub: Hub) -> None:
    """Refuse (``_Refused``) ``serve`` options that cannot work, before any model loads: no such
    transport, one no other process reaches (inproc), a name it refuses (``a/b`` for shm),
    ``--max-wait-us`` without batching, a device that is neither cpu nor cuda:N, a metrics file
    that cannot be written."""
    from foundation_core.errors import NotRegisteredError

    from ._transport import make_transport

    try:
        check_cross_process(hub, args.transport, "serve")
        make_transport(hub, args.transport).check_address(args.name)
    except (NotRegisteredError, ValueError) as exc:
        raise _Refused(exc) from None
    if args.max_wait_us is not None and args.max_batch_size is None:  # batching is off: no wait
        raise _Refused(
            f"--max-wait-us {args.max_wait_us} without --max-batch-size: batching is off unless "
            "--max-batch-size N (N >= 2) turns it on, so nothing would wait; add --max-batch-size"
        )
    if not _DEVICE.fullmatch(args.device):  # whether CUDA is there, torch says when loading
        raise _Refused(f"--device {args.device!r}: use cpu or cuda:N")
    if args.metrics_file == "":  # not taken as "no metrics file": say so
        raise _Refused("--metrics-file '': name a file")
    if args.metrics_file:
        from ._metrics_file import metrics_problem

        why = metrics_problem(args.metrics_file)  # a directory, a device, a FIFO, an unwritable place
        if why:
            raise _Refused(f"--metrics-file {args.metrics_file}: {why}")


def _models_to_load(args: argparse.Namespace, hub: Hub) -> list[tuple[str, str]]:
    """``(name, spec)`` of every ``--model`` (the demo when none is given), each checked before
    any loads (``_Refused`` naming the argument): the ``NAME=SPEC`` form, the name, a package's
    manifest, that a model file exists or a factory reference has its form, and that no two
    serve the same name and version (a package's manifest names its version, any other spec is
    version 1), which the second would otherwise find out only once the first had loaded."""
    from ._names import check_name

    if args.backend is not None and args.backend not in hub.model_backends:
        registered = ", ".join(hub.model_backends.names()) or "none"
        raise _Refused(f"--backend {args.backend!r} is not registered (registered: {registered})")
    if not args.model:
        if args.backend not in (None, "torch"):  # the demo is a torch module
            raise _Refused(f"--backend {args.backend}: give the --model it loads (the demo is torch's)")
        return [(DEMO_MODEL, DEMO_SPEC)]
    models: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], str] = {}
    for text in args.model:
        try:
            name, spec, version = _model_arg(text, hub, args.backend)
        except OSError as exc:  # a name too long for the file system, say
            raise _Refused(f"--model {text}: {exc.strerror or exc}") from None
        try:
            check_name(name, "the model name")
        except ValueError as exc:
            raise _Refused(f"--model {text}: {exc}") from None
        if (name, version) in seen:
            raise _Refused(
                f"--model {text}: model {name!r} version {version!r} is already given by --model "
                f"{seen[name, version]}; a name and version is served once (a package's manifest "
                "names its version)"
            )
        seen[name, version] = text
        models.append((name, spec))
    return models


def _model_arg(text: str, hub: Hub, backend: str | None = None) -> tuple[str, str, str]:
    """The name, spec and version one ``--model`` serves, its form and spec checked (``_Refused``):
    a file or factory SPEC as torch takes them, or, for another ``backend``, only that a path
    exists (that backend judges the rest when it loads)."""
    from foundation_core._registry import check_ref

    from ._package import is_package, is_zip_name, read_manifest
    from .errors import PackageError

    name, spec = parse_model_arg(text)
    if name is not None and not spec:  # Path("") is ".": the working directory
        raise _Refused(f"--model {text}: the SPEC after '=' is empty")
    if is_package(spec):
        try:
            manifest = read_manifest(spec)
        except PackageError as exc:
            raise _Refused(exc) from None
        backend = str(manifest["backend"])
        if backend not in hub.model_backends:
            registered = ", ".join(hub.model_backends.names()) or "none"
            raise _Refused(
                f"--model {text}: its manifest names backend {backend!r}, which is not registered "
                f"(registered: {registered})"
            )
        return name or str(manifest["name"]), spec, str(manifest["version"])
    if name is None:
        if Path(spec).is_dir():  # meant as a package (a NAME= would not make it one)
            raise _Refused(
                f"--model {text!r}: {spec!r} is a directory without manifest.json, not a model package"
            )
        missing = _looks_like_a_path(spec) and not Path(spec).exists()
        what = "no such model package" if missing else "write NAME=SPEC"
        if missing and spec.lower().endswith(_MODEL_FILES):  # a file meant, not a package
            what = f"no such model file (and a model file needs a name: --model NAME={spec})"
        if text.startswith("="):
            what += " (the NAME before '=' is empty)"
        elif not missing and "=" in spec:  # my:model=SPEC: a NAME of that shape reads as a spec
            what += " (a NAME holds no '/' or ':')"
        raise _Refused(f"--model {text!r}: {what}")
    path = Path(spec)
    if backend not in (None, "torch"):
        if _looks_like_a_path(spec, any_suffix=True) and not path.exists():
            raise _Refused(f"--model {text}: no such model file {spec!r}")
        return name, spec, "1"
    if path.suffix.lower() in _MODEL_FILES or is_zip_name(path):
        if not path.is_file():
            what = "package" if is_zip_name(path) else "file"
            raise _Refused(f"--model {text}: no such model {what} {spec!r}")
    elif path.is_dir():
        raise _Refused(f"--model {text}: {spec!r} is a directory without manifest.json, not a model package")
    else:
        try:
            check_ref(spec)
        except ValueError:
            raise _Refused(
                f"--model {text}: {spec!r} is neither a model file ({', '.join(_MODEL_FILES)}), a model "
                "package nor a factory reference 'pkg.module:build'"
            ) from None
    return name, spec, "1"  # register_model's version for a model that names none


_MODEL_FILES = (".pt", ".ts", ".torchscript", ".jit", ".pt2")  # torch loads these as files


def _looks_like_a_path(spec: str, *, any_suffix: bool = False) -> bool:
    from ._package import is_zip_name

    # a package's .zip and a model file's suffix in any case, as the backends read them; for a
    # backend other than torch, any name with a suffix and no ':' (a factory has one)
    if any_suffix and ":" not in spec and Path(spec).suffix:
        return True
    return "/" in spec or is_zip_name(Path(spec)) or spec.lower().endswith((*_MODEL_FILES, ".json"))
