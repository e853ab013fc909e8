"""Strict chunked request-body framing, the same in both modes (llhttp's rules):
whitespace after the chunk size, bad chunk extensions, bare LF / lone CR line ends
(answered at once, not after a wait for a CRLF), obs-fold and bad trailer lines
are a 400 and a close; valid extensions and trailers are accepted (trailers are
ignored), also when every byte arrives in a TCP write of its own. Also: exactly
one SP between the method and the request-target."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

pytestmark = pytest.mark.timeout(60)

HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"


def assert_400_and_closed(server, data: bytes, pieces=None):
    """`data` (or `pieces`, one write each) gets a 400 and a close, quickly: the
    server must not wait for more bytes. The server still answers afterwards."""
    with server.client(timeout=5) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces or [data]:
            client.send(piece)
            if pieces:
                time.sleep(0.01)  # the stimulus: each piece in a TCP segment of its own
        response = client.read_response()
        assert response.status == 400, response
        assert response.header("connection") == "close"
        assert client.wait_closed() == b"", "bytes after the error response"
    with server.client() as client:
        assert client.request("GET", "/still-alive").json()["path"] == "/still-alive"


def assert_echoed(server, body: bytes, expected: bytes):
    with server.client() as client:
        client.send(HEAD + body + AFTER)
        scope = client.read_response().json()
        assert scope["body"] == expected.decode("latin-1")
        assert all(not name.startswith("x-t") for name, _ in scope["headers"]), "trailers leaked"
        assert client.read_response().json()["path"] == "/after"


# -- rejected ------------------------------------------------------------------------------

REJECTED = {
    # 1. whitespace after the chunk size (h11 strips it)
    "space-after-size": b"5 \r\nhello\r\n0\r\n\r\n",
    "tab-after-size": b"5\t\r\nhello\r\n0\r\n\r\n",
    "space-after-last-size": b"5\r\nhello\r\n0 \r\n\r\n",
    "space-before-extension": b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
    "space-after-semicolon": b"5; a=b\r\nhello\r\n0\r\n\r\n",
    "space-around-equals": b"5;a = b\r\nhello\r\n0\r\n\r\n",
    "space-in-last-extension": b"5\r\nhello\r\n0;a b\r\n\r\n",
    # chunk extensions llhttp rejects
    "extension-empty": b"5;\r\nhello\r\n0\r\n\r\n",
    "extension-trailing-semicolon": b"5;a=b;\r\nhello\r\n0\r\n\r\n",
    "extension-semicolon-after-quoted": b'5;a="x";\r\nhello\r\n0\r\n\r\n',
    "extension-bad-token-char": b"5;a=b@c\r\nhello\r\n0\r\n\r\n",
    "extension-double-equals": b"5;a==b\r\nhello\r\n0\r\n\r\n",
    "extension-quoted-name": b'5;"a"=b\r\nhello\r\n0\r\n\r\n',
    "extension-bytes-after-quote": b'5;a="x"y\r\nhello\r\n0\r\n\r\n',
    "extension-unterminated-quote": b'5;a="xy\r\nhello\r\n0\r\n\r\n',
    "extension-obs-text-token": b"5;a=\x80\r\nhello\r\n0\r\n\r\n",
    "extension-control-byte": b"5;a=b\x01\r\nhello\r\n0\r\n\r\n",
    "extension-nul": b"5;a\x00\r\nhello\r\n0\r\n\r\n",
    "extension-del-in-quoted": b'5;a="x\x7fy"\r\nhello\r\n0\r\n\r\n',
    "extension-control-in-quoted-pair": b'5;a="\\\x01"\r\nhello\r\n0\r\n\r\n',
    "extension-cr-inside": b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
    # chunk sizes
    "size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "size-leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
    "size-0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "size-overflow": b"10000000000000000\r\nhello\r\n0\r\n\r\n",
    # 2. bare LF / lone CR where CRLF is required (followed by more bytes here)
    "bare-lf-after-size": b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-after-data": b"5\r\nhello\n0\r\n\r\n",
    "bare-lf-after-last-chunk": b"5\r\nhello\r\n0\n\r\n",
    "bare-lf-final-line": b"5\r\nhello\r\n0\r\n\n",
    "bare-lf-after-trailer": b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
    "bare-lf-final-after-trailer": b"5\r\nhello\r\n0\r\nX-T: 1\r\n\n",
    "lone-cr-after-size": b"5\rhello\r\n0\r\n\r\n",
    "data-longer-than-size": b"5\r\nhelloo\r\n0\r\n\r\n",
    "data-not-followed-by-crlf": b"5\r\nhelloXX0\r\n\r\n",
    # 3. obs-fold and other trailer lines llhttp rejects
    "trailer-obs-fold-space": b"5\r\nhello\r\n0\r\nX-T: 1\r\n  more\r\n\r\n",
    "trailer-obs-fold-tab": b"5\r\nhello\r\n0\r\nX-T: 1\r\n\tmore\r\n\r\n",
    "trailer-leading-space": b"5\r\nhello\r\n0\r\n X-T: 1\r\n\r\n",
    "trailer-space-before-colon": b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
    "trailer-no-colon": b"5\r\nhello\r\n0\r\nX-T\r\n\r\n",
    "trailer-empty-name": b"5\r\nhello\r\n0\r\n: 1\r\n\r\n",
    "trailer-bad-name": b"5\r\nhello\r\n0\r\nX@T: 1\r\n\r\n",
    "trailer-control-byte": b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n",
    "trailer-del": b"5\r\nhello\r\n0\r\nX-T: a\x7f\r\n\r\n",
    "trailer-lone-cr": b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
    "trailer-content-length": b"5\r\nhello\r\n0\r\ncontent-length: 0\r\n\r\n",
    "trailer-transfer-encoding": b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
}


@pytest.mark.parametrize("body", REJECTED.values(), ids=REJECTED.keys())
def test_rejected(server, body):
    assert_400_and_closed(server, HEAD + body + AFTER)


# The same shapes with nothing after the bad byte: llhttp answers at once, so a
# server that waits for a CRLF (h11 waits for up to 64 KiB) fails with a timeout.
UNFINISHED = {
    "bare-lf-after-size": b"5\n",
    "bare-lf-after-size-then-data": b"5\nhello",
    "bare-lf-after-extension": b"5;a=b\n",
    "bare-lf-after-data": b"5\r\nhello\n",
    "bare-lf-after-last-chunk": b"5\r\nhello\r\n0\n",
    "bare-lf-final-line": b"5\r\nhello\r\n0\r\n\n",
    "bare-lf-after-trailer": b"5\r\nhello\r\n0\r\nX-T: 1\n",
    "lone-cr-after-size": b"5\rx",
    "lone-cr-after-data": b"5\r\nhello\rx",
    "obs-fold-trailer": b"5\r\nhello\r\n0\r\nX-T: 1\r\n more\r\n",
}


@pytest.mark.parametrize("body", UNFINISHED.values(), ids=UNFINISHED.keys())
def test_rejected_without_waiting_for_more(server, body):
    assert_400_and_closed(server, HEAD + body)


def test_bare_lf_in_its_own_write(server):
    assert_400_and_closed(server, b"", pieces=[HEAD, b"5", b"\n", b"hello"])
    assert_400_and_closed(server, b"", pieces=[HEAD + b"5\r\nhello", b"\n"])
    assert_400_and_closed(server, b"", pieces=[HEAD + b"5\r\nhello\r", b"x"])


# -- accepted ------------------------------------------------------------------------------

ACCEPTED = {
    "plain": b"5\r\nhello\r\n0\r\n\r\n",
    "extension-token": b"5;name=value\r\nhello\r\n0\r\n\r\n",
    "extension-no-value": b"5;a\r\nhello\r\n0\r\n\r\n",
    "extension-empty-value": b"5;a=\r\nhello\r\n0\r\n\r\n",
    "extensions-several": b'5;a=b;c;d="e f"\r\nhello\r\n0\r\n\r\n',
    "extension-empty-name-then-more": b"5;;a\r\nhello\r\n0\r\n\r\n",
    "extension-empty-name-with-value": b"5;=b\r\nhello\r\n0\r\n\r\n",
    "extension-quoted-escapes": b'5;a="x \\"y\\" \\\\ \t"\r\nhello\r\n0\r\n\r\n',
    "extension-quoted-obs-text": b'5;a="\x80\xff";b="\\\x80"\r\nhello\r\n0\r\n\r\n',
    "extension-quoted-semicolon": b'5;a="x;"\r\nhello\r\n0\r\n\r\n',
    "extension-empty-quoted": b'5;a=""\r\nhello\r\n0\r\n\r\n',
    "extension-on-last-chunk": b"5\r\nhello\r\n0;last=1\r\n\r\n",
    "size-leading-zeros": b"000000000000000000000000000005\r\nhello\r\n0000\r\n\r\n",
    "size-upper-and-lower-hex": b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "trailers": b"5\r\nhello\r\n0\r\nX-T1: 1\r\nX-T2:\r\nX-T3: a\tb \x80\xff \r\n\r\n",
    "trailer-host": b"5\r\nhello\r\n0\r\nHost: other\r\n\r\n",
}
ACCEPTED_BODY = {"size-upper-and-lower-hex": b"0123456789" * 2}


@pytest.mark.parametrize("name", ACCEPTED.keys())
def test_accepted(server, name):
    assert_echoed(server, ACCEPTED[name], ACCEPTED_BODY.get(name, b"hello"))


SMALL = (
    b"3;x=y\r\nabc\r\n"
    b'4;a="q;\\"z";b\r\ndefg\r\n'
    b"000a\r\n0123456789\r\n"
    b"0;end\r\n"
    b"X-T1: one\r\n"
    b"X-T2: two \x80\r\n"
    b"\r\n"
)


def test_small_body_one_byte_per_write(server):
    """Every byte in its own TCP write (TCP_NODELAY and a pause): size lines, CRLFs,
    extensions and trailers all arrive split at every position."""
    message = HEAD + SMALL + AFTER
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(message)):
            client.send(message[i : i + 1])
            time.sleep(0.001)  # the stimulus: one byte per TCP segment
        scope = client.read_response().json()
        assert scope["body"] == "abcdefg0123456789"
        assert all(not name.startswith("x-t") for name, _ in scope["headers"])
        assert client.read_response().json()["path"] == "/after"


def test_body_split_after_each_prefix(server):
    """The body in two writes, split at each position in turn, on one connection."""
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cut in range(1, len(SMALL)):
            client.send(HEAD + SMALL[:cut])
            time.sleep(0.002)  # the stimulus: the two parts in separate TCP segments
            client.send(SMALL[cut:])
            assert client.read_response().json()["body"] == "abcdefg0123456789", cut


def test_large_body_in_small_writes(server):
    """About 200 KB in chunks of many sizes (with extensions and a trailer) sent in
    writes of 1 to 13 bytes, then 4 KiB: a write ends everywhere in the framing."""
    sizes = [1, 2, 15, 16, 255, 4096, 65535, 65536, 70000, 3, 40000]
    data = bytes(range(256)) * (sum(sizes) // 256 + 1)
    framed, pos = [], 0
    for i, size in enumerate(sizes):
        framed.append(b'%x;i=%d;q="v %d"\r\n' % (size, i, i) + data[pos : pos + size] + b"\r\n")
        pos += size
    body = data[:pos]
    message = (
        HEAD.replace(b"/echo", b"/_/upload") + b"".join(framed) + b"0\r\nX-T: done\r\n\r\n" + AFTER
    )
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        steps = (1, 2, 3, 5, 7, 11, 13)
        offset = step = 0
        while offset < 20000:
            client.send(message[offset : offset + steps[step % len(steps)]])
            offset += steps[step % len(steps)]
            step += 1
        while offset < len(message):
            client.send(message[offset : offset + 4096])
            offset += 4096
        result = client.read_response().json()
        assert result["length"] == len(body)
        assert result["sha256"] == hashlib.sha256(body).hexdigest()
        assert client.read_response().json()["path"] == "/after"


def test_crlf_split_between_writes(server):
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (HEAD + b"5\r", b"\nhello\r", b"\n0\r", b"\nX-T: 1\r", b"\n\r", b"\n"):
            client.send(piece)
            time.sleep(0.01)  # the stimulus: each piece in a TCP segment of its own
        assert client.read_response().json()["body"] == "hello"
        assert client.request("GET", "/after").json()["path"] == "/after"


# -- request line: exactly one SP before the request-target (RFC 9112 section 3) ------------


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET   /a HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"OPTIONS  * HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"\r\nGET  / HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET ", b" / HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GE", b"T ", b" /", b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    ],
    ids=["two", "three", "asterisk-form", "after-empty-line", "split-between-spaces", "split-more"],
)
def test_two_spaces_before_target(server, pieces):
    assert_400_and_closed(server, b"", pieces=pieces)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /a   HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /a ", b" HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GE", b"T /", b"a ", b" HT", b"TP/1.1\r\nHost: x\r\n\r\n"],
    ],
    ids=["two", "three", "split-between-spaces", "split-more"],
)
def test_two_spaces_after_target(server, pieces):
    assert_400_and_closed(server, b"", pieces=pieces)


def test_two_spaces_before_target_in_pipelined_request(server):
    with server.client() as client:
        client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET  /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().json()["path"] == "/a"
        assert client.read_response().status == 400
        assert client.wait_closed() == b""


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET", b" ", b"/one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"G", b"E", b"T", b" ", b"/", b"o", b"ne HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET ", b"/one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"\r\n", b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\nGET", b" /one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\nGET ", b"/one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /one", b" ", b"HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"G", b"ET /o", b"ne", b" H", b"TTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /zero HTTP/1.1\r\nHost: x\r\n\r\nGET /one ", b"HTTP/1.1\r\nHost: x\r\n\r\n"],
    ],
    ids=[
        "split-at-space",
        "byte-by-byte",
        "split-after-space",
        "empty-line-first",
        "pipelined-split-at-space",
        "pipelined-split-after-space",
        "whole",
        "split-at-space-after-target",
        "split-in-version",
        "pipelined-split-after-space-after-target",
    ],
)
def test_one_space_around_target_in_pieces(server, pieces):
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            client.send(piece)
            time.sleep(0.01)  # the stimulus: each piece in a TCP segment of its own
        paths = [client.read_response().json()["path"]]
        if paths[0] == "/zero":
            paths.append(client.read_response().json()["path"])
        assert paths[-1] == "/one"
