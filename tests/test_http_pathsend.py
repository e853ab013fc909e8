"""The ASGI `http.response.pathsend` extension: the app names a file, the server
sends it. Every test runs in both modes and on both loops: uvloop (the read loop
of protocols/http/pathsend.py) and asyncio (`loop.sendfile`, os.sendfile); TLS
(the read loop on asyncio) and Starlette's FileResponse at the end."""

from __future__ import annotations

import os
import socket
import struct
import time
from urllib.parse import quote

import httpx
import pytest

from process_util import open_paths, wait_until

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
STARLETTE_APP = "tests.apps:starlette_app"
EXTENSIONS = ["http.response.pathsend"]
MIB = 1 << 20
# Big enough that the client can stop reading (and go away) in the middle of it.
BIG_FILE_SIZE = 32 * MIB
PART_READ = 65536
FD_SETTLE = 0.2


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_server(request, servers, mode):
    return servers.get(APP, mode, "--loop", request.param)


def make_file(tmp_path, size: int, name: str = "data.bin") -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def target(path: str, token: str = "", **query) -> str:
    extra = "".join(f"&{name}={value}" for name, value in query.items())
    return f"/_/pathsend?path={quote(path)}&token={token}{extra}"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int) -> int:
    """The number of open fds of `pid`, once connections of earlier requests are
    closed: the same count twice, FD_SETTLE seconds apart."""
    counts = [fd_count(pid)]

    def settled():
        time.sleep(FD_SETTLE)
        counts.append(fd_count(pid))
        return counts[-1] == counts[-2]

    wait_until(settled, timeout=5)
    return counts[-1]


@pytest.mark.parametrize("size", [0, 13, MIB], ids=["empty", "small", "1MiB"])
def test_file_is_sent(loop_server, tmp_path, token, size):
    path, data = make_file(tmp_path, size)
    with httpx.Client(timeout=10) as client:
        response = client.get(loop_server.url(target(path, token)))
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        assert response.content == data
        # keep-alive: the connection serves the next request
        assert client.get(loop_server.url("/after")).json()["path"] == "/after"
    assert loop_server.get_events(token) == [EXTENSIONS, "sent"]


def test_head_gets_the_head_only(loop_server, tmp_path):
    path, _ = make_file(tmp_path, 1000)
    with loop_server.client() as client:
        response = client.request("HEAD", target(path))
        assert response.status == 200
        assert response.header("content-length") == "1000"
        assert response.body == b""
        assert client.request("GET", "/after").json()["path"] == "/after"


@pytest.mark.parametrize(
    "declared, error",
    [(999, "Response content longer than Content-Length"), (1001, "shorter than Content-Length")],
    ids=["file-longer", "file-shorter"],
)
def test_wrong_content_length_is_logged_and_closed(loop_server, tmp_path, token, declared, error):
    path, _ = make_file(tmp_path, 1000)
    with loop_server.client() as client:
        client.send(
            b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path, token, cl=declared).encode()
        )
        assert client.wait_closed() == b""  # nothing of the lying response
    assert loop_server.wait_output(error), loop_server.output()
    assert loop_server.get_events(token) == [EXTENSIONS, "sent"]


@pytest.mark.parametrize("kind", ["missing", "relative", "directory"])
def test_bad_path_is_500(loop_server, tmp_path, token, kind):
    """The head is written with the first body bytes, so a path that cannot be sent
    still gets a 500 (an invalid message: send() raised ASGIMessageError)."""
    path = {"missing": str(tmp_path / "missing"), "relative": "data.bin", "directory": "/"}[kind]
    with loop_server.client() as client:
        response = client.request("GET", target(path, token))
        assert response.status == 500
        assert response.header("connection") == "close"
        assert client.wait_closed() == b""
    assert loop_server.get_events(token) == [EXTENSIONS, "ASGIMessageError"]
    assert loop_server.wait_output("http.response.pathsend"), loop_server.output()


def test_disconnect_mid_file_is_quiet_and_closes_the_file(loop_server, tmp_path, token):
    path, _ = make_file(tmp_path, BIG_FILE_SIZE)
    pid = loop_server.pid
    fds_before = settled_fd_count(pid)
    output_before = len(loop_server.output())
    sock = socket.create_connection(("127.0.0.1", loop_server.port), timeout=10)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path, token).encode())
    received = 0
    while received < PART_READ:
        received += len(sock.recv(PART_READ))
    # reset, not a polite close: the server's next write fails at once
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    events = loop_server.wait_event(token, lambda events: len(events) > 1)
    assert events == [EXTENSIONS, "ClientDisconnected"]
    wait_until(lambda: path not in open_paths(pid), timeout=5)
    with loop_server.client() as client:
        assert client.request("GET", "/after").json()["path"] == "/after"
    assert settled_fd_count(pid) == fds_before, open_paths(pid)
    new_output = loop_server.output()[output_before:]
    assert "Traceback" not in new_output and "ERROR" not in new_output, new_output


def test_files_are_closed_after_each_response(loop_server, tmp_path):
    path, data = make_file(tmp_path, MIB)
    pid = loop_server.pid
    with loop_server.client() as client:
        assert client.request("GET", target(path)).body == data  # executor threads start
        fds_before = settled_fd_count(pid)
        for _ in range(5):
            assert client.request("GET", target(path)).body == data
            assert client.request("HEAD", target(path)).body == b""
        # (the last bytes reach the client a moment before the server closes the file)
        wait_until(lambda: path not in open_paths(pid), timeout=5)
        assert settled_fd_count(pid) == fds_before


def test_pipelined_after_pathsend(loop_server, tmp_path):
    path, data = make_file(tmp_path, MIB)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
    with loop_server.client() as client:
        client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + request + request)
        assert client.read_response().json()["path"] == "/first"
        assert client.read_response().body == data
        assert client.read_response().body == data
        client.send(request + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"


def test_starlette_file_response_uses_pathsend(servers, mode, tmp_path, token):
    server = servers.get(STARLETTE_APP, mode)
    path, data = make_file(tmp_path, MIB + 7)
    with httpx.Client(base_url=server.url(""), timeout=10) as client:
        response = client.get("/file", params={"path": path, "token": token})
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-length"] == str(len(data))
        events = client.get("/events", params={"token": token}).json()
    assert events == [EXTENSIONS, "http.response.start", "http.response.pathsend"]


def test_tls_file_and_pipelining(servers, mode, tmp_path, tls_files):
    key, cert, context = tls_files
    server = servers.get(
        APP, mode, "--loop", "asyncio", "--ssl-keyfile", key, "--ssl-certfile", cert
    )
    path, data = make_file(tmp_path, MIB)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with server.client(sock=context.wrap_socket(raw, server_hostname="127.0.0.1")) as client:
        client.send(request + request + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().body == data
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"
