"""``foundation serve`` as a real process: graceful exit 0 on signals, clear start-up errors."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from foundation_core import Hub
from foundation_ml import MLRuntime
from foundation_ml._process import ServerProcess

FOUNDATION = [sys.executable, "-m", "foundation_core"]


def foundation(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOUNDATION, *args], capture_output=True, text=True, timeout=180)


def test_help_lists_the_ml_commands() -> None:
    out = foundation("--help").stdout
    for command in ("serve", "infer", "stats", "bench", "package", "demo"):
        assert f"  {command} " in out, command


CLI_MD = Path(__file__).parents[2] / "docs" / "cli.md"


@pytest.mark.parametrize("command", ["serve", "infer", "stats", "package", "bench", "demo"])
def test_help_names_each_flags_value_as_cli_md_does(command: str) -> None:
    """`foundation stats --help` said `--name NAME_OPTION`, `serve --help` `--max-batch-size
    MAX_BATCH_SIZE` where cli.md says `--name NAME` and `--max-batch-size N`."""
    text = CLI_MD.read_text()
    start = text.index(f"## foundation {command}")
    end = text.find("\n\n", text.index("\n", start) + 2)  # the heading, and serve's synopsis block
    synopsis = text[start : end if end > 0 else None]
    documented = re.findall(r"(--[a-z-]+) ([A-Z][A-Z=\[\]]*)\b", synopsis)
    assert documented, synopsis
    usage = " ".join(foundation(command, "--help").stdout.split())
    for flag, value in documented:
        assert f"{flag} {value}" in usage, (flag, value, usage)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_zero_on_signal(sig: signal.Signals, name: str) -> None:
    server = ServerProcess(["--transport", "shm", "--name", name]).start()
    assert "loaded demo v1 (pytorch)" in server.output
    assert server.stop(sig) == 0, server.output
    assert "stopped: drained in-flight requests" in server.output


@pytest.mark.slow
def test_serve_refuses_a_model_file_that_does_not_load(tmp_path: Path, name: str) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"garbage")
    proc = foundation("serve", "--transport", "shm", "--name", name, "--model", f"m={bad}")
    assert proc.returncode == 1
    assert f"{bad} is not a loadable TorchScript file" in proc.stderr
    assert "ready" not in proc.stdout


@pytest.mark.slow
def test_serve_serves_nothing_if_any_model_fails(tmp_path: Path, name: str) -> None:
    proc = foundation(
        "serve",
        "--transport",
        "shm",
        "--name",
        name,
        "--model",
        "good=foundation_torch.demo:build_demo",
        "--model",
        "bad=nosuch.module:build",
    )
    assert proc.returncode == 1
    assert "model 'bad': factory 'nosuch.module:build' cannot be imported" in proc.stderr
    assert "ready" not in proc.stdout


@pytest.mark.slow
def test_serve_refuses_a_package_that_fails_its_checksum(tmp_path: Path, name: str) -> None:
    pkg = tmp_path / "demo"
    assert (
        foundation(
            "package", "--model", "demo=foundation_torch.demo:build_demo", "--out", str(pkg)
        ).returncode
        == 0
    )
    (pkg / "weights.safetensors").write_bytes(b"tampered")
    proc = foundation("serve", "--transport", "shm", "--name", name, "--model", str(pkg))
    assert proc.returncode == 2  # a bad package is bad input
    assert f"{pkg}/weights.safetensors fails its checksum" in proc.stderr


def damaged_packages(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Zips whose manifest cannot be read: each with what the error says of it."""
    deep, dim, dup = tmp_path / "deep.zip", tmp_path / "dim.zip", tmp_path / "dup.zip"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("manifest.json", "[" * 100_000 + "]" * 100_000)
    with zipfile.ZipFile(dim, "w") as zf:
        zf.writestr("manifest.json", '{"format": "foundation-model-package/1", "inputs": [-1, 1e400]}')
    with warnings.catch_warnings(), zipfile.ZipFile(dup, "w") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("manifest.json", "{}")
        zf.writestr("manifest.json", "{}")
    return {
        "deep": (deep, f"{deep}:manifest.json nests arrays or objects too deeply to be read"),
        "dim": (dim, f"{dim}:manifest.json is not valid JSON: the number 1e400 is out of range"),
        "dup": (dup, f"{dup}:manifest.json appears more than once in the zip"),
    }


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("kind", ["deep", "dim", "dup"])
def test_serve_refuses_a_damaged_package_in_one_line(
    tmp_path: Path, name: str, kind: str, named: bool
) -> None:
    path, message = damaged_packages(tmp_path)[kind]
    spec = f"m={path}" if named else str(path)
    proc = foundation("serve", "--transport", "shm", "--name", name, "--model", spec)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"foundation serve: error: {message}\n"
    assert "ready" not in proc.stdout


