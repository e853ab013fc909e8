"""Builds fastserve's C extension: llhttp (vendored C) wrapped by Cython.

FASTSERVE_NO_EXTENSIONS=1 skips the extension and installs the pure-Python server.
A failed compile does the same and says so, rather than leaving a broken package.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LLHTTP = os.path.join("vendor", "llhttp")
NO_EXTENSIONS = os.environ.get("FASTSERVE_NO_EXTENSIONS", "") not in ("", "0")


class OptionalBuildExt(build_ext):
    """Turns a compile failure into a clear warning and a pure-Python install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        bar = "*" * 72
        sys.stderr.write(
            f"\n{bar}\nfastserve: the C extension could not be built ({exc}).\n"
            "fastserve is installed in pure-Python mode (--http python), which is\n"
            "complete but slower. Install a C compiler and Python headers, then\n"
            f"reinstall, for the C mode.\n{bar}\n\n"
        )


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    compile_args = ["-O3"] if sys.platform != "win32" else []
    parser = Extension(
        "fastserve._parser",
        sources=[
            "src/fastserve/_parser.pyx",
            os.path.join(LLHTTP, "llhttp.c"),
            os.path.join(LLHTTP, "api.c"),
            os.path.join(LLHTTP, "http.c"),
        ],
        include_dirs=[LLHTTP],
        extra_compile_args=compile_args,
    )
    return cythonize(
        [parser],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
