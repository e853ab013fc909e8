"""--http2 without the `h2` package: the C mode's HTTP/2 (nghttp2) needs none of
`h2`, `hpack` and `hyperframe` and serves a real HTTP/2 request without them; the
pure mode (and a C mode without its HTTP/2 extension) refuses --http2 with one line
naming the package. The server runs in a process where those packages are as if not
installed (None in sys.modules: imports fail, find_spec finds nothing), and where
any import of them is reported on stderr, so a caught ImportError shows too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from process_util import ServerProcess
from test_http2 import APP, run_tool, tool

H2_PACKAGES = ("h2", "hpack", "hyperframe")
ATTEMPTED = "import attempted:"
# `python -c` this, then fastserve's command line: the modules in argv[1] (commas)
# are not installed, and an import of one is written to stderr.
WITHOUT = f"""
import builtins
import sys

blocked = tuple(sys.argv.pop(1).split(","))
for name in blocked:
    sys.modules[name] = None
real_import = builtins.__import__


def reporting_import(name, *args, **kwargs):
    if name in blocked or name.split(".")[0] in blocked:
        sys.stderr.write("{ATTEMPTED} %s\\n" % name)
    return real_import(name, *args, **kwargs)


builtins.__import__ = reporting_import
from fastserve.cli import main

main()
"""
CHECK_SECONDS = 60


def command_without(modules, *args: str) -> list:
    return [sys.executable, "-c", WITHOUT, ",".join(modules), *args]


@pytest.mark.c
def test_the_c_mode_serves_http2_without_h2():
    args = (APP, "--http", "c", "--http2", "--host", "127.0.0.1", "--port", "0")
    server = ServerProcess(command_without(H2_PACKAGES, *args))
    try:
        server.wait_ready()
        server.wait_for_log(r"\(c mode, HTTP/2 by nghttp2\b")
        result = run_tool(
            tool("curl"), "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
            server.url("/_/hello"),
        )  # fmt: skip
        assert result.returncode == 0, result
        assert result.stdout == "Hello, world!\n2", result
        assert server.stop() == 0
        assert ATTEMPTED not in server.output(), server.describe()
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    "mode, blocked, why",
    [
        pytest.param(
            "python", H2_PACKAGES, "the c mode's HTTP/2 needs none", marks=pytest.mark.python
        ),
        pytest.param(
            "c",
            (*H2_PACKAGES, "fastserve._http2"),
            "its HTTP/2 extension is not built",
            marks=pytest.mark.c,
        ),
    ],
    ids=["python", "c-without-its-http2-extension"],
)
def test_http2_over_h2_without_h2_is_refused_in_one_line(mode, blocked, why):
    command = command_without(blocked, APP, "--http", mode, "--http2", "--port", "0")
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_SECONDS)
    assert result.returncode != 0, result
    expected = (
        f"fastserve: error: --http2 in the {mode} mode needs the 'h2' package ({why}):"
        " pip install 'fastserve[http2]'"
    )
    lines = [line for line in result.stderr.splitlines() if not line.startswith(ATTEMPTED)]
    assert lines == [expected], result