def test_serve_wants_a_name_for_a_non_package_spec(name: str) -> None:
    proc = foundation("serve", "--transport", "shm", "--name", name, "--model", "pkg.mod:build")
    assert proc.returncode == 2
    assert "write NAME=SPEC" in proc.stderr


def test_infer_without_a_server_says_so(name: str) -> None:
    proc = foundation("infer", "--transport", "shm", "--name", name)
    assert proc.returncode == 1
    assert "ServerUnavailable" in proc.stderr and name in proc.stderr


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (["serve", "--name", "x"], "no client could ever call the server it starts"),
        (["infer", "--name", "x"], "every server is in another process, where it cannot reach one"),
        (["stats", "x"], "every server is in another process, where it cannot reach one"),
    ],
)
def test_an_in_process_transport_is_refused_by_the_commands_of_their_own_process(
    command: list[str], why: str
) -> None:
    """``serve --transport inproc`` loaded the demo and said 'ready: serving demo on inproc'
    for clients that could never reach it; ``infer`` and ``stats`` said the server was not
    running. Each is refused, exit 2, before anything loads, naming a transport to use."""
    proc = foundation(*command, "--transport", "inproc")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"foundation {command[0]}: error: --transport inproc is in-process only: its servers are "
        f"reached only from the process that serves them, and `foundation {command[0]}` is a process "
        f"of its own, so {why}; use --transport shm\n"
    )
    assert proc.stdout == ""  # no model loaded, nothing served


@pytest.mark.parametrize("argv", [["infer", "--name", "a/b"], ["stats", "a/b"], ["stats", "--name", "a/b"]])
def test_a_name_the_transport_refuses_is_a_usage_error(argv: list[str]) -> None:
    command = argv[0]
    proc = foundation(*argv)
    assert proc.returncode == 2
    assert f"foundation {command}: error: shm server name 'a/b' must be" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["infer", "stats"])
def test_a_transport_not_installed_is_a_usage_error_as_for_serve(command: str) -> None:
    proc = foundation(command, "--transport", "nope")
    assert proc.returncode == 2  # was 1: serve said 2 for the same mistake
    assert f"foundation {command}: error: no transport named 'nope' is registered" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_serve_refuses_a_name_the_transport_refuses() -> None:
    proc = foundation("serve", "--name", "../etc")
    assert proc.returncode == 2
    assert "foundation serve: error: shm server name '../etc' must be" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_package_to_a_place_it_cannot_write_is_named_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "p.zip"  # its parent is a file
    proc = foundation("package", "--model", "m=foundation_torch.demo:build_demo", "--out", str(out))
    assert proc.returncode == 1
    assert f"foundation package: cannot write {out}: Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--transport", "nosuch"], "error: no transport named 'nosuch' is registered"),
        (
            ["--metrics-file", "/nonexistent/dir/m.prom"],
            "error: --metrics-file /nonexistent/dir/m.prom: cannot",
        ),
        (["--model", "nosuch.zip"], "--model 'nosuch.zip': no such model package"),
        (["--metrics-file", ""], "error: --metrics-file '': name a file"),  # was: no metrics file
        (
            ["--model", "my:model=foundation_torch.demo:build_demo"],
            "write NAME=SPEC (a NAME holds no '/' or ':')",  # it was written so: say what is wrong
        ),
    ],
    ids=["transport", "metrics-file-dir", "no-package", "metrics-file-empty", "name-with-colon"],
)
def test_serve_arguments_that_cannot_work_are_refused_before_any_model_loads(
    argv: list[str], message: str, name: str
) -> None:
    proc = foundation("serve", "--name", name, *argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "loaded demo" not in proc.stdout


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        ("inproc", "the demo serves from a child process; inproc reaches only servers in the same process"),
        ("nosuch", "no transport named 'nosuch' is registered"),
    ],
)
def test_demo_over_a_transport_it_cannot_use_is_refused_before_starting(transport: str, message: str) -> None:
    proc = foundation("demo", "--transport", transport)
    assert proc.returncode == 2
    assert f"foundation demo: error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr and "starting" not in proc.stdout


