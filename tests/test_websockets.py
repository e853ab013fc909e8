"""WebSockets over ASGI (spec 2.4), end to end: a real `python -m fastserve` process
and real clients over real sockets, for every pair of HTTP mode (`mode`: c, python)
and framing library (`ws`: websockets, wsproto).

Most tests use the `websockets` client library (its asyncio API). What a well-behaved
client cannot do (frames that break RFC 6455, never answering pings, a frame in the
same packet as the handshake, not reading at all) goes through `RawWebSocket`, a
hand-made client on a plain socket. The apps are in tests/apps_websockets.py; what
an app saw after its client left is fetched from its `/_/events` route.

(The HTTP side of the handshake, refusals with 400 / 426: tests/test_websocket_handshake.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from flood_util import peak_rss_kib, rss_kib

pytestmark = pytest.mark.timeout(120)

APP = "tests.apps_websockets:app"
WS_LIBRARIES = ("websockets", "wsproto")
TIMEOUT = 30  # for anything a working server does at once
KIB = 1024
MIB = 1024 * KIB

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80
RSV1 = 0x40
MASKED = 0x80
LENGTH_16, LENGTH_64 = 126, 127  # the 7-bit length values announcing a longer length


@pytest.fixture(params=WS_LIBRARIES)
def ws(request) -> str:
    """The framing library, `--ws websockets` or `--ws wsproto`."""
    return request.param


@pytest.fixture
def server(servers, mode, ws):
    return servers.get(APP, mode, "--ws", ws)


def run(coroutine):
    """Run a client coroutine to its end (failing after TIMEOUT)."""
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def ws_url(server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def events(server, token: str, count: int = 1) -> list:
    """What the app recorded under `token`, once it recorded `count` things."""
    return server.wait_event(token, lambda found: len(found) >= count, timeout=TIMEOUT)


def bytes_written(pid: int) -> int:
    """Bytes `pid` wrote so far, sockets included (/proc/PID/io: wchar)."""
    with open(f"/proc/{pid}/io") as file:
        for line in file:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int]:
    """(send queue, receive queue) in bytes of the TCP socket local_port -> remote_port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            next(file)
            for line in file:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    tx_queue, rx_queue = fields[4].split(":")
                    return int(tx_queue, 16), int(rx_queue, 16)
    raise AssertionError(f"no TCP socket {local_port} -> {remote_port}")


# -- a hand-made client --------------------------------------------------------------------


