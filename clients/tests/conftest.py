"""Fixtures for the native clients' tests: build each client once, serve the demo model once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from foundation_shm._objects import group_objects, objects_of, remove_objects

from foundation_ml._process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "protocol" / "vectors"


@dataclass(frozen=True)
class NativeClient:
    """How to build, test and run one language's client (the commands docs/clients.md shows)."""

    lang: str
    build: tuple[str, ...]
    test: tuple[str, ...]
    binary: str
    cwd: str = "."  # relative to the repository root
    hello: str = ""  # the example docs/clients.md shows: its source and its binary
    hello_binary: str = ""
    hello_build: tuple[str, ...] = ()  # when the client's build does not make it
    pool: str = ""  # the pool example docs/clients.md shows (64 callers through 4 clients)
    pool_binary: str = ""
    pool_build: tuple[str, ...] = ()
    # a project of the user's own outside the checkout, set up as docs/clients.md shows: shell
    # lines run in one script in an empty directory, $FDN the checkout, the hello example copied
    # to `project_main` (relative to where the script is then) before the last line, which builds
    # `project_binary` (relative to the directory)
    project: tuple[str, ...] = ()
    project_main: str = ""
    project_binary: str = ""
    params: bool = False  # its fdn-client takes --params JSON (an extension of the contract)
    live: bool = False  # its own tests also call a real echo server, given FDN_TEST_PYTHON
    # its own tests again under the language's memory or race checker (ASan+UBSan and TSan, -race), which
    # finds what a plain run passes over: an overflow that lands in owned memory, a data race
    checked: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return ROOT / self.binary

    def run_tests(self, checked: bool = False) -> subprocess.CompletedProcess[str]:
        """The language's own test suite (make test, go test, cargo test); ``checked``: under its
        checker (``self.checked``) instead."""
        cmd = self.checked if checked else self.test
        extra = {"FDN_TEST_PYTHON": sys.executable} if self.live else {}
        # under pytest-timeout's 300 s, so that a suite that hangs is reported with the output it
        # had written (which test hung), not killed with none
        try:
            return run(cmd, self.cwd, timeout=240, extra_env=extra)
        except subprocess.TimeoutExpired as exc:
            out = [
                x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                for x in (exc.stdout, exc.stderr)
            ]
            return subprocess.CompletedProcess(cmd, -9, out[0] + "\n[timed out after 240 s]\n", out[1])


def _cargo_example(name: str) -> tuple[str, ...]:
    """The command that builds the Rust client's example ``name`` (target/release/examples/NAME)."""
    manifest = ("--manifest-path", "clients/rust/Cargo.toml")
    return ("cargo", "build", "--release", "--offline", *manifest, "--example", name)


CLIENTS = {
    "c": NativeClient(
        "c",
        build=("make", "-C", "clients/c"),
        test=("make", "-C", "clients/c", "test"),
        checked=("make", "-C", "clients/c", "test-sanitize", "test-tsan"),
        binary="clients/c/build/fdn-client",
        hello="clients/c/examples/hello.c",
        hello_binary="clients/c/build/hello",
        project=(
            "FDN=/path/to/foundation",
            "cc -std=c11 -I$FDN/clients/c/include -o app app.c"
            " $FDN/clients/c/build/libfdnclient.a -pthread -lrt",
        ),
        project_main="app.c",
        project_binary="app",
        params=True,
        live=True,
    ),
    "go": NativeClient(
        "go",
        build=("go", "build", "-o", "bin/fdn-client", "./cmd/fdn-client"),
        test=("go", "test", "./..."),
        checked=("go", "test", "-race", "./..."),
        binary="clients/go/bin/fdn-client",
        cwd="clients/go",
        hello="clients/go/examples/hello/main.go",
        hello_binary="clients/go/bin/hello",
        hello_build=("go", "build", "-o", "bin/hello", "./examples/hello"),
        pool="clients/go/examples/pool/main.go",
        pool_binary="clients/go/bin/pool",
        pool_build=("go", "build", "-o", "bin/pool", "./examples/pool"),
        project=(
            "FDN=/path/to/foundation",
            "go mod init example.com/app",
            "go mod edit -require=foundation/clients/go@v0.0.0"
            " -replace=foundation/clients/go=$FDN/clients/go",
            "go build .",
        ),
        project_main="main.go",
        project_binary="app",
        params=True,
        live=True,
    ),
    "rust": NativeClient(
        "rust",
        build=_cargo_example("fdn-client"),
        test=("cargo", "test", "--offline", "--manifest-path", "clients/rust/Cargo.toml"),
        binary="clients/rust/target/release/examples/fdn-client",
        hello="clients/rust/examples/hello.rs",
        hello_binary="clients/rust/target/release/examples/hello",
        hello_build=_cargo_example("hello"),
        pool="clients/rust/examples/pool.rs",
        pool_binary="clients/rust/target/release/examples/pool",
        pool_build=_cargo_example("pool"),
        project=(
            "FDN=/path/to/foundation",
            "cargo new app && cd app",
            "cargo add --offline --path $FDN/clients/rust",
            "cargo build --release --offline",
        ),
        project_main="src/main.rs",
        project_binary="app/target/release/app",
        live=True,
    ),
}
# A client whose directory exists is tested; one that then fails to build fails its tests.
PRESENT = [lang for lang in CLIENTS if (ROOT / "clients" / lang).is_dir()]


