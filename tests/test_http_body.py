"""Request and response bodies: Content-Length and chunked request bodies,
Expect: 100-continue, flow control both ways, http.disconnect."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from process_util import socket_inodes, start_thread, wait_until

pytestmark = pytest.mark.timeout(60)


def test_content_length_body(server):
    with server.client() as client:
        scope = client.request("POST", "/echo", body=b"hello world").json()
    assert scope["body"] == "hello world"
    assert scope["body_length"] == 11


def test_empty_content_length_body(server):
    with server.client() as client:
        scope = client.request("POST", "/echo", headers=[("Content-Length", "0")]).json()
    assert scope["body"] == ""
    assert scope["body_messages"] == 1


def test_get_without_body_gets_one_empty_request_message(server):
    with server.client() as client:
        scope = client.request("GET", "/echo").json()
    assert scope["body"] == "" and scope["body_messages"] == 1


def test_body_sent_in_pieces(server):
    with server.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for piece in (b"01", b"234", b"56789"):
            time.sleep(0.05)  # the stimulus: the body trickles in, a piece at a time
            client.send(piece)
        scope = client.read_response().json()
    assert scope["body"] == "0123456789"


def test_binary_body(server):
    body = bytes(range(256)) * 4
    with server.client() as client:
        scope = client.request("POST", "/echo", body=body).json()
    assert scope["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
            b"1\r\n \r\n"
            b"5\r\nworld\r\n"
            b"0\r\n\r\n"
        )
        scope = client.read_response().json()
        assert scope["body"] == "hello world"
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_empty_chunked_request_body(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        scope = client.read_response().json()
        assert scope["body"] == ""
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_chunked_request_body_with_extensions_and_trailers(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
            b'6;a=1;b="quoted"\r\n world\r\n'
            b"0;last\r\n"
            b"X-Trailer: yes\r\n"
            b"X-Other: 2\r\n"
            b"\r\n"
        )
        scope = client.read_response().json()
        assert scope["body"] == "hello world"
        # trailers are ignored: not in the headers
        assert all(name != "x-trailer" for name, _ in scope["headers"])
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_chunked_request_uppercase_hex_and_zero_padding(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0000A\r\n0123456789\r\n"
            b"1A\r\n" + b"z" * 26 + b"\r\n"
            b"0\r\n\r\n"
        )
        scope = client.read_response().json()
    assert scope["body"] == "0123456789" + "z" * 26


def test_chunked_request_body_split_everywhere(server):
    message = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: 1\r\n\r\n"
    )
    with server.client() as client:
        for i in range(len(message)):
            client.send(message[i : i + 1])
        scope = client.read_response().json()
    assert scope["body"] == "abcdefg"


def test_transfer_encoding_case_insensitive(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        scope = client.read_response().json()
    assert scope["body"] == "abc"


def test_body_not_read_by_app_then_next_request(server):
    """The app ignores the body; the connection must still frame the next request."""
    with server.client() as client:
        client.send(
            b"POST /_/noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = client.read_response()
        assert first.status == 200
        assert first.body == b"did not read the body"
        try:
            second = client.read_response()
        except client.Closed:
            return  # closing instead of draining is allowed
        assert second.json()["path"] == "/after"


# -- Expect: 100-continue ------------------------------------------------------------------


def test_expect_continue_when_app_reads(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = client.read_response()
        assert interim.status == 100
        assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        final = client.read_response()
        assert final.status == 200
        assert final.json()["body"] == "hello"
        # one 100 per request, and keep-alive goes on
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        assert client.read_response().status == 100
        client.send(b"abc")
        assert client.read_response().json()["body"] == "abc"


def test_expect_continue_chunked(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        assert client.read_response().status == 100
        client.send(b"3\r\nabc\r\n0\r\n\r\n")
        assert client.read_response().json()["body"] == "abc"


def test_expect_continue_not_sent_when_app_answers_without_reading(server):
    with server.client() as client:
        client.send(
            b"POST /_/noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        response = client.read_response()
        assert response.status == 200, "got an interim response though the app never read the body"
        assert response.body == b"did not read the body"


def test_expect_continue_not_sent_when_body_already_arrived(server):
    with server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
        )
        response = client.read_response()
        assert response.status == 200, response
        assert response.json()["body"] == "hello"


def test_expect_continue_ignored_for_http10(server):
    """RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request."""
    with server.client() as client:
        client.send(b"POST /_/upload HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        # no 100 Continue: the server waits for the body
        client.sock.settimeout(0.5)
        try:
            early = client.sock.recv(100)
        except socket.timeout:
            early = b""
        assert early == b"", f"got {early!r} before sending the body"
        client.sock.settimeout(10)
        client.send(b"hello")
        response = client.read_response()
        assert response.status == 200
        assert response.json()["length"] == 5


# -- flow control -------------------------------------------------------------------------


def test_large_upload_content_length(server):
    size = 20 * 1024 * 1024
    body = os.urandom(1024 * 1024) * 20
    with server.client(timeout=30) as client:
        client.send(b"POST /_/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        client.send(body)
        result = client.read_response().json()
    assert result["length"] == size
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["messages"] > 1


def test_large_upload_chunked(server):
    piece = os.urandom(100_000)
    count = 50
    with server.client(timeout=30) as client:
        client.send(b"POST /_/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        client.send(chunk * count + b"0\r\n\r\n")
        result = client.read_response().json()
    assert result["length"] == len(piece) * count
    assert result["sha256"] == hashlib.sha256(piece * count).hexdigest()


def test_upload_backpressure(server, token):
    """While the app does not read, the server stops reading the socket (so the
    client's sends block) instead of buffering the whole body in memory."""
    size = 200 * 1024 * 1024
    with server.client() as client:
        client.send(
            b"POST /_/slow-upload?pause=3&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (token.encode(), size)
            + b"\0" * 65536
        )
        assert server.wait_event(token, lambda events: "first message" in events) == [
            "first message"
        ]
        client.sock.setblocking(False)
        block = b"\0" * 65536
        accepted = 65536
        # The stimulus: the client pushes as hard as it can for 1.5 s while the app
        # does not read (the test measures how much got in meanwhile).
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and accepted < size:
            try:
                accepted += client.sock.send(block)
            except BlockingIOError:
                time.sleep(0.01)
        client.sock.setblocking(True)
    # kernel buffers on both sides may hold a few MB (autotuned); without flow
    # control the server reads as fast as the client writes (GB/s on loopback)
    assert accepted < 48 * 1024 * 1024, (
        f"server accepted {accepted} bytes while the app was not reading"
    )


def test_slow_reader_gets_every_byte_of_a_large_stream(server, token):
    size = 24 * 1024 * 1024
    chunk = 65536
    with server.client(timeout=30, rcvbuf=65536) as client:
        client.send(
            b"GET /_/big-stream?size=%d&chunk=%d&token=%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % (size, chunk, token.encode())
        )
        time.sleep(
            1.5
        )  # the stimulus: not reading; the server must wait, not drop or buffer everything
        response = client.read_response()
        assert response.status == 200
        assert response.chunked
        assert len(response.body) == size
        for index in range(size // chunk):
            piece = response.body[index * chunk : (index + 1) * chunk]
            assert piece == bytes([index % 251]) * chunk, f"chunk {index} is wrong"
        assert client.request("GET", "/after").json()["path"] == "/after"
    events = server.wait_event(token, lambda events: bool(events))
    assert events and events[0]["sent"] == size
    # send() awaited while the client was not reading (pause_writing honoured)
    assert events[0]["longest_send_wait"] > 0.5, events


def test_slow_reader_trickle(server):
    """A client that reads a little at a time still gets a complete stream."""
    size = 2 * 1024 * 1024
    with server.client(timeout=30, rcvbuf=16384) as client:
        client.send(b"GET /_/big-stream?size=%d&chunk=32768 HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        fill = client._fill

        def slow_fill():
            time.sleep(0.002)  # the stimulus: a slow reader
            return fill()

        client._fill = slow_fill
        response = client.read_response()
    assert len(response.body) == size


# -- http.disconnect ----------------------------------------------------------------------


def test_disconnect_delivered_when_client_goes_away(server, token):
    client = server.client()
    client.send(b"GET /_/wait-disconnect?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
    server.wait_event(token, lambda events: "waiting" in events)
    client.close()
    events = server.wait_event(token, lambda events: len(events) > 1)
    assert events == ["waiting", "http.disconnect"]


def test_disconnect_while_reading_body(server, token):
    client = server.client()
    client.send(
        b"POST /_/wait-disconnect?announce=1&token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100"
        b"\r\n\r\npartial" % token.encode()
    )
    assert server.wait_event(token, lambda events: bool(events)) == ["reading"]
    client.close()
    events = server.wait_event(token, lambda events: len(events) > 1)
    assert events == ["reading", "http.disconnect (while reading body)"]


def test_disconnect_after_response_complete(server, token):
    """receive() after the response completed gives http.disconnect, even while the
    connection stays open for the next request."""
    with server.client() as client:
        response = client.request("GET", f"/_/receive-after-response?token={token}")
        assert response.body == b"done"
        events = server.wait_event(token, lambda events: bool(events))
        assert events == ["http.disconnect"]
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_server_survives_many_abrupt_disconnects(server):
    def abort(data: bytes):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST

    shapes = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        b"GET /_/slow?delay=0.2 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /_/big-stream?size=5000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    sockets_before = len(socket_inodes(server.pid))
    threads = [start_thread(abort, shape) for shape in shapes * 4]
    for thread in threads:
        thread.join()
    # The server dealt with every aborted connection: it closed their sockets.
    wait_until(
        lambda: len(socket_inodes(server.pid)) <= sockets_before,
        30,
        message="the server to close the aborted connections",
    )
    with server.client() as client:
        assert client.request("GET", "/still-alive").json()["path"] == "/still-alive"
