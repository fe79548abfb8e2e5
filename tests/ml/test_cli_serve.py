"""``foundation serve``'s arguments: every one it cannot serve is refused, exit 2, before any model loads.

Each case's first ``--model`` is a factory that cannot be imported: had ``serve`` begun loading,
that would be the error (exit 1), not the refusal of a later argument.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_core
from foundation_core._cli import main
from foundation_ml import InferenceClient, LoadedModel, MLRuntime, ModelBackend, Transport
from foundation_ml import _plugin as ml_plugin
from foundation_ml._cli_serve import _check_options, _load_models, _models_to_load, _Refused
from foundation_ml._inproc import InprocTransport
from foundation_ml._package import write_package
from foundation_ml._signature import parse_signature
from foundation_ml.errors import ModelLoadError

FIRST = "first=nosuch.module:build"  # fails when loaded: exit 1, "cannot be imported"
X, Y = parse_signature({"x": "FP32[-1, 4]"}), parse_signature({"y": "FP32[-1, 4]"})


def package(path: Path, name: str = "a", version: str = "1", backend: str = "torch") -> Path:
    return write_package(
        path,
        name=name,
        version=version,
        backend=backend,
        factory="nosuch.module:build",
        inputs=X,
        outputs=Y,
        files={},
    )


def serve(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["serve", "--transport", "shm", "--name", "never_served", *argv])
    out, err = capsys.readouterr()
    assert "loaded" not in out and "Traceback" not in err
    return status, err


def test_a_model_given_twice_is_refused_before_the_first_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """It failed only once the first had loaded: 'version 1 is already loaded', exit 1."""
    status, err = serve(["--model", "a=nosuch.module:build", "--model", "a=other.module:build"], capsys)
    assert status == 2
    assert err == (
        "foundation serve: error: --model a=other.module:build: model 'a' version '1' is already given "
        "by --model a=nosuch.module:build; a name and version is served once (a package's manifest "
        "names its version)\n"
    )


@pytest.mark.parametrize("named", [False, True])
def test_a_package_serving_a_name_and_version_already_given_is_refused(
    tmp_path: Path, named: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package's manifest names it (version 1): the same as ``a=SPEC``."""
    pkg = package(tmp_path / "a.zip")
    status, err = serve(
        ["--model", "a=nosuch.module:build", "--model", f"a={pkg}" if named else str(pkg)], capsys
    )
    assert status == 2
    assert "model 'a' version '1' is already given by --model a=nosuch.module:build" in err


def test_packages_of_one_name_and_two_versions_are_both_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a duplicate: the name is served at two versions (the check passes, loading begins)."""
    v1, v2 = package(tmp_path / "v1.zip"), package(tmp_path / "v2", version="2")
    status, err = serve(["--model", str(v1), "--model", f"a={v2}"], capsys)
    assert status == 1  # its factory cannot be imported: loading began
    assert "factory 'nosuch.module:build' cannot be imported" in err


BAD = [
    (["--model", "b=nocolon"], "--model b=nocolon: 'nocolon' is neither a model file (.pt, .ts, "),
    (["--model", "b=a:b:c"], "--model b=a:b:c: 'a:b:c' is neither a model file"),
    (["--model", "b=missing.pt"], "--model b=missing.pt: no such model file 'missing.pt'"),
    (["--model", "b=MISSING.PT2"], "--model b=MISSING.PT2: no such model file 'MISSING.PT2'"),
    # it said 'no such model package' of a missing TorchScript file given without its NAME=
    (["--model", "MISSING.PT"], "--model 'MISSING.PT': no such model file (and a model file needs a name:"),
    (
        ["--model", "m.pt2"],
        "--model 'm.pt2': no such model file (and a model file needs a name: --model NAME=m.pt2)",
    ),
    (["--model", "b=missing.zip"], "--model b=missing.zip: no such model package 'missing.zip'"),
    (["--model", "missing.zip"], "--model 'missing.zip': no such model package"),
    (["--model", "missing.ZIP"], "--model 'missing.ZIP': no such model package"),
    (["--model", "b={tmp}/dir"], "--model b={tmp}/dir: '{tmp}/dir' is a directory without manifest.json"),
    # it said 'write NAME=SPEC' to one who meant the directory as a package, as NAME= would not help
    (["--model", "{tmp}/dir"], "--model '{tmp}/dir': '{tmp}/dir' is a directory without manifest.json"),
    (["--model", "b="], "--model b=: the SPEC after '=' is empty"),
    (["--model", "=x:y"], "--model '=x:y': write NAME=SPEC (the NAME before '=' is empty)"),
    (["--model", "x:y"], "--model 'x:y': write NAME=SPEC"),
    (["--model", " b=x:y"], "--model  b=x:y: the model name ' b' must not start or end with a space"),
    (["--model", f"{'n' * 64}=x:y"], "must be 1-63 UTF-8 bytes of printable characters"),
    (["--model", f"b={'a' * 5000}.pt"], "File name too long"),
    (["--model", "{tmp}/other.zip"], "its manifest names backend 'nosuch', which is not registered"),
    (["--device", "gpu"], "error: --device 'gpu': use cpu or cuda:N"),
    (["--device", ""], "error: --device '': use cpu or cuda:N"),
    (["--threads", "2000"], "error: argument --threads: must be <= 1024, not 2000"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_an_argument_that_cannot_be_served_is_refused_before_any_model_loads(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dir").mkdir()
    package(tmp_path / "other.zip", backend="nosuch")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status, err = serve(["--model", FIRST, *argv], capsys)
    except SystemExit as exc:  # argparse's own refusal
        status, err = int(str(exc.code)), capsys.readouterr().err
    assert status == 2, err
    assert message.replace("{tmp}", str(tmp_path)) in err, err


@pytest.fixture(scope="module")
def ml_hub() -> Iterator[foundation_core.Hub]:
    with foundation_core.start(plugins=[ml_plugin], entry_points=False) as h:
        yield h


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(exclude_characters="\x00"), max_size=80), min_size=1, max_size=3))
def test_any_model_arguments_are_taken_or_refused_by_name(
    ml_hub: foundation_core.Hub, texts: list[str]
) -> None:
    """Whatever ``--model`` holds, the check before loading takes it or says what is wrong with it
    (``_Refused`` naming the argument), never another exception."""
    args = argparse.Namespace(model=texts, backend=None)
    try:
        models = _models_to_load(args, ml_hub)
    except _Refused as exc:
        refusal = str(exc)
    else:
        assert len(models) == len(texts) and len(set(models)) == len(models)
        return
    assert refusal.startswith("--model ")


_EMBEDDING = """
import torch


