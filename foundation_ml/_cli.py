"""``foundation serve``, ``infer``, ``stats`` and ``package``: the runtime from the shell."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from foundation_core import Hub

    from ._client import InferenceClient
    from ._datatypes import DataType
    from ._types import TensorSpec

__all__ = ["infer_main", "package_main", "serve_main", "stats_main"]

from ._plugin import DEFAULT_NAME, DEMO_MODEL, DEMO_SPEC


def parse_model_arg(text: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` or a bare ``SPEC`` (a package: its manifest names it)."""
    name, sep, spec = text.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, spec
    return None, text


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
    """SIGINT, SIGTERM and SIGHUP stop ``serve`` cleanly before it serves (``_Stopped``); once
    ``serving()`` is called the runtime's own handlers drain instead, and a signal after they are
    gone (the runtime is closing) is ignored, so that the release is not cut short."""

    def __init__(self) -> None:
        self.loading = True
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StartupSignals:
        from ._runtime import STOP_SIGNALS

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
    from ._package import is_package, read_manifest
    from ._runtime import MLRuntime
    from .errors import InternalError, PackageError

    hub.startup()
    try:
        runtime = MLRuntime(
            hub, device=args.device, max_batch_size=args.max_batch_size, max_wait_us=args.max_wait_us
        )
        try:
            models = [parse_model_arg(m) for m in args.model] or [(DEMO_MODEL, DEMO_SPEC)]
            options: dict[str, Any] = {"threads": args.threads} if args.threads else {}  # 0: torch's
            for name, spec in models:
                if name is None and not is_package(spec):
                    missing = _looks_like_a_path(spec) and not Path(spec).exists()
                    what = "no such model package" if missing else "write NAME=SPEC"
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

            def ready() -> None:
                signals.serving()
                names = ", ".join(runtime.registry.names())
                _say(
                    f"ready: serving {names} on {args.transport} as {args.name!r}; "
                    "stop with Ctrl-C or SIGTERM"
                )

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
        finally:
            runtime.close()
        if runtime.abandoned:  # the runtime logged why (a drain timeout, a second signal)
            _say(f"stopped: abandoned {runtime.abandoned} in-flight request(s); released the transport")
        else:
            _say("stopped: drained in-flight requests and released the transport")
        return 0
    finally:
        hub.shutdown()


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


def _version_metadata(meta: dict[str, Any], model: str, version: str) -> dict[str, Any]:
    """The metadata with the signature of ``version`` (the latest's when empty, or when the server
    sends no per-version ``signatures``); a version the server does not have is ModelNotFound."""
    from .errors import ModelNotFound

    if not version or "signatures" not in meta:
        return meta
    signature = meta["signatures"].get(version)
    if signature is None:
        have = ", ".join(meta["signatures"])
        raise ModelNotFound(f"no version {version!r} (versions: {have})", model=model)
    return {**meta, **signature}


def _serve_problem(args: argparse.Namespace, hub: Hub) -> str:
    """What makes these ``serve`` arguments unusable, found before any model loads ("" if none):
    no such transport, a name it refuses (``a/b`` for shm), a metrics file that cannot be written."""
    from foundation_core.errors import NotRegisteredError

    try:
        hub.transports.get(args.transport)().check_address(args.name)
    except (NotRegisteredError, ValueError) as exc:
        return str(exc)
    if args.metrics_file:
        path = Path(args.metrics_file)
        if path.is_dir():
            return f"--metrics-file {args.metrics_file}: is a directory (name a file in it)"
        try:  # the file is written beside it, then renamed: probe with such a file (no user file touched)
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"--metrics-file {args.metrics_file}: cannot write it: {exc.strerror or exc}"
    return ""


def _looks_like_a_path(spec: str) -> bool:
    return "/" in spec or spec.endswith((".zip", ".pt", ".pt2", ".ts", ".json"))


