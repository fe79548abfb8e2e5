"""Builds the optional C hot path, ``foundation_shm._hot`` (see foundation_shm/_hot.c).

Everything else is declared in pyproject.toml. Without a C compiler (or zlib's headers) the build
goes on without it and the transport runs its pure-Python path (``foundation_shm._accel``), which
says so at run time. ``FDN_SHM_REQUIRE_C=1`` in the environment makes a failed build an error
instead (CI and scripts/setup.sh set it).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE_C = os.environ.get("FDN_SHM_REQUIRE_C", "").lower() in ("1", "true", "yes")


def _not_built(what: str, exc: Exception) -> None:
    """Say that ``what`` was not built; fail the build (as distutils fails it: ``error: ...``)
    if ``FDN_SHM_REQUIRE_C`` asks for it."""
    if REQUIRE_C:
        raise SystemExit(
            f"error: foundation_shm: {what} was not built ({exc}) and FDN_SHM_REQUIRE_C=1 requires "
            "it: install a C compiler and zlib's headers (Debian: apt-get install gcc libc6-dev "
            "zlib1g-dev), or unset FDN_SHM_REQUIRE_C to fall back to the slower pure-Python path"
        ) from exc
    print(
        f"foundation_shm: {what} was not built ({exc}); using pure Python (slower; it warns at run "
        "time). Set FDN_SHM_REQUIRE_C=1 to make this an error; once a compiler is there, rebuild "
        "with pip's --no-cache-dir, or pip reuses this wheel"
    )


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _not_built("the C hot path", exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _not_built(ext.name, exc)


setup(
    ext_modules=[
        Extension(
            "foundation_shm._hot",
            ["foundation_shm/_hot.c"],
            libraries=["z"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