class Lookup(torch.nn.Module):
    foundation_signature = {"inputs": {"ids": "INT64[-1, 4]"}, "outputs": {"values": "FP32[-1, 4, 3]"}}

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(5, 3)  # ids 0..4: the example input's 0..9 are out of range

    def forward(self, ids):
        return self.table(ids)


def build():
    return Lookup()
"""


def test_no_warmup_serves_a_model_that_cannot_take_its_example_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose inputs the example (integers 0..9) does not fit could not be served from the
    CLI at all: the warm-up failed 'index out of range'. ``--no-warmup`` loads it unrun."""
    (tmp_path / "lookup_model.py").write_text(_EMBEDDING)
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    ml_plugin._serve_arguments(parser)
    assert parser.parse_args([]).warmup is True
    assert parser.parse_args(["--no-warmup"]).warmup is False
    with foundation_core.start() as hub:
        runtime = MLRuntime(hub)
        try:
            with pytest.raises(ModelLoadError, match="raised on its example input at warm-up") as caught:
                _load_models(runtime, [("lookup", "lookup_model:build")], 1)
            # the error names the way out, which it did not
            assert str(caught.value).endswith(
                "IndexError: index out of range in self (a model that cannot take such an input is "
                "served unrun with register_model(..., warmup=False), `foundation serve --no-warmup`)"
            )
            assert runtime.models() == []  # nothing served half-loaded
            assert _load_models(runtime, [("lookup", "lookup_model:build")], 1, warmup=False) is None
            runtime.start(transport="inproc", name="no-warmup")
            with InferenceClient("no-warmup", transport="inproc") as client:
                got = client.infer("lookup", {"ids": np.array([[0, 1, 2, 4]], np.int64)})["values"]
            assert got.shape == (1, 4, 3) and got.dtype == np.float32
        finally:
            runtime.close()