def load_inputs(path: str | None, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inputs from ``.npz`` (one array per input), ``.npy`` (the only input) or ``.json``
    (``{"x": [[...]]}``, cast to the signature's dtypes); the example input without a file."""

    from ._signature import example_inputs, parse_signature

    specs = parse_signature(meta["inputs"])
    if path is None:
        try:
            return example_inputs(specs)
        except ValueError as exc:  # a signature whose example would be absurdly large
            raise SystemExit(f"foundation infer: no example input: {exc}; pass --input FILE") from None
    p = Path(path)
    if p.suffix not in (".npz", ".npy", ".json"):
        raise SystemExit(f"foundation infer: {p}: use a .npz, .npy or .json file")
    try:
        return _read_inputs(p, specs)
    # JSONDecodeError is a ValueError; a huge int is an OverflowError, an object where numbers
    # belong a TypeError, arrays nested thousands deep a RecursionError: all are a bad file
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, *_BAD_JSON) as exc:
        raise SystemExit(f"foundation infer: cannot read inputs from {p}: {exc}") from None


_BAD_JSON = (OverflowError, TypeError, RecursionError)


def _read_inputs(p: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    import numpy as np

    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if p.suffix == ".npy":
        if len(specs) != 1:
            raise SystemExit(f"foundation infer: {p} holds one array; the model takes {len(specs)} inputs")
        return {specs[0].name: np.load(p, allow_pickle=False)}
    doc = json.loads(p.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f'expected an object of named inputs ({{"x": [[...]]}}), not a {type(doc).__name__}')
    types = {s.name: s.datatype for s in specs}
    return {k: _json_array(k, v, types.get(k)) for k, v in doc.items()}


def _json_array(name: str, value: Any, datatype: DataType | None) -> np.ndarray:
    """A JSON input as an array of its datatype; a value the datatype cannot hold (1e40 for
    FP32, 300 for INT8) is a ValueError naming the input and the datatype's range, not an inf."""
    import numpy as np

    if datatype is None:  # not in the signature: the server names it
        return np.asarray(value)
    try:
        with np.errstate(over="raise", invalid="raise"):
            return np.asarray(value, dtype=datatype.numpy)
    except (FloatingPointError, OverflowError) as exc:
        dtype = datatype.numpy
        info: Any = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype) if dtype.kind in "iu" else None
        if info is None:
            raise
        raise ValueError(
            f"input {name}: a value is out of range for {datatype.name} ({info.min!s} to {info.max!s})"
        ) from exc


def _connect(args: argparse.Namespace, hub: Hub, command: str, **kw: Any) -> InferenceClient:
    """The client of ``args.name`` on ``args.transport``, with ``args.timeout`` if one was given; a
    name or option the transport refuses (``ValueError``: ``a/b`` for shm) ends the command with
    exit 2 and the transport's reason."""
    from ._client import InferenceClient

    if args.timeout is not None:  # else the client's default: the configured timeout, else 30 s
        kw["timeout"] = args.timeout
    try:
        return InferenceClient(args.name, transport=args.transport, hub=hub, **kw)
    except ValueError as exc:
        print(f"foundation {command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def infer_main(args: argparse.Namespace, hub: Hub) -> int:
    import numpy as np

    from .errors import InferenceError

    hub.configure(args.config, args.set)  # the transport's config section sets the client's options
    try:
        with _connect(args, hub, "infer") as client:
            meta = _version_metadata(client.metadata(args.model), args.model, args.version)
            inputs = load_inputs(args.input, meta)
            t0 = time.perf_counter()
            response = client.infer_response(args.model, inputs, version=args.version)
            elapsed_us = (time.perf_counter() - t0) * 1e6
    except InferenceError as exc:
        print(f"foundation infer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        doc = {
            "model": response.model,
            "version": response.version,
            "outputs": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype), "data": _json_data(v)}
                for k, v in response.outputs.items()
            },
            "latency_us": round(elapsed_us, 1),
        }
        print(json.dumps(doc, allow_nan=False))
        return 0
    with np.printoptions(precision=4, suppress=True, threshold=64):
        for k, v in response.outputs.items():
            print(f"{k}: {v.dtype}{list(v.shape)}\n{v}")
    print(
        f"latency: {elapsed_us:.0f} µs (one call over {args.transport}, "
        f"model {response.model} v{response.version})"
    )
    return 0


