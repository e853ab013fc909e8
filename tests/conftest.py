"""Fixtures for the HTTP conformance suite (tests/test_http_*.py).

Every test talks to a real `python -m fastserve` subprocess over real sockets, in
both protocol modes: the `mode` fixture is parametrized over "c" and "python".
Select one mode with `--mode c` (or `-m c`, `-m python`).

Tests marked `serial` bound a duration, a memory size or a load, which other tests
running beside them would skew: `--serial skip` leaves them out (the parallel pass of
scripts/test, under pytest-xdist), `--serial only` runs only them (its serial pass).

- `servers` (module-scoped pool): `servers.get(app, mode, *flags)` starts a server
  once per (app, mode, flags) and reuses it for the module; at teardown each is
  stopped with SIGTERM and must exit 0.
- `server`: `servers.get("tests.apps:app", mode)`, the default server.
- `start_server(app, mode, *flags, ...)`: a dedicated server for tests that stop it,
  or that need an environment of their own; killed at teardown if still running.

Servers are `process_util.ServerProcess`es, the helper of every test that runs a
server process. `server.client()` opens a `RawClient` (tests/raw_http.py): it sends
bytes exactly as given and reads responses with a strict hand-written HTTP/1.1
response reader.

An exception in a thread that nobody joined fails the test it happened in (use
`process_util.CheckedThread` to get it raised where the test joins the thread).
"""

from __future__ import annotations

import re
import ssl
import time

import pytest

from process_util import ServerProcess
from raw_http import (  # noqa: F401 - re-exported for the tests
    ConnectionClosed,
    IncompleteResponse,
    RawClient,
    Response,
    build_request,
)

MODES = ("c", "python")
SERIAL_CHOICES = ("skip", "only")
APP = "tests.apps:app"


# -- modes --------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--mode",
        action="append",
        choices=MODES,
        help="run the HTTP conformance tests only for this protocol mode (repeatable)",
    )
    parser.addoption(
        "--serial",
        choices=SERIAL_CHOICES,
        help="skip: leave out the tests marked serial; only: run only them",
    )


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnhandledThreadExceptionWarning")
    config.addinivalue_line(
        "markers",
        "flood: floods, slow clients and soak (tests/test_floods.py, tests/test_soak.py, "
        "tests/test_wsgi_limits.py); "
        "they run by default, `-m 'not flood'` deselects them",
    )
    config.addinivalue_line(
        "markers",
        "serial: bounds a duration, a memory size or a load, so it must run with no other "
        "test beside it (scripts/test runs these after the others, alone; --serial skip|only)",
    )
    for mode in MODES:
        config.addinivalue_line(
            "markers", f"{mode}: HTTP conformance test run in --http {mode} mode"
        )


def item_mode(item) -> str | None:
    """The mode a test runs in: its `c` or `python` mark, which the `mode` fixture's
    params carry. A `mode` parametrized by hand gets its mark here, so that `-m c` /
    `-m python` select it too."""
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("mode") if callspec is not None else None
    if mode in MODES and item.get_closest_marker(mode) is None:
        item.add_marker(mode)
    marked = [mode for mode in MODES if item.get_closest_marker(mode) is not None]
    return marked[0] if len(marked) == 1 else None


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the marks added here
def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("mode")
    serial = config.getoption("serial")
    selected, deselected = [], []
    for item in items:
        mode = item_mode(item)
        is_serial = item.get_closest_marker("serial") is not None
        if (wanted and mode is not None and mode not in wanted) or (
            serial is not None and is_serial != (serial == "only")
        ):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(
    params=[pytest.param(mode, id=mode, marks=getattr(pytest.mark, mode)) for mode in MODES]
)
def mode(request) -> str:
    """The protocol mode, "c" or "python" (`--http MODE`): the one way a test picks a
    mode, so that `--mode` and `-m c` / `-m python` select it."""
    return request.param


@pytest.fixture
def protocol_class(mode):
    """The HTTP protocol class of `mode`, for tests that drive it in-process."""
    if mode == "c":
        from fastserve._parser import HttpProtocol

        return HttpProtocol
    from fastserve.protocols.http.h11_impl import H11Protocol

    return H11Protocol


# -- server processes ----------------------------------------------------------------


def stop_and_check(server: ServerProcess, problems: list, timeout=15.0) -> None:
    """SIGTERM; a problem unless it exits with 0 within `timeout`. Killed in any case."""
    try:
        if not server.running:
            problems.append(
                f"server exited early with code {server.proc.returncode}\n{server.describe()}"
            )
            return
        try:
            code = server.stop(timeout=timeout)
        except AssertionError:
            problems.append(
                f"server did not exit within {timeout}s of SIGTERM\n{server.describe()}"
            )
            return
        if code != 0:
            problems.append(f"server exited with {code}\n{server.describe()}")
    finally:
        server.cleanup()


class ServerPool:
    def __init__(self):
        self.servers: dict = {}
        self.failed: dict = {}  # key -> why the server did not start (not retried)
        self.problems: list = []

    def get(self, app: str, mode: str, *flags: str) -> ServerProcess:
        key = (app, mode, flags)
        if key in self.failed:
            pytest.fail(f"(not retried) {self.failed[key]}", pytrace=False)
        server = self.servers.get(key)
        if server is not None and not server.running:
            self.problems.append(
                f"server died during the tests (exit code {server.proc.returncode})\n{server.describe()}"
            )
            server.cleanup()
            server = None
        if server is None:
            try:
                server = self.servers[key] = ServerProcess.http(app, mode, flags)
            except AssertionError as exc:
                self.failed[key] = str(exc)
                raise
        return server

    def close(self) -> None:
        for server in self.servers.values():
            stop_and_check(server, self.problems)
        self.servers.clear()


@pytest.fixture(scope="module")
def servers():
    pool = ServerPool()
    yield pool
    pool.close()
    assert not pool.problems, "\n\n".join(pool.problems)


@pytest.fixture
def server(servers, mode) -> ServerProcess:
    return servers.get(APP, mode)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """(key file, certificate file, a client context trusting their CA) for 127.0.0.1."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("tls")
    key_path = directory / "key.pem"
    cert_path = directory / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    with open(cert_path, "wb") as file:
        for pem in cert.cert_chain_pems:
            file.write(pem.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return str(key_path), str(cert_path), context


@pytest.fixture
def spawn():
    """Start `python -m fastserve ARGS` processes (ready unless `ready=False`); all are
    killed at the end of the test. Test files that start other commands define their own."""
    started: list[ServerProcess] = []

    def start(*args: str, ready: bool = True, **kwargs) -> ServerProcess:
        server = ServerProcess.fastserve(*args, **kwargs)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
def start_server():
    """Start dedicated servers; the test stops them (any left running are killed)."""
    started = []

    def start(app, mode, *flags, wait_ready=True, **kw) -> ServerProcess:
        """`ServerProcess.http(app, mode, flags, env=..., uds=..., host=...)`."""
        server = ServerProcess.http(app, mode, flags, ready=wait_ready, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
def token(request) -> str:
    """A token unique to this test (and mode) for EVENTS and log lines."""
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-") + f"-{time.monotonic_ns()}"