def test_demo_without_the_torch_backend_is_refused_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    monkeypatch.setenv("FOUNDATION_DISABLE_PLUGINS", "torch")
    assert main(["demo"]) == 2
    out, err = capsys.readouterr()
    assert "foundation demo: error: no model backend named 'torch' is registered" in err
    assert "starting" not in out


def test_demo_whose_server_does_not_start_prints_its_output_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main
    from foundation_ml._process import ServerStartError

    def fail(self: ServerProcess) -> ServerProcess:
        raise ServerStartError(self.args, "foundation serve: error: the model broke\n")

    monkeypatch.setattr(ServerProcess, "start", fail)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "foundation demo: error: the server did not start; it printed:" in err
    assert "   server: foundation serve: error: the model broke" in err


@pytest.mark.slow
def test_a_second_server_under_a_live_ones_name_is_named_not_a_traceback(name: str) -> None:
    with ServerProcess(["--transport", "shm", "--name", name]):
        proc = foundation("serve", "--name", name)
    assert proc.returncode == 1
    assert proc.stderr.startswith("foundation serve: error: a live shm server (pid ")  # before loading
    assert f"already serves {name!r} (it holds /dev/shm/fdn-{name}.lock)" in proc.stderr
    assert "Traceback" not in proc.stderr and "loaded" not in proc.stdout


def test_infer_reads_the_transports_config_section(name: str) -> None:
    # the [shm] section's client_* fields set the client's options: a bad one stops infer
    proc = foundation("--set", "shm.client_spin_us=-1", "infer", "--name", name)
    assert proc.returncode == 2
    assert "shm.client_spin_us: client_spin_us must be an integer" in proc.stderr


@pytest.mark.slow
def test_metrics_file_holds_prometheus_text_after_exit(tmp_path: Path, name: str) -> None:
    metrics = tmp_path / "metrics.prom"
    server = ServerProcess(["--transport", "shm", "--name", name, "--metrics-file", str(metrics)]).start()
    assert server.stop() == 0, server.output
    text = metrics.read_text()
    assert f'foundation_requests_total{{server="{name}",model="demo",version="1"}} 0' in text
    assert not (tmp_path / "metrics.prom.tmp").exists()


