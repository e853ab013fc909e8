"""The seed corpus of the fuzz harnesses: valid and hostile inputs, by name.

`python tests/fuzz/seeds.py` writes them to tests/fuzz/corpus/<harness>/<name> (the
files are committed; tests/test_fuzz_regressions.py checks they match this module
and replays them through every harness). The llhttp and http harnesses start from
the same requests, and the wsgi harness (the http one serving a WSGI app) from them
and requests for the WSGI adapter's paths; the websocket harness from frames sent
after a valid handshake; the http2 harness from frame scripts a client sends after
the preface's magic (built with `hyperframe`, header blocks with `hpack`).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR.parent))
sys.path.insert(0, str(FUZZ_DIR))

from fuzz_websocket import HANDSHAKE, RSV1, client_frame  # noqa: E402

from h2_raw import (  # noqa: E402
    DATA,
    END_STREAM,
    SETTINGS,
    WINDOW_MAX,
    WINDOW_UPDATE,
    raw_frame,
)

CORPUS_DIR = FUZZ_DIR / "corpus"


def get(target: bytes = b"/", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: example.com\r\n%s\r\n" % (method, target, extra)


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailers + b"\r\n"


TE = b"Transfer-Encoding: chunked\r\n"
TLS_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)

HTTP = {
    "get": get(),
    "get-query-percent": get(b"/a%20b/%2F?x=1&y=%ff#frag"),
    "head": get(method=b"HEAD"),
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "http10-keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    "absolute-form": b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "asterisk-options": get(b"*", method=b"OPTIONS"),
    "connect-authority": get(b"example.com:443", method=b"CONNECT"),
    "post-content-length": get(b"/p", b"Content-Length: 5\r\n", b"POST") + b"hello",
    "pipelined": get(b"/1")
    + get(b"/2", b"Content-Length: 3\r\n", b"POST")
    + b"abc"
    + get(b"/3", method=b"HEAD")
    + get(b"/4", b"Connection: close\r\n")
    + get(b"/after-close"),
    "chunked-extensions-trailers": get(b"/c", TE, b"POST")
    + b'5;name=value;q="quoted"\r\nhello\r\n3;x\r\nabc\r\n0\r\nTrailer-A: 1\r\nTrailer-B: 2\r\n\r\n',
    "chunked-pipelined": get(b"/c", TE, b"POST") + chunked(b"a" * 20, b"b") + get(b"/next"),
    "expect-100": get(b"/e", b"Expect: 100-continue\r\nContent-Length: 4\r\n", b"PUT") + b"data",
    "smuggle-cl-te": get(b"/", b"Content-Length: 6\r\n" + TE, b"POST") + b"0\r\n\r\nG",
    "smuggle-te-cl": get(b"/", TE + b"Content-Length: 3\r\n", b"POST")
    + b"8\r\nSMUGGLED\r\n0\r\n\r\n",
    "smuggle-te-te": get(b"/", TE + b"Transfer-Encoding: identity\r\n", b"POST") + chunked(b"x"),
    "smuggle-te-space": get(b"/", b"Transfer-Encoding : chunked\r\n", b"POST") + chunked(b"x"),
    "smuggle-te-xchunked": get(b"/", b"Transfer-Encoding: xchunked\r\n", b"POST") + chunked(b"x"),
    "smuggle-te-list": get(b"/", b"Transfer-Encoding: gzip, chunked\r\n", b"POST") + chunked(b"x"),
    "smuggle-cl-duplicate": get(b"/", b"Content-Length: 3\r\nContent-Length: 5\r\n", b"POST")
    + b"abcde",
    "smuggle-cl-same-twice": get(b"/", b"Content-Length: 3\r\nContent-Length: 3\r\n", b"POST")
    + b"abc",
    "smuggle-cl-list": get(b"/", b"Content-Length: 3, 3\r\n", b"POST") + b"abc",
    "smuggle-cl-plus": get(b"/", b"Content-Length: +3\r\n", b"POST") + b"abc",
    "smuggle-obs-fold": get(b"/", b"X-A: a\r\n b\r\n"),
    "smuggle-bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "smuggle-bare-cr": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "chunk-size-bad": get(b"/", TE, b"POST") + b"zz\r\nab\r\n0\r\n\r\n",
    "chunk-size-negative": get(b"/", TE, b"POST") + b"-1\r\na\r\n0\r\n\r\n",
    "chunk-size-overflow": get(b"/", TE, b"POST") + b"ffffffffffffffffff\r\na\r\n0\r\n\r\n",
    "chunk-size-space": get(b"/", TE, b"POST") + b"1 \r\na\r\n0\r\n\r\n",
    "chunk-size-empty-extension": get(b"/", TE, b"POST") + b"1;\r\na\r\n0\r\n\r\n",
    "chunk-data-no-crlf": get(b"/", TE, b"POST") + b"1\r\naXX0\r\n\r\n",
    "chunk-trailer-content-length": get(b"/", TE, b"POST")
    + chunked(b"a", trailers=b"Content-Length: 5\r\n"),
    "head-oversized": get(b"/", b"X-Big: " + b"a" * 3000 + b"\r\n"),
    "head-many-fields": get(b"/", b"".join(b"X-%d: v\r\n" % i for i in range(20))),
    "head-long-line": get(b"/" + b"a" * 600),
    "head-long-field": get(b"/", b"X-F: " + b"v" * 300 + b"\r\n"),
    "body-over-limit": get(b"/", b"Content-Length: 5000\r\n", b"POST") + b"a" * 100,
    "body-chunked-over-limit": get(b"/", TE, b"POST") + chunked(b"a" * 3000, b"b" * 3000),
    "host-missing": b"GET / HTTP/1.1\r\n\r\n",
    "host-twice": get(b"/", b"Host: other\r\n"),
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "two-spaces-after-method": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "version-2": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "method-unknown": b"GZET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-bytes": get(b"/", b"X-C: a\x00b\x7f\r\n"),
    "tls-client-hello": TLS_CLIENT_HELLO,
    "leading-empty-lines": b"\r\n\r\n" + get(),
    "upgrade-h2c": get(
        b"/",
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    ),
    "upgrade-websocket": HANDSHAKE + client_frame(0x1, b"hi"),
    "upgrade-websocket-bad-version": HANDSHAKE.replace(b"Version: 13", b"Version: 8"),
    "upgrade-websocket-post": HANDSHAKE.replace(b"GET", b"POST", 1),
}


EXPECT = b"Expect: 100-continue\r\n"
# The body limit of the harnesses (fuzz_http.LIMITS: the wsgi harness's too).
BODY_LIMIT = 4096

# What reaches the WSGI adapter's own paths: a body read in full before the call (in
# a Content-Length, chunked, or none; the limit), the 100 Continue its first receive
# sends, the environ of the headers (an underscore dropped, repeats joined, CGI's
# names), an upgrade that is a plain request to a WSGI app, one call after another.
WSGI = {
    "chunked-body": get(b"/c", TE + b"Content-Type: text/plain\r\n", b"POST")
    + chunked(b"one", b"two", b"three"),
    "chunked-empty": get(b"/c", TE, b"POST") + chunked(),
    "expect-100-chunked": get(b"/e", EXPECT + TE, b"POST") + chunked(b"data"),
    "expect-100-over-limit": get(b"/e", EXPECT + b"Content-Length: 5000\r\n", b"POST"),
    "expect-100-no-body": get(b"/e", EXPECT),
    "body-at-limit": get(b"/", b"Content-Length: %d\r\n" % BODY_LIMIT, b"POST") + b"a" * BODY_LIMIT,
    "body-content-length-zero": get(b"/", b"Content-Length: 0\r\n", b"POST"),
    "pipelined-bodies": get(b"/1", b"Content-Length: 3\r\n", b"POST")
    + b"abc"
    + get(b"/2", TE, b"PUT")
    + chunked(b"xy", b"z")
    + get(b"/3", EXPECT + b"Content-Length: 2\r\n", b"PATCH")
    + b"ok"
    + get(b"/4", method=b"DELETE"),
    "header-underscore": get(b"/", b"X-Auth_User: mallory\r\nX-Auth-User: alice\r\n"),
    "headers-repeated": get(b"/", b"Cookie: a=1\r\nCookie: b=2\r\nX-A: 1\r\nX-A: 2\r\n"),
    "http10-body": b"POST /p HTTP/1.0\r\nContent-Length: 4\r\n\r\nbody",
    "upgrade-websocket-then-get": HANDSHAKE + get(b"/after"),
    "path-encoded-bytes": get(b"/%00%e9%2f%25?q=%20"),
}


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_DEFLATED = _deflate(b"hello hello hello")

WEBSOCKET = {
    "text": client_frame(TEXT, "héllo".encode()),
    "binary": client_frame(BINARY, bytes(range(256))),
    "ping-pong": client_frame(PING, b"ping") + client_frame(PONG, b"unsolicited"),
    "close-normal": client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"),
    "close-empty": client_frame(CLOSE, b""),
    "close-one-byte": client_frame(CLOSE, b"\x03"),
    "close-reserved-code": client_frame(CLOSE, struct.pack("!H", 1005)),
    "close-bad-utf8-reason": client_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"),
    "fragmented": client_frame(TEXT, b"hel", fin=False) + client_frame(0x0, b"lo"),
    "fragmented-ping-between": client_frame(TEXT, b"hel", fin=False)
    + client_frame(PING, b"")
    + client_frame(0x0, b"lo"),
    "fragmented-utf8-split": client_frame(TEXT, "é".encode()[:1], fin=False)
    + client_frame(0x0, "é".encode()[1:]),
    "continuation-alone": client_frame(0x0, b"x"),
    "text-while-fragmented": client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"),
    "bad-utf8": client_frame(TEXT, b"\xc3\x28"),
    "bad-opcode": client_frame(0x3, b"x"),
    "rsv2": bytes([0x80 | 0x20 | TEXT]) + client_frame(TEXT, b"x")[1:],
    "unmasked": bytes([0x80 | TEXT, 2]) + b"hi",
    "control-fragmented": client_frame(PING, b"x", fin=False),
    "control-too-long": client_frame(PING, b"p" * 126),
    "oversized": client_frame(BINARY, b"x" * 5000),
    "length-64bit-huge": bytes([0x80 | BINARY, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + b"mask",
    "compressed": client_frame(TEXT, _DEFLATED, rsv=RSV1),
    "compressed-fragmented": client_frame(TEXT, _DEFLATED[:5], fin=False, rsv=RSV1)
    + client_frame(PING, b"")
    + client_frame(0x0, _DEFLATED[5:]),
    "compressed-bomb": client_frame(BINARY, _deflate(bytes(200_000)), rsv=RSV1),
    "compressed-garbage": client_frame(TEXT, b"\xff\xff\xff", rsv=RSV1),
    "messages-then-close": client_frame(TEXT, b"one")
    + client_frame(BINARY, b"two")
    + client_frame(CLOSE, struct.pack("!H", 4000)),
}


def request_block(path: bytes = b"/", method: bytes = b"GET", extra=(), encoder=None) -> bytes:
    """A request's header block (HPACK, a fresh encoder unless one is given)."""
    fields = [(b":method", method), (b":scheme", b"http"), (b":authority", b"h2.test")]
    return (encoder or hpack.Encoder()).encode([*fields, (b":path", path), *extra])


