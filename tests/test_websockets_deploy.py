"""WebSockets where they are deployed: under fastserve's own `--workers` supervisor,
under Gunicorn (`-k fastserve.workers.FastserveWorker`), and over TLS (`wss`).

Every test drives real server processes with the `websockets` client library: the
app of tests/apps_ws_deploy.py greets with its pid and scope, then echoes text and
bytes. A graceful stop (SIGTERM to the master) closes an open WebSocket with 1012
(service restart), and the master still exits 0. The WebSocket conversation itself
is tested in tests/test_websockets.py.
"""

from __future__ import annotations

import contextlib
import json
import signal

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import process_util
from process_util import ServerProcess

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_ws_deploy:app"
WS_IMPLEMENTATIONS = ("websockets", "wsproto")
NORMAL_CLOSURE = 1000
SERVICE_RESTART = 1012  # the close code of a graceful server stop
WORKERS = 2
# WebSockets opened one by one until every worker holds one: the kernel hands each
# accept to whichever worker wins it, so "both" is near-certain long before this.
MAX_CONNECTIONS = 64
TIMEOUT = 15  # seconds for a handshake, an answer, a close or a process exit
ECHOES = ("hello", "héllo ✓ wörld", b"\x00\x01binary\xff", bytes(range(256)) * 1024)


# -- the client ------------------------------------------------------------------------


def ws_url(server: ServerProcess, path: str = "/echo") -> str:
    scheme = "wss" if server.scheme == "https" else "ws"
    return f"{scheme}://{server.host}:{server.port}{path}"


def open_websocket(
    clients: contextlib.ExitStack, server: ServerProcess, **kwargs
) -> tuple[ClientConnection, dict]:
    """A WebSocket to the app (closed with `clients`) and its greeting ({"pid",
    "scheme", "path"})."""
    websocket = clients.enter_context(
        connect(ws_url(server), open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs)
    )
    return websocket, json.loads(websocket.recv(timeout=TIMEOUT))


def assert_echoes(websocket: ClientConnection) -> None:
    for message in ECHOES:
        websocket.send(message)
        assert websocket.recv(timeout=TIMEOUT) == message


def open_on_every_worker(
    clients: contextlib.ExitStack, server: ServerProcess, workers: set[int]
) -> list[ClientConnection]:
    """Open WebSockets (each checked to echo) until every worker holds at least one."""
    websockets: list[ClientConnection] = []
    seen: set[int] = set()
    while seen != workers and len(websockets) < MAX_CONNECTIONS:
        websocket, greeting = open_websocket(clients, server)
        websockets.append(websocket)
        assert greeting["pid"] in workers, (greeting, workers)
        seen.add(greeting["pid"])
        assert_echoes(websocket)
    assert seen == workers, f"{len(websockets)} WebSockets all landed on {seen} of {workers}"
    return websockets


def assert_stopped_with_service_restart(
    server: ServerProcess, websockets: list[ClientConnection]
) -> None:
    """SIGTERM to the master: every open WebSocket gets close code 1012 (the app sees
    it too), and the master exits 0."""
    server.send_signal(signal.SIGTERM)
    for websocket in websockets:
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None, closed.value
        assert closed.value.rcvd.code == SERVICE_RESTART, closed.value
    assert server.wait(TIMEOUT) == 0, server.describe()
    assert server.log().count(f"ws disconnect code={SERVICE_RESTART}") == len(websockets), (
        server.describe()
    )


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def clients():
    """An ExitStack for WebSocket clients: the ones still open are closed at teardown."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(params=WS_IMPLEMENTATIONS)
def ws(request) -> str:
    """The WebSocket implementation, `--ws NAME`."""
    pytest.importorskip(request.param)
    return request.param


@pytest.fixture
def start_gunicorn():
    """Start `gunicorn -k FastserveWorker -w 2 APP`, ready and its workers booted;
    killed at teardown if still running."""
    pytest.importorskip("gunicorn")
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = process_util.start_gunicorn(
            APP, "--graceful-timeout", str(TIMEOUT), workers=WORKERS
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


# -- tests ------------------------------------------------------------------------------


def test_workers_echo_on_every_worker_and_sigterm_closes_with_1012(start_server, clients, mode, ws):
    server = start_server(APP, mode, "--ws", ws, "--workers", str(WORKERS), "--no-access-log")
    workers = server.wait_workers(WORKERS)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=WORKERS)
    websockets = open_on_every_worker(clients, server, workers)
    assert_stopped_with_service_restart(server, websockets)


def test_gunicorn_echo_on_every_worker_and_sigterm_closes_with_1012(start_gunicorn, clients):
    server = start_gunicorn()
    websockets = open_on_every_worker(clients, server, server.workers())
    assert_stopped_with_service_restart(server, websockets)


def test_tls_wss_echo(start_server, mode, ws, tls_files):
    key, cert, context = tls_files
    server = start_server(APP, mode, "--ws", ws, "--ssl-keyfile", key, "--ssl-certfile", cert)
    assert server.scheme == "https"
    with contextlib.ExitStack() as clients:
        websocket, greeting = open_websocket(clients, server, ssl=context)
        assert greeting["scheme"] == "wss"
        assert greeting["path"] == "/echo"
        assert_echoes(websocket)
    server.wait_for_log(f"ws disconnect code={NORMAL_CLOSURE}")
    assert server.stop() == 0, server.describe()
