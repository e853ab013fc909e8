"""Differential parsing: the C mode (llhttp) and the pure mode (h11 plus our checks)
must read every byte stream the same way.

Hypothesis generates connections -- one or several pipelined requests with odd
methods, targets (origin, absolute and asterisk forms, percent-escapes, non-ASCII),
header sets (duplicates, odd whitespace, obs-fold, empty values, bad bytes) and
bodies (Content-Length variants, chunked with extensions and trailers) -- and cuts
them into pieces (random points, or every byte alone). Both protocols are driven
in-process (fake transport, real loop, real Config) with a recording app, and must
give the same record: every request the app saw (its scope and its whole body),
every byte written back (so the same statuses, the same error answers), and
whether the connection was closed.

FASTSERVE_HYPOTHESIS_EXAMPLES (default 1000) sets the examples per generated test;
raise it for a long run, e.g. `FASTSERVE_HYPOTHESIS_EXAMPLES=20000 pytest
tests/test_differential.py`. The fuzz corpus of the HTTP harnesses
(tests/fuzz/corpus/http/, llhttp/ and wsgi/, raw connection bytes, one file per input)
is replayed through both modes too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastserve.protocols.http.errors import error_response
from fastserve.protocols.http.h11_impl import H11Protocol
from fastserve.protocols.wsgi.environ import ENVIRON_EXTENSION
from protocol_fakes import Connection, make_settings

_parser = pytest.importorskip("fastserve._parser")

EXAMPLES = int(os.environ.get("FASTSERVE_HYPOTHESIS_EXAMPLES", "1000"))
CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
# Its directories (one per fuzz harness) that hold raw HTTP connections.
CORPUS_HARNESSES = ("http", "llhttp", "wsgi")

# The scope keys both modes set from the request (and from the fake transport).
SCOPE_KEYS = (
    "type",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
)
# Loop passes given to the protocol and the app after each piece of input.
SETTLE_ROUNDS = 30
# Seconds an app may take to see http.disconnect after the connection is lost.
APP_EXIT_TIMEOUT = 5.0

# -- the recording app and the driver ------------------------------------------------------

_seen: list = []  # the current connection's requests, in order


async def recording_app(scope, receive, send):
    record = {key: scope[key] for key in SCOPE_KEYS}
    record["headers"] = [tuple(header) for header in scope["headers"]]
    # (settings.wsgi: the environ's head variables, which each protocol builds itself)
    record["environ_head"] = scope["extensions"].get(ENVIRON_EXTENSION)
    record["body"] = b""
    record["complete"] = False
    _seen.append(record)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        record["body"] += message.get("body", b"")
        if not message.get("more_body"):
            record["complete"] = True
            break
    if record["complete"]:
        answer = b"%d" % len(_seen)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


SETTINGS = make_settings(recording_app, ws="none")
# The same with the protocols building a WSGI app's environ head (the recording app
# stays an ASGI app, so that the record is the same but for that): C (_parser.pyx's
# _wsgi_head) and pure (environ.head_variables) must build the same.
WSGI_SETTINGS = replace(SETTINGS, wsgi=True)
# Small limits, so that generated requests also cross them (414, 431, 413); and a
# root path, so that both modes' paths under --root-path are compared too.
LIMITED = make_settings(
    recording_app,
    ws="none",
    root_path="/mount%2F;x",
    limit_request_line=12,
    limit_request_fields=3,
    limit_request_field_size=30,
    limit_request_head=160,
    limit_request_body=10,
)
LIMITED = replace(LIMITED, wsgi=True)  # (the environ heads under --root-path, compared too)


async def _connection(protocol_class, pieces, settings) -> tuple[dict, bool]:
    """What one connection fed `pieces` gives: the requests the app saw, the bytes
    written back, whether it was closed, and whether it stopped reading; and
    whether (pure mode) an unfinished head is still waiting."""
    _seen.clear()
    conn = Connection(protocol_class, settings=settings)
    for piece in pieces:
        if not conn.deliver(piece):
            break  # asyncio delivers nothing to a closed or paused transport
        await conn.passes(SETTLE_ROUNDS)
    closed = conn.closed
    record = {
        "requests": _seen,
        "written": conn.data,
        "closed": closed,
        "paused": not conn.transport.reading and not closed,
    }
    # (pure mode only: an unfinished head waits in its buffer)
    protocol = conn.protocol
    waiting = bool(getattr(protocol, "pending", None)) and getattr(protocol, "cycle", 1) is None
    protocol.connection_lost(None)
    if conn.state.tasks:
        await asyncio.wait_for(
            asyncio.gather(*list(conn.state.tasks), return_exceptions=True), APP_EXIT_TIMEOUT
        )
    record["requests"] = list(_seen)
    return record, waiting


_loop = None  # one event loop for every connection of this module


def _run(coroutine):
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


@pytest.fixture(scope="module", autouse=True)
def _close_loop():
    global _loop
    yield
    if _loop is not None:
        _loop.close()
        _loop = None


# The end of a head, given to the pure mode when it still waits for one that the
# C mode has rejected already (see both_modes).
HEAD_END = b"\r\n\r\n"


def both_modes(pieces, defer_heads: bool = True, settings=SETTINGS) -> tuple[dict, dict]:
    """The records of both modes for a connection fed `pieces`.

    A deliberate difference: llhttp rejects a malformed head at its first bad
    byte; the pure mode looks at a head once it is complete (h11 parses whole
    heads), and sooner only for what cannot start a request, bare LF and lone CR.
    The answer is the same, later. So when the C mode has answered and the pure
    mode still waits for the rest of a head, the pure mode gets the end of the head
    and must then give the same record (unless `defer_heads` is false).
    """
    pieces = [piece for piece in pieces if piece]
    logging.disable(logging.WARNING)  # rejected requests log a line each
    try:
        c_mode, _ = _run(_connection(_parser.HttpProtocol, pieces, settings))
        pure, waiting = _run(_connection(H11Protocol, pieces, settings))
        if pure != c_mode and c_mode["closed"] and waiting and defer_heads:
            pure, _ = _run(_connection(H11Protocol, [*pieces, HEAD_END], settings))
    finally:
        logging.disable(logging.NOTSET)
    return c_mode, pure


def assert_same(data: bytes, cuts=(), defer_heads: bool = True, settings=SETTINGS) -> dict:
    """Both modes give the same record for `data` cut at `cuts`; returns it."""
    points = sorted({0, len(data), *cuts})
    pieces = [data[a:b] for a, b in zip(points, points[1:])]
    c_mode, pure = both_modes(pieces, defer_heads, settings)
    assert c_mode == pure, (data, points)
    return c_mode


def every_byte(data: bytes) -> list[int]:
    return list(range(len(data)))


# -- request strategies ---------------------------------------------------------------

METHOD = st.sampled_from(
    [b"GET"] * 6
    + [b"POST"] * 6
    + [b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"CONNECT", b"TRACE"]
    + [b"M-SEARCH", b"QUERY", b"PURGE", b"PROPFIND", b"SOURCE", b"MKCALENDAR", b"LINK"]
    + [b"get", b"Get", b"FOO", b"GETT", b"BREW", b"G", b"", b"GE\x00T", b"GET\t", b"P\xc3\xb6ST"]
)
PATH_PIECE = st.sampled_from(
    [b"a", b"b", b"/", b"/", b"-", b".", b"..", b"~", b"_"]
    + [b"%20", b"%2F", b"%2f", b"%25", b"%00", b"%zz", b"%", b"%e2%82%ac", b"%C3%A9", b"%ff"]
    + ["é".encode(), b"\xe9", b"\x80", "€".encode()]
    + [b";", b"=", b"@", b":", b"+", b"!", b"$", b"'", b"(", b")", b"*", b",", b"&"]
    + [b"?", b"?", b"#", b'"', b"<", b">", b"\\", b"^", b"`", b"{", b"|", b"}", b"[", b"]"]
    + [b" ", b"\t", b"\x7f", b"\x01", b"\x00", b"\x0b", b"\r"]
)
PATH = st.lists(PATH_PIECE, max_size=8).map(lambda pieces: b"/" + b"".join(pieces))
HOST_NAME = st.sampled_from(
    [b"example.com", b"example.com:8080", b"x", b"127.0.0.1", b"[::1]:80", b"", b"a@b", b"\xe9"]
)
ABSOLUTE = st.builds(
    lambda scheme, host, path: scheme + host + path,
    st.sampled_from([b"http://", b"https://", b"HTTP://", b"ws://", b"ftp://", b"http:/"]),
    HOST_NAME,
    st.one_of(PATH, st.just(b""), st.sampled_from([b"?q=1", b"?", b"#frag"])),
)
TARGET = st.one_of(
    PATH,
    PATH,
    PATH,
    ABSOLUTE,
    st.sampled_from([b"*", b"example.com:443", b"", b"a", b"?q", b"//x", b"*x"]),
)
VERSION = st.sampled_from(
    [b"HTTP/1.1"] * 12
    + [b"HTTP/1.0"] * 3
    + [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"http/1.1", b"HTTP/11", b"HTTP/1.1 ", b"HTTP/1."]
)
EOL = st.sampled_from([b"\r\n"] * 20 + [b"\n", b"\r", b"\r\r\n"])
GAP = st.sampled_from([b" "] * 20 + [b"  ", b"\t", b""])

NAME = st.sampled_from(
    [b"Host", b"host", b"HOST", b"Accept", b"X-A", b"x-a", b"Content-Type", b"Cookie"]
    + [b"Connection", b"Expect", b"Upgrade", b"User-Agent", b"Keep-Alive", b"TE", b"Trailer"]
    + [b"X-Forwarded-For", b"X-Forwarded-Proto", b"Forwarded"]
    + [b"x y", b"x\x00", b"", b"x@", b"\xe9", b"X-\xc3\x9c", b'x"', b"x(", b"x\t"]
)
SEPARATOR = st.sampled_from([b": "] * 10 + [b":", b":  ", b":\t", b": \t", b" :", b"\t:", b"::"])
VALUE_PIECE = st.sampled_from(
    [b"a", b"1", b"x", b"close", b"keep-alive", b"100-continue", b"upgrade", b"websocket"]
    + [b"1.2.3.4", b"for=1.2.3.4", b"https", b"http", b"example.com", b"chunked"]
    + [b" ", b",", b";", b"=", b'"', b"\t", b"/", b"(", b")"]
    + [b"\x80", b"\xe9", "é".encode(), b"\xff"]
    + [b"\x00", b"\x7f", b"\x0b", b"\x0c", b"\x01", b"\x1f", b"\r", b"\n"]
)
VALUE = st.lists(VALUE_PIECE, max_size=5).map(b"".join)


@st.composite
def header_lines(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        line = draw(NAME) + draw(SEPARATOR) + draw(VALUE)
        if draw(st.integers(0, 15)) == 0:  # obs-fold: a continuation line
            line += b"\r\n" + draw(st.sampled_from([b" ", b"\t"])) + draw(VALUE)
        lines.append(line + draw(EOL))
    return b"".join(lines)


CONTENT_LENGTH_NAME = st.sampled_from(
    [b"Content-Length"] * 4 + [b"content-length", b"CONTENT-LENGTH"]
)
TE_VALUE = st.sampled_from(
    [b"chunked"] * 10
    + [
        b"Chunked",
        b"CHUNKED",
        b"gzip, chunked",
        b"chunked, gzip",
        b"identity",
        b"chunked, identity",
    ]
    + [
        b"xchunked",
        b" chunked",
        b"chunked ",
        b"\tchunked",
        b"chunked;q=1",
        b"chunked,",
        b",chunked",
    ]
    + [b"gzip", b"", b"chunked, chunked", b'"chunked"', b"\x0bchunked"]
)
BODY = st.binary(max_size=24)


def content_length_value(draw, size: int) -> bytes:
    return draw(
        st.sampled_from(
            [b"%d" % size] * 12
            + [b"+%d" % size, b"0%d" % size, b" %d" % size, b"%d " % size, b"%d, %d" % (size, size)]
            + [b"-%d" % size, b"0x%x" % size, b"%d.0" % size, b"", b"%d" % (size + 1)]
            + [b"%d" % max(size - 1, 0), b"18446744073709551616", b"99999999999999999999999"]
        )
    )


@st.composite
def chunked_body(draw) -> bytes:
    out = []
    for data in draw(st.lists(BODY.filter(bool), max_size=3)):
        size = draw(
            st.sampled_from(
                [b"%x" % len(data)] * 8
                + [b"%X" % len(data), b"00%x" % len(data), b"0x%x" % len(data)]
                + [b" %x" % len(data), b"%x " % len(data), b"-%x" % len(data), b"+%x" % len(data)]
                + [b"%x" % (len(data) + 1), b"ffffffffffffffffff"]
            )
        )
        extension = draw(
            st.sampled_from(
                [b""] * 8
                + [
                    b";a",
                    b";a=b",
                    b';a="q"',
                    b';a="\\"x"',
                    b";a=b;c",
                    b";",
                    b"; a",
                    b";a=",
                    b";\xe9",
                ]
            )
        )
        out.append(size + extension + draw(EOL) + data + draw(EOL))
    last = draw(st.sampled_from([b"0"] * 6 + [b"00", b"0;a=b", b"0;", b"0 "]))
    out.append(last + draw(EOL))
    for _ in range(draw(st.integers(0, 2))):  # trailers
        name = draw(
            st.sampled_from([b"X-T", b"Expires", b"Content-Length", b"x y", b"Transfer-Encoding"])
        )
        out.append(name + draw(SEPARATOR) + draw(VALUE) + draw(EOL))
    out.append(draw(EOL))
    return b"".join(out)


@st.composite
def request(draw) -> bytes:
    head = b"".join(
        (
            draw(METHOD),
            draw(GAP),
            draw(TARGET),
            draw(GAP),
            draw(VERSION),
            draw(EOL),
        )
    )
    host = draw(
        st.sampled_from([b"Host: x\r\n"] * 8 + [b"", b"Host: x\r\nHost: y\r\n", b"Host:\r\n"])
    )
    lines = [host, draw(header_lines())]
    framing = draw(st.sampled_from(["none", "none", "length", "length", "chunked", "both"]))
    body = b""
    if framing in ("length", "both"):
        body = draw(BODY)
        for _ in range(draw(st.sampled_from([1] * 8 + [0, 2]))):
            lines.append(
                draw(CONTENT_LENGTH_NAME)
                + b": "
                + content_length_value(draw, len(body))
                + draw(EOL)
            )
    if framing in ("chunked", "both"):
        for _ in range(draw(st.sampled_from([1] * 8 + [2]))):
            name = draw(st.sampled_from([b"Transfer-Encoding"] * 4 + [b"transfer-encoding"]))
            lines.append(name + draw(SEPARATOR) + draw(TE_VALUE) + draw(EOL))
        body = draw(chunked_body())
    lines = draw(st.permutations(lines))
    prefix = draw(st.sampled_from([b""] * 10 + [b"\r\n", b"\n", b"\r\n\r\n"]))
    return prefix + head + b"".join(lines) + draw(EOL) + body


CONNECTION = st.lists(request(), min_size=1, max_size=3).map(b"".join)


@st.composite
def connection_and_cuts(draw) -> tuple[bytes, list[int]]:
    data = draw(CONNECTION)
    if draw(st.integers(0, 9)) == 0:
        return data, every_byte(data)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=4))
    return data, cuts


HYPOTHESIS_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A generated run is EXAMPLES examples in one test: under the sanitizers on a loaded
# machine it takes minutes (pyproject's 120 s bounds one example's worth of work).
WHOLE_RUN_TIMEOUT = pytest.mark.timeout(600)


# -- tests -----------------------------------------------------------------------------


@WHOLE_RUN_TIMEOUT
@HYPOTHESIS_SETTINGS
@given(connection_and_cuts())
def test_both_modes_read_generated_requests_alike(case):
    data, cuts = case
    assert_same(data, cuts)


@WHOLE_RUN_TIMEOUT
@settings(parent=HYPOTHESIS_SETTINGS, max_examples=max(1, EXAMPLES // 2))
@given(connection_and_cuts())
def test_both_modes_build_the_same_wsgi_environ(case):
    data, cuts = case
    record = assert_same(data, cuts, settings=WSGI_SETTINGS)
    for request in record["requests"]:
        assert request["environ_head"]["REQUEST_METHOD"] == request["method"], request


# A deliberate difference: a head that breaks several rules gets, in C mode, the
# answer for the first rule llhttp meets in byte order, and in the pure mode the
# answer of its checks' fixed order (byte checks, field limits, then h11's parse,
# then the target limit). Either is an error answer that closes the connection.
HEAD_ERRORS = [error_response(status) for status in (400, 414, 431)]
HEAD_ERROR = b"<400, 414 or 431>"


def without_head_error_status(record: dict) -> dict:
    written = record["written"]
    for answer in HEAD_ERRORS:
        if written.endswith(answer):
            written = written[: -len(answer)] + HEAD_ERROR
    return {**record, "written": written}


@WHOLE_RUN_TIMEOUT
@HYPOTHESIS_SETTINGS
@given(connection_and_cuts())
def test_both_modes_apply_limits_alike(case):
    data, cuts = case
    points = sorted({0, len(data), *cuts})
    pieces = [data[a:b] for a, b in zip(points, points[1:])]
    c_mode, pure = both_modes(pieces, settings=LIMITED)
    assert without_head_error_status(c_mode) == without_head_error_status(pure), (data, points)


# A request that breaks one limit only gets the same answer in both modes.
LIMIT_CASES = {
    "target": (b"GET /0123456789abc HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "fields": (b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
    "field-size": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 0123456789012345678901234567\r\n\r\n", 431),
    "field-size-blanks": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A:01234567890123456789012345\t\t\r\n\r\n",
        431,
    ),
    "head": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 0123456789\r\n" * 2 + b"X: " + b"a" * 100,
        431,
    ),
    "body-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413),
    "body-chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n0123456789a\r\n",
        413,
    ),
}


# Under the limits: a field counted as name + value + 2 (blanks before the value
# are free, the pure mode counted the whole line).
WITHIN_LIMITS = {
    "field-size-leading-blanks": b"GET / HTTP/1.1\r\nHost: x\r\nX-A:    0123456789012345678901234\r\n\r\n",
}


@pytest.mark.parametrize("name", WITHIN_LIMITS)
def test_within_limits_is_served_alike(name):
    data = WITHIN_LIMITS[name]
    record = assert_same(data, settings=LIMITED)
    assert record["written"].startswith(b"HTTP/1.1 200 ") and not record["closed"], record


@pytest.mark.parametrize("name", LIMIT_CASES)
def test_one_limit_broken_gets_the_same_answer(name):
    data, status = LIMIT_CASES[name]
    for cuts in ((), every_byte(data)):
        record = assert_same(data, cuts, settings=LIMITED)
        assert record["written"].endswith(error_response(status)), record
        assert record["closed"]


VALID = {
    "get": b"GET /a%20b?q=1&r HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a:  2 \r\n\r\n",
    "absolute-form": b"GET http://example.com:8080/p/%C3%A9?x HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "content-length": b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;a=b;c="d"\r\nhello\r\nA\r\n0123456789\r\n0;e\r\nX-T: 1\r\nX-U:\r\n\r\n'
    ),
    "pipelined": (
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
        b"\r\nGET /4 HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_requests_split_at_every_byte(name):
    """Each valid request, in two pieces cut at every point and one byte at a
    time, is read alike -- and as a whole, by both (not two equal failures)."""
    data = VALID[name]
    whole = assert_same(data)
    assert whole["requests"] and all(r["complete"] for r in whole["requests"]), whole
    assert b"HTTP/1.1 200 OK" in whole["written"] and b" 400 " not in whole["written"]
    for cut in range(1, len(data)):
        assert assert_same(data, [cut]) == whole, cut
    assert assert_same(data, every_byte(data)) == whole


# Differences this test found, each fixed: (bytes, cut at every byte?, the status
# both modes answer or None for none yet, requests the app saw, connection closed).
REGRESSIONS = {
    # target: the pure mode took any visible ASCII (h11); llhttp's grammar is stricter
    "target-not-origin-form": (b"GET a HTTP/1.1\r\nHost: x\r\n\r\n", False, 400, 0, True),
    "target-query-only": (b"GET ?q HTTP/1.1\r\nHost: x\r\n\r\n", False, 400, 0, True),
    "target-one-slash": (b"DELETE http:/x HTTP/1.1\r\nHost: x\r\n\r\n", False, 400, 0, True),
    "target-fragment-in-authority": (
        b"GET http://a#x HTTP/1.1\r\nHost: x\r\n\r\n",
        False,
        400,
        0,
        True,
    ),
    "target-connect-authority": (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        False,
        200,
        1,
        True,
    ),
    # method: the pure mode waited for the space after any token; llhttp rejects
    # at the first byte that no method it knows (RTSP ones too) starts with
    "lowercase-method": (b"get", True, 400, 0, True),
    "unknown-method": (b"GEX", True, 400, 0, True),
    "rtsp-method-prefix": (b"FLUSH / HT", True, None, 0, False),
    # a lone CR: the pure mode waited for a CRLF CRLF that never comes
    "lone-cr-ends-head": (b"GET / HTTP/1.1\r\nHost: x\r\r\n", False, 400, 0, True),
    # a bad body right behind the head: the C mode starts the app with the head
    "chunked-error-after-head": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        False,
        400,
        1,
        True,
    ),
    # a Content-Length over 2**64 - 1: llhttp's overflow error, a wait for the body in
    # the pure mode
    "content-length-overflow": (
        b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\nabc",
        False,
        400,
        0,
        True,
    ),
    "content-length-max": (
        b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
        False,
        None,
        1,
        False,
    ),
    # Transfer-Encoding other than one `chunked`: llhttp took `gzip, chunked`, and an
    # unknown coding on CONNECT or Upgrade (and started the app before its own 400
    # for one elsewhere); h11 rejects them all
    "te-gzip-chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        False,
        400,
        0,
        True,
    ),
    "te-identity-upgrade": (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
        b"Transfer-Encoding: identity\r\n\r\n",
        False,
        400,
        0,
        True,
    ),
    "te-identity-connect": (
        b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        False,
        400,
        0,
        True,
    ),
    "te-identity": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nabc",
        False,
        400,
        0,
        True,
    ),
    # h11 lowercases the Transfer-Encoding value; the app sees it as sent
    "te-value-as-sent": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n",
        False,
        200,
        1,
        False,
    ),
    # CONNECT: the C mode read no body and parsed what followed as the next request,
    # the pure mode read the body; now neither reads a body, and both close
    "connect-content-length": (
        b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nzGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        False,
        200,
        1,
        True,
    ),
    "connect-chunked": (
        b"CONNECT a:1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        False,
        200,
        1,
        True,
    ),
}


@pytest.mark.parametrize("name", REGRESSIONS)
def test_regressions(name):
    data, byte_by_byte, status, requests, closed = REGRESSIONS[name]
    # (at once: the pure mode may not defer these answers to the end of the head)
    record = assert_same(data, every_byte(data) if byte_by_byte else (), defer_heads=False)
    if status is None:
        assert record["written"] == b"", record
    else:
        assert record["written"].startswith(b"HTTP/1.1 %d " % status), record
    assert record["closed"] == closed, record
    assert len(record["requests"]) == requests, record


def corpus_files() -> list[Path]:
    """The fuzz corpus of the HTTP harnesses (raw request bytes, one file each)."""
    return sorted(
        path
        for harness in CORPUS_HARNESSES
        if (CORPUS / harness).is_dir()
        for path in (CORPUS / harness).rglob("*")
        if path.is_file()
    )


@pytest.mark.skipif(not corpus_files(), reason="no fuzz corpus under tests/fuzz/corpus/")
@pytest.mark.parametrize(
    "settings",
    [SETTINGS, WSGI_SETTINGS, LIMITED],
    ids=["default-limits", "default-limits-wsgi", "small-limits-wsgi"],
)
def test_fuzz_corpus_is_read_alike(settings):
    for path in corpus_files():
        c_mode, pure = both_modes([path.read_bytes()], settings=settings)
        if settings is LIMITED:
            c_mode, pure = without_head_error_status(c_mode), without_head_error_status(pure)
        assert c_mode == pure, path