def headers(stream_id: int, block: bytes, *flags: str) -> bytes:
    return HeadersFrame(stream_id, block, flags=flags).serialize()


def data(stream_id: int, body: bytes, *flags: str, pad: int = 0) -> bytes:
    frame = DataFrame(stream_id, body, flags=flags)
    if pad:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    return frame.serialize()


UNKNOWN_FRAME_TYPE = 0xFA  # a frame type no RFC defines: ignored (RFC 9113 5.5)
SETTINGS_FRAME = SettingsFrame(0).serialize()  # the preface's SETTINGS, empty
SETTINGS_ACK = SettingsFrame(0, flags=["ACK"]).serialize()
GET = headers(1, request_block(), "END_STREAM", "END_HEADERS")
CONTENT_LENGTH_5 = [(b"content-length", b"5")]
POST_HEAD = headers(1, request_block(b"/p", b"POST", CONTENT_LENGTH_5), "END_HEADERS")
_SPLIT_BLOCK = request_block(b"/continued", extra=[(b"x-long", b"v" * 40)])
# A shared encoder: the second request's block refers to the first one's table entries.
_TABLE = hpack.Encoder()

HTTP2 = {
    "get": SETTINGS_FRAME + GET,
    "get-settings-ack": SETTINGS_FRAME + SETTINGS_ACK + GET,
    "get-with-settings": SettingsFrame(
        0, settings={SettingsFrame.HEADER_TABLE_SIZE: 0, SettingsFrame.INITIAL_WINDOW_SIZE: 10}
    ).serialize()
    + GET,
    "head": SETTINGS_FRAME + headers(1, request_block(method=b"HEAD"), "END_STREAM", "END_HEADERS"),
    "post-data": SETTINGS_FRAME + POST_HEAD + data(1, b"hello", "END_STREAM"),
    "post-data-split": SETTINGS_FRAME
    + POST_HEAD
    + data(1, b"he")
    + data(1, b"", pad=3)
    + data(1, b"llo", "END_STREAM"),
    "post-length-mismatch": SETTINGS_FRAME + POST_HEAD + data(1, b"toolong", "END_STREAM"),
    "post-over-limit": SETTINGS_FRAME
    + headers(1, request_block(b"/big", b"POST"), "END_HEADERS")
    + data(1, b"a" * 3000)
    + data(1, b"b" * 3000, "END_STREAM"),
    "trailers": SETTINGS_FRAME
    + headers(1, request_block(b"/t", b"POST"), "END_HEADERS")
    + data(1, b"body")
    + headers(1, hpack.Encoder().encode([(b"x-trailer", b"1")]), "END_STREAM", "END_HEADERS"),
    "streams-interleaved": SETTINGS_FRAME
    + headers(1, request_block(b"/1", b"POST", encoder=_TABLE), "END_HEADERS")
    + headers(3, request_block(b"/3", encoder=_TABLE), "END_STREAM", "END_HEADERS")
    + data(1, b"one", "END_STREAM")
    + headers(5, request_block(b"/5", encoder=_TABLE), "END_STREAM", "END_HEADERS"),
    "continuation": SETTINGS_FRAME
    + headers(1, _SPLIT_BLOCK[:10], "END_STREAM")
    + ContinuationFrame(1, _SPLIT_BLOCK[10:30]).serialize()
    + ContinuationFrame(1, _SPLIT_BLOCK[30:], flags=["END_HEADERS"]).serialize(),
    "continuation-interrupted": SETTINGS_FRAME
    + headers(1, _SPLIT_BLOCK[:10], "END_STREAM")
    + PingFrame(0, b"12345678").serialize(),
    "ping": SETTINGS_FRAME + PingFrame(0, b"pingpong").serialize() + GET,
    "ping-ack-unsolicited": SETTINGS_FRAME + PingFrame(0, b"pingpong", flags=["ACK"]).serialize(),
    "window-update": SETTINGS_FRAME
    + WindowUpdateFrame(0, 1 << 20).serialize()
    + headers(1, request_block(), "END_HEADERS")
    + WindowUpdateFrame(1, 1000).serialize()
    + data(1, b"", "END_STREAM"),
    "window-update-zero": SETTINGS_FRAME + raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
    "window-overflow": SETTINGS_FRAME
    + GET
    + raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW_MAX))
    + raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW_MAX)),
    "rst-stream": SETTINGS_FRAME
    + headers(1, request_block(), "END_HEADERS")
    + RstStreamFrame(1, 0x8).serialize()
    + headers(3, request_block(b"/after"), "END_STREAM", "END_HEADERS"),
    "rst-stream-idle": SETTINGS_FRAME + RstStreamFrame(7, 0x0).serialize(),
    "priority": SETTINGS_FRAME
    + PriorityFrame(3, depends_on=1, stream_weight=200).serialize()
    + GET,
    "goaway": SETTINGS_FRAME + GET + GoAwayFrame(0, last_stream_id=0).serialize(),
    "goaway-odd-last-stream": SETTINGS_FRAME + GET + GoAwayFrame(0, last_stream_id=1).serialize(),
    "data-after-end-stream": SETTINGS_FRAME + GET + data(1, b"late"),
    "data-on-idle-stream": SETTINGS_FRAME + data(9, b"x", "END_STREAM"),
    "data-on-stream-0": SETTINGS_FRAME + raw_frame(DATA, END_STREAM, 0, b"x"),
    "stream-id-even": SETTINGS_FRAME + headers(2, request_block(), "END_STREAM", "END_HEADERS"),
    "stream-id-lower": SETTINGS_FRAME
    + headers(5, request_block(), "END_STREAM", "END_HEADERS")
    + headers(3, request_block(), "END_STREAM", "END_HEADERS"),
    "hpack-garbage": SETTINGS_FRAME + headers(1, b"\xff\xff\xff\xff", "END_STREAM", "END_HEADERS"),
    "pseudo-header-missing": SETTINGS_FRAME
    + headers(1, hpack.Encoder().encode([(b":method", b"GET")]), "END_STREAM", "END_HEADERS"),
    "header-uppercase": SETTINGS_FRAME
    + headers(1, request_block(extra=[(b"X-Upper", b"v")]), "END_STREAM", "END_HEADERS"),
    "head-over-limit": SETTINGS_FRAME
    + headers(1, request_block(extra=[(b"x-big", b"v" * 3000)]), "END_STREAM", "END_HEADERS"),
    "frame-over-max-size": SETTINGS_FRAME + POST_HEAD + data(1, b"x" * 16385, "END_STREAM"),
    "settings-bad-push": SETTINGS_FRAME
    + SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 2}).serialize(),
    "settings-cut": raw_frame(SETTINGS, 0, 0, b"\x00\x03\x00"),
    "unknown-frame": SETTINGS_FRAME + raw_frame(UNKNOWN_FRAME_TYPE, 0xFF, 1, b"?") + GET,
    "no-settings-first": GET,
}

SEEDS = {
    "llhttp": HTTP,
    "http": HTTP,
    "wsgi": {**HTTP, **WSGI},
    "websocket": WEBSOCKET,
    "http2": HTTP2,
}


def main() -> None:
    for harness, seeds in SEEDS.items():
        directory = CORPUS_DIR / harness
        directory.mkdir(parents=True, exist_ok=True)
        for stale in set(path.name for path in directory.iterdir()) - set(seeds):
            (directory / stale).unlink()
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
    print("wrote %d seeds to %s" % (sum(map(len, SEEDS.values())), CORPUS_DIR))


if __name__ == "__main__":
    main()
