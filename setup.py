"""Builds fastserve's C extensions: llhttp (vendored C) wrapped by Cython, the HTTP/1.1
protocol (fastserve._parser); libnghttp2 (vendored C) wrapped by Cython, the HTTP/2
session core (fastserve._http2).

FASTSERVE_NO_EXTENSIONS=1 skips the extension and installs the pure-Python server.
A failed compile does the same and says so, rather than leaving a broken package.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

LLHTTP = os.path.join("vendor", "llhttp")
NGHTTP2_LIB = os.path.join("vendor", "nghttp2", "lib")
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


def nghttp2_macros():
    """What nghttp2's configure step would define: no config.h; the library is
    compiled into the extension (NGHTTP2_STATICLIB: no export or import markings)."""
    macros = [("NGHTTP2_STATICLIB", None)]
    if sys.platform == "win32":
        return [*macros, ("HAVE_WINDOWS_H", "1"), ("HAVE_GETTICKCOUNT64", "1")]
    return [
        *macros,
        ("HAVE_ARPA_INET_H", "1"),  # htonl and friends
        ("HAVE_NETINET_IN_H", "1"),
        ("HAVE_CLOCK_GETTIME", "1"),  # the rate limiters' clock
        ("HAVE_DECL_CLOCK_MONOTONIC", "1"),
    ]


def http2_extension(compile_args):
    nghttp2_sources = sorted(
        os.path.join(NGHTTP2_LIB, name) for name in os.listdir(NGHTTP2_LIB) if name.endswith(".c")
    )
    # Hidden symbols: the extension's calls bind to its own nghttp2, never to a
    # system libnghttp2 another library brought into the process.
    hidden = ["-fvisibility=hidden"] if sys.platform != "win32" else []
    return Extension(
        "fastserve._http2",
        sources=["src/fastserve/_http2.pyx", *nghttp2_sources],
        include_dirs=[os.path.join(NGHTTP2_LIB, "includes")],
        define_macros=nghttp2_macros(),
        extra_compile_args=compile_args + hidden,
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
        [parser, http2_extension(compile_args)],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