def encode_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv1: bool = False
) -> bytes:
    """One frame as RFC 6455 5.2 lays it out; masked unless `mask` is false; `rsv1`
    marks a compressed message (RFC 7692)."""
    head = bytearray([(FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode])
    mask_bit = MASKED if mask else 0
    if len(payload) < LENGTH_16:
        head.append(mask_bit | len(payload))
    elif len(payload) < 1 << 16:
        head.append(mask_bit | LENGTH_16)
        head += struct.pack("!H", len(payload))
    else:
        head.append(mask_bit | LENGTH_64)
        head += struct.pack("!Q", len(payload))
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return bytes(head) + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawWebSocket:
    """A WebSocket client on a plain socket: a hand-made handshake (with header lines
    `headers`, and `first_data` in the same send), then frames exactly as given;
    server frames are read unmasked."""

    def __init__(
        self,
        server,
        path: str,
        first_data: bytes = b"",
        receive_buffer: int = 0,
        headers: bytes = b"",
    ):
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.port))
        key = base64.b64encode(os.urandom(16))
        request = (
            b"GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
        ) % (path.encode(), key, headers)
        self.sock.sendall(request + first_data)
        self.buffer = bytearray()
        while b"\r\n\r\n" not in self.buffer:
            self._receive_more()
        end = self.buffer.index(b"\r\n\r\n") + 4
        self.head = bytes(self.buffer[:end])
        del self.buffer[:end]
        assert self.head.startswith(b"HTTP/1.1 101 "), self.head

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def _receive_more(self) -> None:
        data = self.sock.recv(MIB)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._receive_more()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def send(self, opcode: int, payload: bytes, **kwargs) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **kwargs))

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server, which must be a
        final, unmasked frame without reserved bits."""
        first, second = self._take(2)
        assert first & 0x70 == 0 and first & FIN, f"unexpected frame flags {first:#x}"
        assert not second & MASKED, "the server masked a frame"
        length = second & 0x7F
        if length == LENGTH_16:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == LENGTH_64:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def read_close(self) -> tuple[int, str]:
        """The close frame the server sends next (code, reason)."""
        opcode, payload = self.read_frame()
        assert opcode == OP_CLOSE, (opcode, payload[:100])
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def wait_eof(self) -> None:
        """The server closes the connection (anything it still sends is ignored)."""
        with pytest.raises(EOFError):
            while True:
                self._receive_more()
                self.buffer.clear()


# -- messages ------------------------------------------------------------------------------


def test_echo_text_and_binary(server, token):
    async def client():
        async with connect(ws_url(server, f"/echo?token={token}")) as websocket:
            await websocket.send("héllo")
            assert await websocket.recv() == "héllo"
            await websocket.send(b"\x00\x01binary\xff")
            assert await websocket.recv() == b"\x00\x01binary\xff"

    run(client())
    assert events(server, token) == [{"code": 1000, "reason": ""}]
    server.wait_for_log(rf'"GET /echo\?token={token} HTTP/1\.1" 101 Switching Protocols\n')


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_one_mib_message(server, kind):
    message = "ü" * (MIB // 2) if kind == "text" else os.urandom(MIB)

    async def client():
        async with connect(ws_url(server, "/echo"), max_size=None) as websocket:
            await websocket.send(message)
            assert await websocket.recv() == message

    run(client())


def test_thousand_messages_arrive_in_order(server):
    count = 1000

    async def client():
        async with connect(ws_url(server, "/echo")) as websocket:
            for index in range(count):
                await websocket.send(str(index))
            received = [await websocket.recv() for _ in range(count)]
            assert received == [str(index) for index in range(count)]

    run(client())


def test_fifty_concurrent_clients(server):
    clients = 50
    messages = 10

    async def one(number: int) -> None:
        async with connect(ws_url(server, "/echo")) as websocket:
            for index in range(messages):
                await websocket.send(f"{number}-{index}")
                assert await websocket.recv() == f"{number}-{index}"

    async def all_clients():
        await asyncio.gather(*(one(number) for number in range(clients)))

    run(all_clients())


def test_subprotocol_and_extra_accept_headers(server):
    async def client():
        async with connect(
            ws_url(server, "/subprotocol"), subprotocols=["chat", "superchat"]
        ) as websocket:
            assert websocket.subprotocol == "superchat"  # the app's choice, not the first
            assert websocket.response.headers["x-extra"] == "yes"
            assert websocket.response.headers["server"] == "fastserve"
            await websocket.send("hi")
            assert await websocket.recv() == "hi"

    run(client())


def test_permessage_deflate_is_negotiated_and_compresses(server):
    compressible = "a" * MIB

    async def client():
        async with connect(ws_url(server, "/echo"), max_size=None) as websocket:
            assert "permessage-deflate" in websocket.response.headers["sec-websocket-extensions"]
            written = bytes_written(server.pid)
            await websocket.send(compressible)
            assert await websocket.recv() == compressible
            # 1 MiB of "a" went back in a few KiB
            assert bytes_written(server.pid) - written < MIB // 16

    run(client())


def test_permessage_deflate_can_be_turned_off(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, "--ws-per-message-deflate", "false")
    message = "a" * MIB

    async def client():
        async with connect(ws_url(server, "/echo"), max_size=None) as websocket:
            assert "sec-websocket-extensions" not in websocket.response.headers
            written = bytes_written(server.pid)
            await websocket.send(message)
            assert await websocket.recv() == message
            assert bytes_written(server.pid) - written >= MIB

    run(client())


def test_starlette_websocket_endpoint(server, token):
    async def client():
        url = ws_url(server, f"/starlette/echo?token={token}")
        async with connect(url, subprotocols=["graphql-ws"]) as websocket:
            assert websocket.subprotocol == "graphql-ws"
            await websocket.send("text")
            assert await websocket.recv() == "text"
            await websocket.send(b"bytes")
            assert await websocket.recv() == b"bytes"
            await websocket.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "starlette bye")
        async with connect(url) as websocket:
            await websocket.close(code=4003)

    run(client())
    assert events(server, token) == [{"code": 4003, "reason": ""}]


# -- pings -----------------------------------------------------------------------------------


def test_client_pings_are_answered(server):
    async def client():
        async with connect(ws_url(server, "/echo")) as websocket:
            pong = await websocket.ping(b"are you there")
            await asyncio.wait_for(pong, TIMEOUT)

    run(client())
    with RawWebSocket(server, "/echo") as raw:
        raw.send(OP_PING, b"raw ping")
        assert raw.read_frame() == (OP_PONG, b"raw ping")


PING_FLAGS = ("--ws-ping-interval", "0.2", "--ws-ping-timeout", "1")


def test_server_pings_on_the_interval(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, *PING_FLAGS)
    with RawWebSocket(server, "/echo") as raw:
        payloads = set()
        for _ in range(3):
            opcode, payload = raw.read_frame()
            assert opcode == OP_PING
            payloads.add(payload)
            raw.send(OP_PONG, payload)
        assert len(payloads) == 3  # each ping has its own payload
        raw.send(OP_TEXT, b"still open")
        opcode, payload = raw.read_frame()
        while opcode == OP_PING:
            raw.send(OP_PONG, payload)
            opcode, payload = raw.read_frame()
        assert (opcode, payload) == (OP_TEXT, b"still open")


def test_unanswered_ping_closes_with_1011(servers, mode, ws, token):
    server = servers.get(APP, mode, "--ws", ws, *PING_FLAGS)
    with RawWebSocket(server, f"/echo?token={token}") as raw:
        opcode, _ = raw.read_frame()
        assert opcode == OP_PING
        assert raw.read_close()[0] == 1011
        raw.wait_eof()
    assert events(server, token)[0]["code"] == 1011


# -- closing -----------------------------------------------------------------------------------


def test_server_close_code_and_reason_reach_the_client(server):
    async def client():
        async with connect(ws_url(server, "/close?code=4001&reason=done")) as websocket:
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd.code == 4001
            assert closed.value.rcvd.reason == "done"

    run(client())


def test_client_close_code_reaches_the_app(server, token):
    async def client():
        async with connect(ws_url(server, f"/echo?token={token}")) as websocket:
            await websocket.close(code=4000, reason="bye now")

    run(client())
    assert events(server, token) == [{"code": 4000, "reason": "bye now"}]


def test_dropped_connection_is_1006_for_the_app(server, token):
    with RawWebSocket(server, f"/echo?token={token}") as raw:
        raw.send(OP_TEXT, b"x")
        assert raw.read_frame() == (OP_TEXT, b"x")
    assert events(server, token) == [{"code": 1006, "reason": ""}]


def test_send_after_disconnect_raises_client_disconnected(server, token):
    async def client():
        async with connect(ws_url(server, f"/send-after-disconnect?token={token}")):
            pass

    run(client())
    assert events(server, token) == [["ClientDisconnected", True]]


def test_sigterm_closes_open_websockets_with_1012(start_server, mode, ws, token):
    server = start_server(APP, mode, "--ws", ws)

    async def client():
        async with connect(ws_url(server, f"/shutdown-watch?token={token}")) as websocket:
            assert await websocket.recv() == "ready"
            server.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd.code == 1012

    run(client())
    assert server.wait(TIMEOUT) == 0
    assert f"DISCONNECT {token} 1012" in server.output("err")


def test_sigterm_drops_websockets_not_yet_accepted(start_server, mode, ws, token):
    server = start_server(APP, mode, "--ws", ws)

    async def client():
        url = ws_url(server, f"/shutdown-watch?token={token}&accept=no")
        connecting = asyncio.ensure_future(connect(url).__aenter__())
        await asyncio.to_thread(server.wait_for_log, f"WAITING {token}")
        server.send_signal(signal.SIGTERM)
        with pytest.raises(InvalidMessage):  # closed without an HTTP response
            await connecting

    run(client())
    assert server.wait(TIMEOUT) == 0
    assert f"DISCONNECT {token} 1012" in server.output("err")


# -- refusing the handshake --------------------------------------------------------------------


def test_close_before_accept_is_403(server, token):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, f"/reject?token={token}")):
                pass
        assert refused.value.response.status_code == 403

    run(client())
    server.wait_for_log(rf'"GET /reject\?token={token} HTTP/1\.1" 403 Forbidden\n')


def test_http_response_extension(server):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, "/http-response")):
                pass
        response = refused.value.response
        assert response.status_code == 418
        assert response.headers["x-teapot"] == "short and stout"
        assert response.headers["content-type"] == "text/plain"
        assert response.body == b"I'm a teapot"

    run(client())
    server.wait_for_log(r'"GET /http-response HTTP/1\.1" 418 I\'m a Teapot\n')


def test_app_error_before_accept_is_500_and_one_log_line(server, token):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, f"/raise-before?token={token}")):
                pass
        assert refused.value.response.status_code == 500

    run(client())
    server.wait_for_log(
        rf'"GET /raise-before\?token={token} HTTP/1\.1" 500 Internal Server Error\n'
    )
    server.wait_for_log(f"RuntimeError: boom-before-accept {token}")
    errors = server.output("err")
    assert errors.count(token) == 1, errors  # the traceback's last line, once
    assert "Exception in ASGI application" in errors


def test_app_error_after_accept_is_1011(server, token):
    async def client():
        async with connect(ws_url(server, f"/raise-after?token={token}")) as websocket:
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd.code == 1011

    run(client())
    server.wait_for_log(f"RuntimeError: boom-after-accept {token}")


def test_returning_without_accepting_is_500(server, token):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, f"/return-without-accept?token={token}")):
                pass
        assert refused.value.response.status_code == 500

    run(client())
    server.wait_for_log(
        rf'"GET /return-without-accept\?token={token} HTTP/1\.1" 500 Internal Server Error\n'
    )
    server.wait_for_log("ASGI callable returned without starting response")


def test_invalid_message_is_500_and_names_the_message(server, token):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, f"/invalid-message?token={token}")):
                pass
        assert refused.value.response.status_code == 500

    run(client())
    server.wait_for_log(
        r"ASGIMessageError: Expected ASGI message 'websocket.accept' or .* but got 'websocket.send'"
    )


# -- what a client may not send ----------------------------------------------------------------

PROTOCOL_ERRORS = {
    # case: (frame bytes, the close code)
    "unmasked-frame": (encode_frame(OP_TEXT, b"hello", mask=False), 1002),
    "bad-utf8-text": (encode_frame(OP_TEXT, b"ok \xff\xfe not utf-8"), 1007),
    "control-frame-over-125": (encode_frame(OP_PING, b"p" * 126), 1002),
    "reserved-opcode": (encode_frame(0x3, b"what"), 1002),
    "bad-close-code": (encode_frame(OP_CLOSE, close_payload(999)), 1002),
    "reserved-close-code": (encode_frame(OP_CLOSE, close_payload(1005)), 1002),
    "continuation-first": (encode_frame(OP_CONT, b"orphan"), 1002),
}


@pytest.mark.parametrize("case", PROTOCOL_ERRORS)
def test_protocol_error_closes_with_its_code(server, token, case):
    frame, code = PROTOCOL_ERRORS[case]
    logged_before = len(server.output("err"))
    with RawWebSocket(server, f"/echo?token={token}") as raw:
        raw.sock.sendall(frame)
        assert raw.read_close()[0] == code
        raw.wait_eof()
    assert events(server, token)[0]["code"] == code
    new_lines = server.output("err")[logged_before:]
    assert "ERROR" not in new_lines and "WARNING" not in new_lines, new_lines


def test_message_over_max_size_closes_with_1009(servers, mode, ws, token):
    server = servers.get(APP, mode, "--ws", ws, "--ws-max-size", "1024")

    async def client():
        async with connect(ws_url(server, f"/echo?token={token}")) as websocket:
            await websocket.send("x" * 1024)  # at the limit: fine
            assert await websocket.recv() == "x" * 1024
            await websocket.send("x" * 1025)
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd.code == 1009

    run(client())
    assert events(server, token)[0]["code"] == 1009


def test_fragmented_message_over_max_size_closes_with_1009(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, "--ws-max-size", "1024")
    with RawWebSocket(server, "/echo") as raw:
        raw.send(OP_BINARY, b"a" * 600, fin=False)
        raw.send(OP_CONT, b"b" * 600)
        assert raw.read_close()[0] == 1009


@pytest.mark.serial  # bounds the server's memory (RSS)
def test_compressed_bomb_closes_with_1009_without_inflating_it(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, "--ws-max-size", "1024")
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    zeros = bytes(MIB)
    bomb = b"".join(compressor.compress(zeros) for _ in range(128))  # 128 MiB of zeros
    bomb += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]  # RFC 7692 7.2.1 drops 00 00 ff ff
    peak_before = peak_rss_kib(server.pid)
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    with RawWebSocket(server, "/echo", headers=offer) as raw:
        assert b"permessage-deflate" in raw.head
        raw.send(OP_BINARY, bomb, rsv1=True)
        assert raw.read_close()[0] == 1009
    growth = (peak_rss_kib(server.pid) - peak_before) * KIB
    assert growth < 32 * MIB, f"server peak RSS grew by {growth / MIB:.1f} MiB"


def test_app_runs_in_a_named_task(server):
    async def client():
        async with connect(ws_url(server, "/task")) as websocket:
            return await websocket.recv()

    assert run(client()) == "fastserve.websocket"


def test_first_frame_in_the_handshake_packet_is_echoed(server):
    with RawWebSocket(server, "/echo", first_data=encode_frame(OP_TEXT, b"right away")) as raw:
        assert raw.read_frame() == (OP_TEXT, b"right away")


def test_fragmented_message_is_joined(server):
    with RawWebSocket(server, "/echo") as raw:
        raw.send(OP_TEXT, b"frag", fin=False)
        raw.send(OP_PING, b"in between")
        raw.send(OP_CONT, "mént".encode())
        assert raw.read_frame() == (OP_PONG, b"in between")
        assert raw.read_frame() == (OP_TEXT, "fragmént".encode())


# -- flow control ------------------------------------------------------------------------------


@pytest.mark.serial  # bounds the server's memory (RSS)
def test_non_reading_client_keeps_server_memory_bounded(server, token):
    count = 64  # 64 MiB in all: an unbounded server would hold most of it
    rss_before = rss_kib(server.pid)
    path = f"/stream?token={token}&count={count}&size={MIB}"
    with RawWebSocket(server, path, receive_buffer=64 * 1024) as raw:
        events(server, token)  # streaming started
        time.sleep(2)  # the stimulus: time to buffer everything, for a server that would
        sent = server.get_events(token)[0]
        growth = (rss_kib(server.pid) - rss_before) * KIB
        assert sent < count, "the app never waited for the client"
        assert growth < 32 * MIB, f"server RSS grew by {growth / MIB:.1f} MiB"
        for index in range(count):  # now read: everything comes, in order
            opcode, payload = raw.read_frame()
            assert opcode == OP_BINARY and len(payload) == MIB
            assert int.from_bytes(payload[:8], "big") == index
        assert raw.read_close()[0] == 1000


def test_unread_messages_pause_reading_and_all_arrive_in_order(server, token):
    count = 400
    padding = "x" * (64 * 1024)  # 25 MiB in all: more than the kernel buffers hold

    async def client():
        path = f"/wait-then-read?token={token}&count={count}"
        async with connect(ws_url(server, path), compression=None) as websocket:
            client_port = websocket.transport.get_extra_info("sockname")[1]

            async def send_all():
                for index in range(count):
                    await websocket.send(f"{index}:{padding}")

            sending = asyncio.ensure_future(send_all())

            def backed_up():
                # the server does not read (its receive queue fills), the client cannot send
                server_queues = tcp_queues(server.port, client_port)
                client_queues = tcp_queues(client_port, server.port)
                return server_queues[1] > 0 and client_queues[0] > 0

            while not backed_up() and not sending.done():
                await asyncio.sleep(0.05)
            assert not sending.done(), "the server read everything without the app"
            with server.client() as http:
                assert http.request("GET", f"/_/go?token={token}").status == 200
            await sending
            assert json.loads(await websocket.recv()) == [count, True]

    run(client())


# -- scope and lifecycle, as for HTTP ------------------------------------------------------


@pytest.mark.parametrize(
    "style, client, scheme",
    [("x-forwarded", ["203.0.113.7", 0], "ws"), ("forwarded", ["198.51.100.9", 0], "wss")],
)
def test_scope_takes_only_the_style_s_proxy_headers(servers, mode, style, client, scheme):
    server = servers.get(APP, mode, "--proxy-headers-style", style)
    both_families = {
        "Forwarded": "for=198.51.100.9;proto=https",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "http",
    }

    async def scope_of_a_websocket():
        async with connect(ws_url(server, "/scope"), additional_headers=both_families) as websocket:
            return json.loads(await websocket.recv())

    scope = run(scope_of_a_websocket())
    assert (scope["client"], scope["scheme"]) == (client, scheme)


def test_scope_has_proxy_headers_root_path_and_lifespan_state(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, "--root-path", "/api")

    async def client():
        async with connect(
            ws_url(server, "/scope?x=1"),
            subprotocols=["chat", "superchat"],
            additional_headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
        ) as websocket:
            return json.loads(await websocket.recv())

    scope = run(client())
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["scheme"] == "wss"  # from the trusted proxy's X-Forwarded-Proto
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["root_path"] == "/api"
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/api/scope",
        "/api/scope",
        "x=1",
    )
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["state"] == {"from_lifespan": "yes"}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert ["sec-websocket-version", "13"] in scope["headers"]
    assert "method" not in scope


def test_request_pipelined_before_the_handshake_is_answered_first(server):
    """A GET and then a handshake in one packet: the GET's response comes first,
    then the 101, then the WebSocket works."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET /_/events?token=none HTTP/1.1\r\nHost: test\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % key
            + encode_frame(OP_TEXT, b"after both")
        )
        received = b""
        while received.count(b"\r\n\r\n") < 2 or not received.endswith(b"after both"):
            data = sock.recv(MIB)
            assert data, received
            received += data
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b"\r\n\r\n[]HTTP/1.1 101 " in received, received
    assert received.endswith(bytes([FIN | OP_TEXT, len(b"after both")]) + b"after both")


