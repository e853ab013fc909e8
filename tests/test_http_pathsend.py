"""The ASGI `http.response.pathsend` extension: the app names a file, the server
sends it. Every test runs in both modes and on both loops: uvloop (os.sendfile on
a duplicate of the socket, protocols/http/pathsend.py) and asyncio
(`loop.sendfile`, os.sendfile); TLS (the read loop, both loops) and Starlette's
FileResponse; then os.sendfile under uvloop against slow readers, over unix
sockets, and send_file in this process (the transport's buffer before the file, a
transport closed or a task cancelled while the file waits)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from urllib.parse import quote

import httpx
import pytest
import uvloop

from apps import pattern_chunk
from fastserve.protocols.asgi import ClientDisconnected
from fastserve.protocols.http.flow import FlowControl
from fastserve.protocols.http.pathsend import open_path, send_file
from process_util import open_paths, wait_until

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
STARLETTE_APP = "tests.apps_starlette:app"
# (sorted) every HTTP scope's extensions on a plain connection
EXTENSIONS = ["http.response.early_hint", "http.response.pathsend", "http.response.trailers"]
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


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_tls_file_and_pipelining(servers, mode, loop, tmp_path, tls_files):
    """The read loop: the file's bytes are encrypted, never sent past TLS."""
    key, cert, context = tls_files
    server = servers.get(APP, mode, "--loop", loop, "--ssl-keyfile", key, "--ssl-certfile", cert)
    path, data = make_file(tmp_path, MIB)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with server.client(sock=context.wrap_socket(raw, server_hostname="127.0.0.1")) as client:
        client.send(request + request + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().body == data
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"


# -- os.sendfile past the transport (uvloop) -------------------------------------------

# A receive buffer small enough that the server's socket fills again and again.
SMALL_RCVBUF = 4096
SLOW_READ = 4096
STREAMED_SIZE = 8 * MIB
STREAMED_CHUNK = 262144


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_file_is_not_read_through_the_executor(start_server, mode, loop, tmp_path):
    """Without TLS the kernel copies the file (os.sendfile) on both loops: no
    executor thread starts to read it."""
    server = start_server(APP, mode, "--loop", loop)
    path, data = make_file(tmp_path, MIB)
    with server.client() as client:
        assert client.request("GET", "/before").json()["path"] == "/before"
        threads = thread_count(server.pid)
        assert client.request("GET", target(path)).body == data
        assert thread_count(server.pid) == threads


def test_file_where_os_sendfile_is_missing(start_server, mode, tmp_path):
    """A platform without os.sendfile (emulated: the server's interpreter starts with
    it deleted): the file is read in the executor and written, pipelining intact."""
    startup = tmp_path / "startup"
    startup.mkdir()
    (startup / "sitecustomize.py").write_text("import os\n\ndel os.sendfile\n")
    python_path = os.pathsep.join(filter(None, [str(startup), os.environ.get("PYTHONPATH")]))
    server = start_server(APP, mode, env={"PYTHONPATH": python_path})
    path, data = make_file(tmp_path, MIB)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
    with server.client() as client:
        assert client.request("GET", "/before").json()["path"] == "/before"
        threads = thread_count(server.pid)
        client.send(request + request + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().body == data
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"
        assert thread_count(server.pid) > threads  # the executor's reader


def test_big_file_arrives_whole(loop_server, tmp_path, token):
    """Bigger than the socket buffers: the server waits for the socket many times."""
    path, data = make_file(tmp_path, BIG_FILE_SIZE)
    with httpx.Client(timeout=30) as client:
        response = client.get(loop_server.url(target(path, token)))
        assert response.content == data
        assert client.get(loop_server.url("/after")).json()["path"] == "/after"
    assert loop_server.get_events(token) == [EXTENSIONS, "sent"]


def test_slow_reader_gets_every_byte(loop_server, tmp_path):
    path, data = make_file(tmp_path, 4 * MIB)
    with loop_server.client(rcvbuf=SMALL_RCVBUF) as client:
        client.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode())
        assert client.read_head()[1] == 200
        received = bytearray(client.buffer)
        client.buffer.clear()
        while len(received) < len(data):
            chunk = client.sock.recv(SLOW_READ)
            assert chunk, f"closed after {len(received)} of {len(data)} bytes"
            received += chunk
        assert bytes(received) == data
        assert client.request("GET", "/after").json()["path"] == "/after"


def read_slowly_until_closed(client) -> None:
    """Receive all the server sends, SLOW_READ bytes at a time, into the client's
    buffer (its responses are read from there)."""
    while chunk := client.sock.recv(SLOW_READ):
        client.buffer += chunk
    client.eof = True


def test_pipelined_behind_a_big_streamed_response(loop_server, tmp_path):
    """The file waits for the bytes still in the transport's buffer (a streamed
    response's last chunks, for a client that reads slowly), then goes after them."""
    path, data = make_file(tmp_path, 4 * MIB)
    stream = f"/_/big-stream?size={STREAMED_SIZE}&chunk={STREAMED_CHUNK}"
    with loop_server.client(rcvbuf=SMALL_RCVBUF) as client:
        client.send(
            b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % stream.encode()
            + b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
            + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        read_slowly_until_closed(client)
        expected = b"".join(
            pattern_chunk(index, STREAMED_CHUNK) for index in range(STREAMED_SIZE // STREAMED_CHUNK)
        )
        assert client.read_response().body == expected
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_file_over_a_unix_socket(start_server, mode, loop, tmp_path):
    uds = str(tmp_path / "server.sock")
    server = start_server(APP, mode, "--loop", loop, uds=uds)
    path, data = make_file(tmp_path, 8 * MIB)
    request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target(path).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(uds)
    with server.client(sock=sock) as client:
        client.send(request + request + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().body == data
        assert client.read_response().body == data
        assert client.read_response().json()["path"] == "/last"


# -- send_file on uvloop, in this process: the transport's buffer, closing, cancelling -


class Connection(asyncio.Protocol):
    """The server side of one connection, with the flow control the protocols use."""

    def __init__(self, made: asyncio.Future) -> None:
        self.made = made

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport, asyncio.get_running_loop())
        self.made.set_result(self)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def connection_lost(self, exc) -> None:
        self.flow.resume_writing()


async def connect() -> tuple[Connection, socket.socket]:
    """A connection to a server on this loop, and its client socket (non-blocking,
    a small receive buffer, not read yet)."""
    loop = asyncio.get_running_loop()
    made = loop.create_future()
    server = await loop.create_server(lambda: Connection(made), "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname())
    server.close()  # (accepts no more; the connection stays)
    return await made, client


async def receive_all(client: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while len(received) < size:
        chunk = await loop.sock_recv(client, SLOW_READ)
        assert chunk, f"closed after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def sending(connection: Connection, path: str) -> tuple[asyncio.Task, int]:
    """send_file of `path` in a task, once it waits for the socket (the client reads
    nothing); and the number of fds open before it started."""
    fds = fd_count(os.getpid())
    opened = open_path(path)
    task = asyncio.create_task(send_file(connection.transport, connection.flow, opened))
    task.add_done_callback(lambda _task: opened.close())
    # the task only gives the loop back while it waits, with the file and the
    # socket's duplicate open
    while fd_count(os.getpid()) < fds + 2:
        await asyncio.sleep(0)
    return task, fds


def test_file_goes_after_the_transports_buffer(tmp_path):
    path, data = make_file(tmp_path, 4 * MIB)
    before = os.urandom(8 * MIB)  # more than the kernel's buffers hold

    async def main():
        connection, client = await connect()
        with client:
            connection.transport.write(before)
            assert connection.transport.get_write_buffer_size()
            receiving = asyncio.create_task(receive_all(client, len(before) + len(data)))
            opened = open_path(path)
            try:
                sent = await send_file(connection.transport, connection.flow, opened)
            finally:
                opened.close()
            assert sent == len(data)
            assert await receiving == before + data

    uvloop.run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_closing_while_the_file_waits(tmp_path, how):
    """The wait ends, the duplicate of the socket is closed: the client sees the
    connection end."""
    path, _ = make_file(tmp_path, BIG_FILE_SIZE)

    async def main():
        connection, client = await connect()
        with client:
            task, fds = await sending(connection, path)
            getattr(connection.transport, how)()
            with pytest.raises(ClientDisconnected):
                await task
            # the transport's socket is closed, and no duplicate of it is left
            assert fd_count(os.getpid()) == fds - 1
            loop = asyncio.get_running_loop()
            try:
                while await loop.sock_recv(client, PART_READ):
                    pass
            except ConnectionResetError:
                pass

    uvloop.run(main())


def test_cancelling_while_the_file_waits(tmp_path):
    path, _ = make_file(tmp_path, BIG_FILE_SIZE)

    async def main():
        connection, client = await connect()
        with client:
            task, fds = await sending(connection, path)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert fd_count(os.getpid()) == fds
            # the flow control still works: a new wait ends when the connection does
            waiting = connection.flow.drain()
            connection.transport.abort()
            await waiting

    uvloop.run(main())
