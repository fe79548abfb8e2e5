"""Builds the optional C hot path, ``foundation_shm._hot`` (see foundation_shm/_hot.c).

Everything else is declared in pyproject.toml. Without a C compiler (or zlib's headers) the build
goes on without it and the transport runs its pure-Python path (``foundation_shm._accel``).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"foundation_shm: the C hot path was not built ({exc}); using pure Python")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"foundation_shm: {ext.name} was not built ({exc}); using pure Python")


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
