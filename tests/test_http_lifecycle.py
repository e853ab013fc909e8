"""The server as a process: graceful shutdown, lifespan, app import errors, unix
sockets, TLS."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time

import httpx
import pytest

from process_util import port_accepts, wait_until

pytestmark = pytest.mark.timeout(45)

APP = "tests.apps:app"


# -- graceful shutdown ------------------------------------------------------------------


def test_graceful_shutdown_finishes_in_flight_request(start_server, mode, token):
    server = start_server(APP, mode)
    with server.client() as client:
        client.send(b"GET /_/slow?delay=1.5&token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        assert server.wait_event(token, lambda events: "started" in events) == ["started"]
        server.send_signal(signal.SIGTERM)
        response = client.read_response()
        assert response.status == 200
        assert response.json()["path"] == "/_/slow"
        # no keep-alive once shutting down
        assert client.wait_closed() == b""
    assert server.wait(10) == 0, server.describe()


def test_graceful_shutdown_stops_accepting(start_server, mode, token):
    """The listening socket closes when the shutdown starts, while a request is still
    in flight: its body is sent only once new connections are refused."""
    server = start_server(APP, mode)
    with server.client() as client:
        client.send(
            b"POST /_/slow-upload?pause=0&token=%s HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 10\r\n\r\nabc" % token.encode()
        )
        assert server.wait_event(token, lambda events: bool(events)) == ["first message"]
        server.send_signal(signal.SIGTERM)
        wait_until(
            lambda: not port_accepts(server.port), 15, message="the listening socket to close"
        )
        assert server.running
        client.send(b"defghij")
        response = client.read_response()
        assert (response.status, response.body) == (200, b"read everything")
    assert server.wait(15) == 0, server.describe()


@pytest.mark.serial  # bounds a duration
def test_shutdown_closes_idle_keep_alive_connections(start_server, mode):
    server = start_server(APP, mode)
    with server.client() as client:
        assert client.request("GET", "/idle").status == 200
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert client.wait_closed(timeout=5) == b""
        assert server.wait(5) == 0, server.describe()
    assert time.monotonic() - started < 3


def test_sigint_exits_zero(start_server, mode):
    server = start_server(APP, mode)
    with server.client() as client:
        assert client.request("GET", "/").status == 200
    server.send_signal(signal.SIGINT)
    assert server.wait(10) == 0, server.describe()


# -- lifespan -------------------------------------------------------------------------


def test_lifespan_shutdown_runs(start_server, mode, tmp_path):
    marker = tmp_path / "shutdown.txt"
    server = start_server(APP, mode, env={"FASTSERVE_TEST_SHUTDOWN_FILE": str(marker)})
    with server.client() as client:
        assert client.request("GET", "/").json()["state"]["token"] == "lifespan-ok"
    assert server.stop() == 0, server.describe()
    assert marker.read_text() == "shutdown complete"


def test_lifespan_startup_failure_exits_3(start_server, mode):
    server = start_server("tests.apps:failing_startup", mode, wait_ready=False)
    assert server.wait(15) == 3, server.describe()
    assert "startup failed on purpose" in server.output(), server.describe()
    assert "Fastserve running on" not in server.output()


# -- app import errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, name",
    [
        ("tests.no_such_module:app", "tests.no_such_module"),
        ("tests.apps:no_such_app", "no_such_app"),
        ("tests.apps", "tests.apps"),
    ],
    ids=["missing-module", "missing-attribute", "no-colon"],
)
def test_unimportable_app_one_clear_line(start_server, mode, target, name):
    server = start_server(target, mode, wait_ready=False)
    code = server.wait(15)
    assert code not in (None, 0), server.describe()
    stderr = server.output("err")
    assert "Traceback" not in server.output(), server.describe()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, server.describe()
    assert name in lines[0], server.describe()


# -- unix domain socket ------------------------------------------------------------------


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer
    path = tempfile.mkdtemp(prefix="fs-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_uds(start_server, mode, short_dir):
    path = os.path.join(short_dir, "s.sock")
    server = start_server(APP, mode, uds=path)
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=10) as client:
        response = client.get("/over/uds?x=1")
        assert response.status_code == 200
        scope = response.json()
        assert scope["path"] == "/over/uds"
        assert scope["query_string"] == "x=1"
        assert scope["client"] is None
        assert scope["server"] is None
        assert scope["scheme"] == "http"
        posted = client.post("/_/upload", content=b"u" * 100_000)
        assert posted.json()["length"] == 100_000
        streamed = client.get("/_/stream?parts=a,b,c")
        assert streamed.text == "abc"
    assert server.stop() == 0, server.describe()


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture
def tls_server(servers, mode, tls_files):
    key, cert, _ = tls_files
    return servers.get(APP, mode, "--ssl-keyfile", key, "--ssl-certfile", cert)


def test_tls_httpx(tls_server, tls_files):
    assert tls_server.scheme == "https"
    with httpx.Client(verify=tls_files[2], timeout=10) as client:
        response = client.get(tls_server.url("/secure?x=1"))
        assert response.status_code == 200
        scope = response.json()
        assert scope["scheme"] == "https"
        assert scope["path"] == "/secure"
        response = client.post(tls_server.url("/_/upload"), content=b"t" * 1_000_000)
        assert response.json()["length"] == 1_000_000
        assert client.get(tls_server.url("/_/stream?parts=x,y")).text == "xy"


def test_tls_raw_keep_alive_and_pipelining(tls_server, tls_files):
    context = tls_files[2]
    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    with tls_server.client(sock=sock) as client:
        client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().json()["path"] == "/a"
        assert client.read_response().json()["path"] == "/b"
        response = client.request("GET", "/_/stream?parts=p,q")
        assert response.chunked and response.body == b"pq"


def test_tls_plain_http_client_does_not_break_server(tls_server, tls_files):
    with tls_server.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            client.wait_closed(timeout=5)
        except OSError:
            pass
    with httpx.Client(verify=tls_files[2], timeout=10) as client:
        assert client.get(tls_server.url("/ok")).status_code == 200