BAD_FLAGS = [
    (["serve", "--max-batch-size", "0"], "argument --max-batch-size: must be >= 1, not 0"),
    (["serve", "--max-wait-us", "-5"], "argument --max-wait-us: must be >= 0, not -5"),
    (
        ["serve", "--max-wait-us", "99999999999999999999999"],
        "argument --max-wait-us: must be <= 10000000, not 99999999999999999999999",
    ),
    (["bench", "--max-wait-us", "10000001"], "argument --max-wait-us: must be <= 10000000, not 10000001"),
    (["serve", "--threads", "two"], "argument --threads: not an integer: 'two'"),
    (["infer", "--timeout", "0"], "argument --timeout: must be a number of seconds > 0, not 0"),
    (["infer", "--timeout", "nan"], "argument --timeout: must be a number of seconds > 0, not nan"),
    (["infer", "--timeout", "1e300"], "argument --timeout: must be at most 1e+09 seconds, not 1e300"),
    (["stats", "--timeout", "1e10"], "argument --timeout: must be at most 1e+09 seconds, not 1e10"),
    (["bench", "--clients", "0"], "argument --clients: must be >= 1, not 0"),
    (["bench", "--seconds", "-1"], "argument --seconds: must be a number of seconds > 0, not -1"),
    (["demo", "--calls", "0"], "argument --calls: must be >= 1, not 0"),
    (["stats", "--json", "--prometheus"], "argument --prometheus: not allowed with argument --json"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_number_is_refused_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"foundation {argv[0]}: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--model", "m=nocolon"],
            "--model m=nocolon: 'nocolon' is not a factory reference 'pkg.module:build'",
        ),
        (["--model", "m=:x"], "--model m=:x: ':x' is not a factory reference"),
        (["--model", "m=a:b:c"], "--model m=a:b:c: 'a:b:c' is not a factory reference"),
        (
            ["--model", "m=pkg.mod:build", "--backend", "nope"],
            "--backend nope: no model backend named 'nope'",
        ),
        # it lacked 'error:', as the only usage error printed so
        (["--model", "pkg.mod:build"], "name the model: --name NAME or --model NAME=SPEC"),
        # --name won over NAME= without a word, and an empty --name was taken as none
        (
            ["--model", "m=pkg.mod:build", "--name", "other"],
            "--name 'other' and --model m=pkg.mod:build name the model twice",
        ),
        (["--model", "m=pkg.mod:build", "--name", ""], "--name '' must be 1-63 UTF-8 bytes"),
        (["--model", "pkg.mod:build", "--name", ""], "--name '' must be 1-63 UTF-8 bytes"),
        # named 'the package's version', not the flag that gave it
        (["--model", "m=pkg.mod:build", "--version", "1 "], "--version '1 ' must not start or end"),
        (["--model", "m=pkg.mod:build", "--version", ""], "--version '' must be 1-15 UTF-8 bytes"),
        (
            ["--model", " m=pkg.mod:build"],
            "--model  m=pkg.mod:build: the model name ' m' must not start or end with a space",
        ),
    ],
)
def test_package_usage_errors_exit_2_naming_the_flag(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    assert main(["package", *argv, "--out", str(tmp_path / "p.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"foundation package: error: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_package_refuses_an_empty_out(capsys: pytest.CaptureFixture[str]) -> None:
    """``--out ''`` said "--out . already exists": Path("") is the current directory."""
    from foundation_core._cli import main

    assert main(["package", "--model", "m=nosuch.module:build", "--out", ""]) == 2
    assert "foundation package: error: --out '': name a directory to create" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["p.zip", "p"])
def test_package_refuses_an_existing_out_before_building_anything(
    tmp_path: Path, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation_core._cli import main

    existing = tmp_path / out
    existing.mkdir() if out == "p" else existing.write_bytes(b"mine")
    # a factory that cannot be imported: were the model built first, that would be the error
    assert main(["package", "--model", "m=nosuch.module:build", "--out", str(existing)]) == 2
    assert f"foundation package: error: --out {existing} already exists" in capsys.readouterr().err
    assert out == "p" or existing.read_bytes() == b"mine"


@pytest.mark.parametrize(
    ("out", "suffix"), [("model.tar", ".tar"), ("model.tar.gz", ".tar.gz"), ("m.7z", ".7z")]
)
def test_package_refuses_an_archive_out_other_than_zip_creating_nothing(
    tmp_path: Path, out: str, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out model.tar`` wrote a directory named model.tar (``--out`` is a directory or a .zip)."""
    from foundation_core._cli import main

    # a factory that cannot be imported: were the model built first, that would be the error
    assert main(["package", "--model", "m=nosuch.module:build", "--out", str(tmp_path / out)]) == 2
    assert capsys.readouterr().err == (
        f"foundation package: error: --out {tmp_path / out}: '{suffix}' names an archive format, "
        "which is not written: a package is written only as a .zip file or a directory (name it "
        ".zip, or a directory without that suffix)\n"
    )
    assert list(tmp_path.iterdir()) == []


META = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}


def test_infer_refuses_to_make_an_absurdly_large_example_input() -> None:
    from foundation_ml._cli_inputs import load_inputs

    huge = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 10**15]}]}
    with pytest.raises(
        SystemExit, match=r"^foundation infer: no example input: tensor x: .* pass --input FILE"
    ):
        load_inputs(None, huge)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("in.npz", b"garbage", "cannot read inputs from .*in.npz: "),
        ("in.npy", b"\x93NUMPY\x01\x00", "cannot read inputs from .*in.npy: "),
        ("in.json", b'{"x": [[1, 2]', "cannot read inputs from .*in.json: Expecting ',' delimiter: line 1"),
        (
            "in.json",
            b'{"x": "two"}',
            "cannot read inputs from .*in.json: input x: a string is not a value of FP32 but .NaN.",
        ),
        (
            "in.json",
            b"[[1, 2, 3, 4]]",
            r"cannot read inputs from .*in.json: expected an object of named inputs .*not a list",
        ),
        ("in.csv", b"1,2,3,4", r".*in.csv: use a .npz, .npy or .json file"),
        ("in.json", b'{"x": [[' + b"9" * 400 + b"]]}", "cannot read inputs from .*in.json: input x: "),
        ("in.json", b'{"x": {"a": 1}}', "cannot read inputs from .*in.json: input x: float"),
        ("in.json", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "cannot read inputs from .*json: "),
        (
            "in.json",
            b'{"x": [[1, 2, 3, 1e40]]}',
            r"cannot read inputs from .*in.json: input x: 1e\+40 is out of range for FP32 "
            r"\(-3.4028235e\+38 to 3.4028235e\+38\)$",
        ),
    ],
    ids=["npz", "npy", "truncated", "string", "list", "csv", "huge-int", "object", "deep", "fp32-range"],
)
def test_infer_input_files_that_cannot_be_read_are_named(
    tmp_path: Path, file: str, content: bytes, message: str
) -> None:
    from foundation_ml._cli_inputs import load_inputs

    path = tmp_path / file
    path.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow is refused, not sent as inf with numpy's warning
        with pytest.raises(SystemExit, match=f"^foundation infer: {message}"):
            load_inputs(str(path), META)
    with pytest.raises(
        SystemExit, match=r"^foundation infer: cannot read inputs from .*nowhere.npz: .*No such file"
    ):
        load_inputs(str(tmp_path / "nowhere.npz"), META)


def test_infer_reads_json_inputs_with_the_signatures_dtype(tmp_path: Path) -> None:
    import numpy as np

    from foundation_ml._cli_inputs import load_inputs

    (tmp_path / "in.json").write_text('{"x": [[1, 2, 3, 4]]}')
    x = load_inputs(str(tmp_path / "in.json"), META)["x"]
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3, 4]]


def test_infer_takes_the_signature_of_the_version_it_calls() -> None:
    from foundation_ml._cli_client import _version_metadata
    from foundation_ml.errors import ModelNotFound

    v1 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []}
    v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}], "outputs": []}
    meta = {"name": "m", "versions": ["1", "2"], **v2, "signatures": {"1": v1, "2": v2}}
    assert _version_metadata(meta, "m", "")["inputs"] == v2["inputs"]  # the latest
    assert _version_metadata(meta, "m", "1")["inputs"] == v1["inputs"]
    with pytest.raises(ModelNotFound, match=r"no version '7' \(versions: 1, 2\)"):
        _version_metadata(meta, "m", "7")
    older = {k: v for k, v in meta.items() if k != "signatures"}  # a server without per-version ones
    assert _version_metadata(older, "m", "1") is older


def test_stats_refuses_two_different_names(capsys: pytest.CaptureFixture[str]) -> None:
    from foundation_core._cli import main

    assert main(["stats", "one", "--name", "two"]) == 2
    # a usage error, said as the others are (it lacked 'error:')
    assert capsys.readouterr().err == "foundation stats: error: two server names, 'one' and --name 'two'\n"


@pytest.mark.parametrize("argv", [["stats", ""], ["stats", "--name", ""]])
def test_stats_of_an_empty_name_is_refused_not_the_default_servers(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``foundation stats "$NAME"`` with NAME unset asked the server named 'foundation'."""
    from foundation_core._cli import main

    with pytest.raises(SystemExit) as exit:  # as a name the transport refuses does, from its client
        main(argv)
    assert exit.value.code == 2
    assert "foundation stats: error: shm server name '' must be" in capsys.readouterr().err


def test_infer_json_is_strict_json_with_non_finite_values_as_strings(
    shm_hub: Hub, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import numpy as np

    from foundation_core._cli import main
    from foundation_ml import FunctionModel

    def odd(x: np.ndarray) -> np.ndarray:
        return np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32) + 0 * x

    with MLRuntime(shm_hub) as runtime:
        runtime.register_model(
            "odd", FunctionModel(odd, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        )
        runtime.start("shm", name)
        assert main(["infer", "--transport", "shm", "--name", name, "--model", "odd", "--json"]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    doc = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert doc["outputs"]["y"]["data"] == [["NaN", "Infinity", "-Infinity", 1.5]]


@pytest.mark.parametrize(
    "argv",
    [
        ["--set", "shm.client_timeout=0.5", "infer", "--model", "sleepy"],
        ["infer", "--model", "sleepy", "--timeout", "0.5"],
        ["--set", "shm.client_timeout=0.5", "stats"],
        ["stats", "--timeout", "0.5"],
    ],
    ids=["infer-configured", "infer-option", "stats-configured", "stats-option"],
)
def test_infer_and_stats_take_the_configured_timeout_or_their_option(
    shm_hub: Hub,
    name: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """[shm] client_timeout is no longer overridden by infer's 30 s default; stats takes --timeout."""
    import time

    import numpy as np

    from foundation_core._cli import main
    from foundation_ml import FunctionModel

    loaded = []  # no sleep while the runtime warms the model up

    def sleepy(x: np.ndarray) -> np.ndarray:
        time.sleep(2 if loaded else 0)
        return x

    def slow_stats() -> dict[str, object]:
        time.sleep(2)
        return {"server": {}, "models": {}}

    command = argv.index("infer") if "infer" in argv else argv.index("stats")
    argv = [*argv[: command + 1], "--name", name, *argv[command + 1 :]]
    with MLRuntime(shm_hub) as runtime:
        model = FunctionModel(sleepy, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})
        runtime.register_model("sleepy", model)
        loaded.append(True)
        monkeypatch.setattr(runtime, "stats", slow_stats)  # the shm server asks its handler for them
        runtime.start("shm", name)
        assert main(argv) == 1
    # the model and stats sleep 2 s: only the 0.5 s timeout ends the call DeadlineExceeded (the
    # 30 s default answered); a bound on the time taken said no more, and failed when loaded
    assert "DeadlineExceeded" in capsys.readouterr().err


def test_the_stats_table_keeps_its_columns_apart() -> None:
    """Fixed widths ran a p95 of 1 s or more into the p99 beside it (300155.83973740.6), and a
    model name over 16 characters shifted every column."""
    from foundation_ml._cli_client import _table

    rows = [
        ("model", "version", "p95 µs", "p99 µs"),
        ("a_model_name_longer_than_sixteen", "1", "300155.8", "3973740.6"),
        ("m", "12", "1.0", "2.0"),
    ]
    lines = _table(rows).splitlines()
    assert lines[1].split() == ["a_model_name_longer_than_sixteen", "1", "300155.8", "3973740.6"]
    assert len({len(line) for line in lines}) == 1  # every row as wide: the columns line up
    assert lines[2].startswith("m ") and lines[2].endswith("  2.0")


def test_the_stats_table_shows_no_latency_for_a_version_never_called(
    shm_hub: Hub, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version with no latency recorded (never called, or only refused) showed p50, p95, p99
    0.0 µs and batch 0.00, which read as a fast model; it shows "-" where --json has null."""
    import numpy as np

    from foundation_core._cli import main
    from foundation_ml import FunctionModel, InferenceClient

    def same() -> FunctionModel:
        return FunctionModel(lambda x: x, inputs={"x": "FP32[-1, 4]"}, outputs={"y": "FP32[-1, 4]"})

    with MLRuntime(shm_hub) as runtime:
        runtime.register_model("idle", same())
        runtime.register_model("used", same())
        runtime.start("shm", name)
        with InferenceClient(name, hub=shm_hub) as client:
            client.infer("used", {"x": np.ones((1, 4), np.float32)})
        assert main(["stats", "--name", name]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["idle"] == ["1", "0", "0", "-", "-", "-", "-", "0"]
    used = rows["used"]
    assert used[:3] == ["1", "1", "0"] and float(used[3]) > 0 and used[6:] == ["1.00", "0"]