def _json_data(array: np.ndarray) -> Any:
    """``array.tolist()`` as strict JSON holds it: a NaN or an infinity (which ``json.dumps``
    would write as the bare ``NaN``/``Infinity`` that strict parsers refuse) becomes the string
    ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    import numpy as np

    data = array.tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _finite(data)
    return data


def _finite(data: Any) -> Any:
    if isinstance(data, list):
        return [_finite(x) for x in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else "Infinity" if data > 0 else "-Infinity"
    return data


def stats_main(args: argparse.Namespace, hub: Hub) -> int:
    from ._metrics import prometheus_text
    from .errors import InferenceError

    if args.name and args.name_option and args.name != args.name_option:
        print(
            f"foundation stats: two server names, {args.name!r} and --name {args.name_option!r}",
            file=sys.stderr,
        )
        return 2
    args.name = args.name or args.name_option or DEFAULT_NAME
    hub.configure(args.config, args.set)
    try:
        with _connect(args, hub, "stats") as client:
            doc = client.stats()
    except InferenceError as exc:
        print(f"foundation stats: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if args.prometheus:
        sys.stdout.write(prometheus_text(doc["models"], args.name))
        return 0
    server = doc.get("server", {})
    print(f"server {args.name!r} on {args.transport}: up {server.get('uptime_s', 0):.0f} s")
    rows: list[tuple[str, ...]] = [
        ("model", "version", "requests", "errors", "p50 µs", "p95 µs", "p99 µs", "batch", "queue")
    ]
    for name, top in doc.get("models", {}).items():
        for version, m in (top.get("versions") or {top.get("version", ""): top}).items():
            lat = m.get("latency_us") or {}
            rows.append(
                (
                    name,
                    str(version),
                    str(m["requests"]),
                    str(m["errors"]),
                    *(f"{lat.get(k, 0):.1f}" for k in ("p50", "p95", "p99")),
                    f"{m.get('mean_batch_size') or 0:.2f}",
                    str(m["queue_depth"]),
                )
            )
    print(_table(rows))
    return 0


def _table(rows: list[tuple[str, ...]]) -> str:
    """Columns sized to their widest cell, two spaces apart; the first left-aligned, the rest right
    (fixed widths ran a 1 s p95 into the p99 beside it, and a long model name shifted every column)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def package_main(args: argparse.Namespace, hub: Hub) -> int:
    from foundation_core._registry import check_ref
    from foundation_core.errors import NotRegisteredError

    from ._package import open_package
    from .errors import PackageError

    def usage(problem: str) -> int:
        print(f"foundation package: error: {problem}", file=sys.stderr)
        return 2

    try:
        backend = hub.model_backends.get(args.backend)()
    except NotRegisteredError as exc:
        return usage(f"--backend {args.backend}: {exc}")
    name, spec = parse_model_arg(args.model)
    name = args.name or name
    if not name:
        print("foundation package: name the model: --name NAME or --model NAME=SPEC", file=sys.stderr)
        return 2
    try:
        check_ref(spec)
    except ValueError:
        return usage(f"--model {args.model}: {spec!r} is not a factory reference 'pkg.module:build'")
    out = Path(args.out)
    if out.exists() or out.is_symlink():  # before the factory builds anything
        return usage(f"--out {out} already exists (it is never overwritten)")
    try:
        path = backend.package(spec, args.out, name=name, version=args.version)
    except (FileExistsError, NotImplementedError) as exc:  # --out appeared meanwhile; a backend that cannot
        return usage(str(exc))
    except ValueError as exc:  # a name or version no transport can carry; a signature a package cannot hold
        return usage(str(exc))
    except OSError as exc:  # nothing is left behind (write_package writes beside, then renames)
        print(f"foundation package: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        pkg = open_package(path)  # read it back: what we wrote verifies
    except PackageError as exc:
        print(f"foundation package: error: {path} was written but does not verify: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}: {pkg.name} v{pkg.version}, files {', '.join(['manifest.json', *pkg.files])}")
    return 0