def test_handshake_pipelined_behind_a_request_reads_on(server):
    """A request with a body and then a handshake in one packet, no frame yet: reading
    pauses while the request is answered, and goes on after the hand-over."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"POST /_/events?token=none HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
        )
        received = b""
        while b"HTTP/1.1 101 " not in received or not received.endswith(b"\r\n\r\n"):
            data = sock.recv(MIB)
            assert data, received
            received += data
        sock.sendall(encode_frame(OP_TEXT, b"later"))
        echo = b""
        while not echo.endswith(b"later"):
            data = sock.recv(MIB)
            assert data, echo
            echo += data
    assert echo == bytes([FIN | OP_TEXT, len(b"later")]) + b"later"


def test_websockets_count_for_limit_concurrency(servers, mode, ws):
    server = servers.get(APP, mode, "--ws", ws, "--limit-concurrency", "1")

    async def client():
        async with connect(ws_url(server, "/echo")) as websocket:
            await websocket.send("held open")
            assert await websocket.recv() == "held open"
            with server.client() as http_client:
                return http_client.request("GET", "/_/events?token=none").status

    assert run(client()) == 503


def test_websockets_count_for_limit_max_requests(start_server, mode, ws):
    server = start_server(APP, mode, "--ws", ws, "--limit-max-requests", "2")

    async def client():
        for _ in range(2):
            async with connect(ws_url(server, "/echo")) as websocket:
                await websocket.send("one")
                assert await websocket.recv() == "one"

    run(client())
    # the process exits (and its supervisor replaces it)
    server.wait_for_log("Maximum request limit of 2 exceeded")
    server.wait_for_log(r"Worker \[\d+\] reached --max-requests; starting its replacement")