def tool_env() -> dict[str, str]:
    """The environment for builds: Go's cache somewhere writable, never the network."""
    env = dict(os.environ)
    cargo_home = Path(env.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
    if cargo_home.is_dir() and str(cargo_home) not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), str(cargo_home)])  # rustup's default home
    if "GOCACHE" not in env and not env.get("HOME"):
        env["GOCACHE"] = str(ROOT / "clients" / "go" / "bin" / "cache")
    env.setdefault("GOPROXY", "off")
    env.setdefault("GOFLAGS", "-mod=mod")
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def run(
    cmd: tuple[str, ...] | list[str],
    cwd: str = ".",
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        cwd=ROOT / cwd,
        env={**tool_env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_built: dict[str, str | None] = {}


def built(lang: str) -> NativeClient:
    """Build the client once per session; fail (never skip) when it does not build."""
    client = CLIENTS[lang]
    if lang not in _built:
        if shutil.which(client.build[0], path=tool_env()["PATH"]) is None:
            _built[lang] = f"{client.build[0]} is not installed (scripts/setup.sh installs it)"
        else:
            proc = run(client.build, client.cwd)
            _built[lang] = (
                None if proc.returncode == 0 else f"{' '.join(client.build)}:\n{proc.stdout}{proc.stderr}"
            )
    if _built[lang] is not None:
        pytest.fail(f"the {lang} client does not build: {_built[lang]}")
    return client


@pytest.fixture(params=PRESENT)
def client(request: pytest.FixtureRequest) -> NativeClient:
    return built(request.param)


def server_name(tag: str) -> str:
    return f"nct{os.getpid()}_{tag}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_dev_shm() -> Iterator[None]:
    """After the suite, no object of a server these tests started is left in /dev/shm."""
    yield
    ours = {name: files for name, files in group_objects().items() if name.startswith(server_name(""))}
    for name in ours:
        remove_objects(name)
    assert ours == {}, f"left in /dev/shm: {ours}"


@pytest.fixture(params=[lang for lang in PRESENT if CLIENTS[lang].hello])
def hello_client(request: pytest.FixtureRequest) -> NativeClient:
    """A client with a hello example (the one docs/clients.md shows), built."""
    client = built(request.param)
    if client.hello_build:
        proc = run(client.hello_build, client.cwd)
        assert proc.returncode == 0, f"{' '.join(client.hello_build)}:\n{proc.stdout}{proc.stderr}"
    return client


@pytest.fixture(params=[lang for lang in PRESENT if CLIENTS[lang].pool])
def pool_client(request: pytest.FixtureRequest) -> NativeClient:
    """A client with a pool example (the one docs/clients.md shows), built."""
    client = built(request.param)
    proc = run(client.pool_build, client.cwd)
    assert proc.returncode == 0, f"{' '.join(client.pool_build)}:\n{proc.stdout}{proc.stderr}"
    return client


@pytest.fixture(params=[lang for lang in PRESENT if CLIENTS[lang].project])
def project_client(request: pytest.FixtureRequest) -> NativeClient:
    """A client with a project-of-your-own recipe (docs/clients.md), its library built."""
    return built(request.param)


@pytest.fixture(params=[lang for lang in PRESENT if CLIENTS[lang].checked])
def checked_client(request: pytest.FixtureRequest) -> NativeClient:
    """A client whose suite also runs under a memory or race checker."""
    return built(request.param)


@pytest.fixture(params=[lang for lang in PRESENT if CLIENTS[lang].params])
def params_client(request: pytest.FixtureRequest) -> NativeClient:
    """A client whose fdn-client sends request parameters (--params)."""
    return built(request.param)


@pytest.fixture
def go_client() -> NativeClient:
    return built("go")


@pytest.fixture(scope="session")
def build_env() -> dict[str, str]:
    return tool_env()


@pytest.fixture(scope="session")
def native_clients() -> dict[str, NativeClient]:
    return CLIENTS


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Server names no other test run uses."""
    return server_name


@pytest.fixture(scope="module")
def unique_module_name(request: pytest.FixtureRequest) -> str:
    return server_name(request.module.__name__.rpartition(".")[2][:12])


@pytest.fixture(scope="session")
def demo_server() -> Iterator[str]:
    """``foundation serve`` with the demo model, for the whole session; nothing left behind."""
    name = server_name("demo")
    with ServerProcess(["--transport", "shm", "--name", name, "--threads", "1"]):
        yield name
    leftovers = objects_of(name)
    remove_objects(name)
    assert leftovers == [], f"the demo server left {leftovers} in /dev/shm"