def test_a_name_a_live_server_holds_is_refused_before_any_model_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A second ``foundation serve`` under a name in use loaded every model (minutes for a big
    one) and only then failed 'a live shm server already holds ...'; now it fails first."""
    from foundation_shm import ShmTransport

    name = f"cli_taken_{os.getpid()}"
    server = ShmTransport().serve(name, lambda request, respond: None)
    try:
        status = main(["serve", "--transport", "shm", "--name", name, "--model", FIRST])
        out, err = capsys.readouterr()
        assert status == 1, err
        assert f"a live shm server (pid {os.getpid()}) already serves {name!r}" in err
        assert "cannot be imported" not in err and "loaded" not in out  # nothing began loading
    finally:
        server.stop()
    status = main(["serve", "--transport", "shm", "--name", name, "--model", FIRST])
    assert status == 1 and "cannot be imported" in capsys.readouterr().err  # free again: it loads


# --- --backend: a file or factory SPEC loaded by another backend -----------------------------------


class _Doubling(LoadedModel):
    platform = "numpy"
    inputs = parse_signature({"x": "FP32[-1, 2]"})
    outputs = parse_signature({"y": "FP32[-1, 2]"})

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}


class _FileBackend(ModelBackend):
    """Loads any existing file as a model that doubles its input."""

    name = "doubling"

    def load(self, spec: Any, *, name: str, **options: Any) -> LoadedModel:
        if "threads" in options:  # as a backend may: --threads is torch's
            raise ModelLoadError("threads= is not this backend's", model=name)
        if not Path(spec).is_file():
            raise ModelLoadError(f"{spec} is not a file", model=name)
        return _Doubling(str(spec))


class _FilePlugin:
    @foundation_core.hookimpl
    def foundation_register_model_backends(self, register: Any) -> None:
        register("doubling", _FileBackend)


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ml_plugin._serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_backend_loads_a_file_torch_would_not_take(tmp_path: Path) -> None:
    """A file or factory SPEC always went to torch: another backend's file (``w.npz``) was refused
    as 'neither a model file (.pt, ...), a model package nor a factory reference'."""
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"anything this backend reads")
    args = _serve_args("--backend", "doubling", "--model", f"lin={weights}")
    with foundation_core.start(plugins=[_FilePlugin()]) as hub:
        models = _models_to_load(args, hub)
        assert models == [("lin", str(weights))]
        runtime = MLRuntime(hub)
        try:  # --threads 1 (the default) is torch's: this backend, which takes no option, loads
            assert _load_models(runtime, models, args.threads, backend=args.backend) is None
            assert args.threads == 1 and runtime.metadata("lin")["platform"] == "numpy"
        finally:
            runtime.close()
        with pytest.raises(_Refused, match="neither a model file"):  # torch's, as before
            _models_to_load(_serve_args("--model", f"lin={weights}"), hub)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--backend", "nosuch", "--model", "a=x:y"], "--backend 'nosuch' is not registered (registered: "),
        (["--backend", "doubling", "--model", "a=missing.npz"], "--model a=missing.npz: no such model file"),
        (["--backend", "doubling"], "--backend doubling: give the --model it loads (the demo is torch's)"),
    ],
    ids=["unregistered", "missing-file", "no-model"],
)
def test_backend_mistakes_are_refused_before_any_model_loads(argv: list[str], reason: str) -> None:
    with foundation_core.start(plugins=[_FilePlugin()]) as hub:
        with pytest.raises(_Refused) as info:
            _models_to_load(_serve_args(*argv), hub)
    assert str(info.value).startswith(reason), str(info.value)


def test_a_batch_wait_without_a_batch_size_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``--max-wait-us`` alone served every model unbatched without a word (batching needs
    ``--max-batch-size``); it is refused, naming the flag to add. With a batch size given, even 1
    (a script's variable turning batching off), the wait is taken and loading begins."""
    status, err = serve(["--model", FIRST, "--max-wait-us", "2000"], capsys)
    assert status == 2
    assert err == (
        "foundation serve: error: --max-wait-us 2000 without --max-batch-size: batching is off unless "
        "--max-batch-size N (N >= 2) turns it on, so nothing would wait; add --max-batch-size\n"
    )
    for size in ("1", "4"):
        status, err = serve(["--model", FIRST, "--max-batch-size", size, "--max-wait-us", "2000"], capsys)
        assert status == 1 and "'nosuch.module:build' cannot be imported" in err


def test_serve_over_inproc_is_refused_before_any_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """It loaded every model and served 'on inproc', where no client (each in a process of its
    own) could ever reach it."""
    status = main(["serve", "--transport", "inproc", "--name", "x", "--model", FIRST])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("foundation serve: error: --transport inproc is in-process only: ")
    assert err.endswith("; use --transport shm\n")


class _LocalTransport(InprocTransport):
    """A third party's transport that, like inproc, serves its own process only."""

    name = "local"
    cross_process = False


class _FarTransport(InprocTransport):
    name = "far"
    cross_process = True


class _TransportsPlugin:
    def __init__(self, *transports: type[Transport]) -> None:
        self.transports = transports

    @foundation_core.hookimpl
    def foundation_register_transports(self, register: Any) -> None:
        for t in self.transports:
            register(t.name, t)


@pytest.mark.parametrize(
    ("transports", "use"),
    [
        ((_LocalTransport, _FarTransport), "use --transport far"),
        (
            (_LocalTransport,),
            "no transport installed crosses processes (pip install 'foundation[shm]' adds shm)",
        ),
    ],
    ids=["another-crosses", "none-crosses"],
)
def test_any_transport_declaring_it_is_in_process_only_is_refused_by_serve(
    transports: tuple[type[Transport], ...], use: str
) -> None:
    """The rule is the transport's ``cross_process``, not its name; the message names the installed
    transports that do cross processes (inproc, the other one here, does not)."""
    plugins = [ml_plugin, _TransportsPlugin(*transports)]
    with foundation_core.start(plugins=plugins, entry_points=False) as hub:
        with pytest.raises(_Refused) as info:
            _check_options(_serve_args("--transport", "local", "--name", "x"), hub)
        if _FarTransport in transports:  # one that crosses processes is taken
            _check_options(_serve_args("--transport", "far", "--name", "x"), hub)
    assert str(info.value) == (
        "--transport local is in-process only: its servers are reached only from the process that "
        "serves them, and `foundation serve` is a process of its own, so no client could ever call "
        f"the server it starts; {use}"
    )
