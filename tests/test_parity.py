"""The two HTTP modes give the same bytes on the wire.

Both protocols (C: `fastserve._parser.HttpProtocol`, pure: `H11Protocol`) are
driven in-process through a table of requests and app behaviours, each with a fake
transport that records every byte written and whether the connection was closed;
the records must be identical (and each is checked against what the case expects,
so that two equally wrong answers do not pass).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
from pathlib import Path

import pytest

from fastserve.metrics import BUCKETS_PER_PROTOCOL, ProcessMetrics
from fastserve.protocols.http.framing import JOIN_MAX
from fastserve.protocols.http.h11_impl import H11Protocol
from protocol_fakes import Connection

_parser = pytest.importorskip("fastserve._parser")

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"
GET_10_KEEP_ALIVE = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
)
EXPECT = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
TLS_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
# HTTP/2's connection preface (RFC 9113 3.4), then an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

BIG = b"b" * (JOIN_MAX + 1)

# The fake transport has no socket: pathsend takes its read loop (executor reads,
# transport.write), the path of TLS and uvloop.
PATHSEND_FILE = str(Path(__file__).resolve())
PATHSEND_BYTES = Path(PATHSEND_FILE).read_bytes()


def start(status=200, headers=()):
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data=b"", more=False):
    return {"type": "http.response.body", "body": data, "more_body": more}


def pathsend(path=PATHSEND_FILE):
    return {"type": "http.response.pathsend", "path": path}


def sends(*messages):
    """An app that reads the whole request body, then sends `messages`."""

    async def app(scope, receive, send):
        message = {"more_body": True}
        while message.get("more_body"):
            message = await receive()
        for item in messages:
            await send(item)

    return app


async def echo(scope, receive, send):
    data = b""
    message = {"more_body": True}
    while message.get("more_body"):
        message = await receive()
        data += message.get("body", b"")
    await send(start(200, [(b"content-type", b"text/plain")]))
    await send(body(data))


async def answer_unread(scope, receive, send):
    await send(start())
    await send(body(b"no"))


async def raise_before(scope, receive, send):
    raise RuntimeError("boom")


async def raise_after(scope, receive, send):
    await send(start())
    await send(body(b"part", more=True))
    raise RuntimeError("boom")


async def return_early(scope, receive, send):
    return None


async def invalid_status(scope, receive, send):
    await send({"type": "http.response.start", "status": "200"})


def lies_about_length(declared, *pieces):
    return sends(
        start(200, [(b"content-length", b"%d" % declared)]),
        *[body(piece, more=i < len(pieces) - 1) for i, piece in enumerate(pieces)],
    )


CL_10 = [(b"content-length", b"10")]
CASES = {
    # name: (request bytes, app, what the response must contain, connection closed)
    "one-message": (GET, sends(start(), body(b"hello")), b"content-length: 5\r\n\r\nhello", False),
    "app-content-length": (
        GET,
        sends(start(200, CL_10), body(b"0123456789")),
        b"0123456789",
        False,
    ),
    "streamed-chunked": (
        GET,
        sends(start(), body(b"ab", True), body(b"cd", True), body()),
        b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n",
        False,
    ),
    "app-chunked": (
        GET,
        sends(start(200, [(b"transfer-encoding", b"chunked")]), body(b"ab", True), body()),
        b"2\r\nab\r\n0\r\n\r\n",
        False,
    ),
    "big-streamed": (GET, sends(start(), body(BIG, True), body()), b"\r\n0\r\n\r\n", False),
    "big-one-message": (GET, sends(start(), body(BIG)), b"content-length: %d" % len(BIG), False),
    "http10-streamed": (
        GET_10,
        sends(start(), body(b"ab", True), body(b"cd")),
        b"connection: close\r\n\r\nabcd",
        True,
    ),
    "http10-keep-alive": (
        GET_10_KEEP_ALIVE,
        sends(start(), body(b"ok")),
        b"connection: keep-alive\r\n\r\nok",
        False,
    ),
    "head": (HEAD, sends(start(), body(b"hello")), b"content-length: 5\r\n\r\n", False),
    "204-with-body": (GET, sends(start(204), body(b"ignored")), b"204 No Content", False),
    "app-connection-close": (
        GET,
        sends(start(200, [(b"connection", b"close")]), body(b"bye")),
        b"connection: close\r\ncontent-length: 3\r\n\r\nbye",
        True,
    ),
    "content-length-longer-one-message": (GET, lies_about_length(10, b"x" * 20), b"OK", True),
    "content-length-longer-two-messages": (
        GET,
        lies_about_length(10, b"x" * 5, b"x" * 15),
        b"xxxxx",
        True,
    ),
    "content-length-shorter": (GET, lies_about_length(10, b"x" * 5), b"xxxxx", True),
    "raise-before-start": (GET, raise_before, b"500 Internal Server Error", True),
    "raise-after-start": (GET, raise_after, b"4\r\npart\r\n", True),
    "return-without-response": (GET, return_early, b"500 Internal Server Error", True),
    "invalid-message": (GET, invalid_status, b"500 Internal Server Error", True),
    "echo-content-length": (POST, echo, b"\r\n\r\nhello", False),
    "echo-chunked": (POST_CHUNKED, echo, b"\r\n\r\nhello", False),
    "expect-100-body-sent-at-once": (EXPECT + b"hello", echo, b"\r\n\r\nhello", False),
    "expect-100-answered-unread": (EXPECT, answer_unread, b"\r\n\r\nno", True),
    "pipelined": (GET + POST + GET, echo, b"hello", False),
    "pathsend": (
        GET,
        sends(start(), pathsend()),
        b"content-length: %d\r\n\r\n%b" % (len(PATHSEND_BYTES), PATHSEND_BYTES),
        False,
    ),
    "pathsend-head": (
        HEAD,
        sends(start(), pathsend()),
        b"content-length: %d\r\n\r\n" % len(PATHSEND_BYTES),
        False,
    ),
    "pathsend-app-chunked": (
        GET,
        sends(start(200, [(b"transfer-encoding", b"chunked")]), pathsend()),
        b"\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(PATHSEND_BYTES), PATHSEND_BYTES),
        False,
    ),
    "pathsend-pipelined": (GET + HEAD + GET, sends(start(), pathsend()), PATHSEND_BYTES, False),
    "pathsend-wrong-length": (GET, sends(start(200, CL_10), pathsend()), b"", True),
    "pathsend-missing": (GET, sends(start(), pathsend("/nonexistent")), b"500 Internal", True),
    "pathsend-after-body": (
        GET,
        sends(start(), body(b"ab", True), pathsend()),
        b"2\r\nab\r\n",
        True,
    ),
    "garbage": (b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", echo, b"400 Bad Request", True),
    "tls-on-plain-port": (TLS_CLIENT_HELLO, echo, b"400 Bad Request", True),
    "http2-prior-knowledge": (HTTP2_PREFACE, echo, b"400 Bad Request", True),
    "head-too-large": (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000, echo, b"431", True),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", echo, b"400 Bad Request", True),
}


async def exchange(protocol_class, request: bytes, app, metrics=None) -> tuple[bytes, bool]:
    """Every byte the protocol wrote for `request`, and whether it closed; responses
    counted into `metrics` (a ProcessMetrics) when given."""
    conn = Connection(protocol_class, app, metrics=metrics)
    await conn.feed(request)
    closed = conn.closed
    conn.protocol.connection_lost(None)
    return conn.data, closed


@pytest.mark.parametrize("case", CASES)
def test_both_modes_write_the_same_bytes(case):
    request, app, expected, closed = CASES[case]

    async def main():
        c_mode = await exchange(_parser.HttpProtocol, request, app)
        pure = await exchange(H11Protocol, request, app)
        return c_mode, pure

    c_mode, pure = asyncio.run(main())
    assert c_mode == pure
    data, was_closed = c_mode
    assert expected in data, data
    assert was_closed == closed, data


@pytest.mark.parametrize("case", CASES)
def test_both_modes_count_the_same_metrics(case):
    request, app, _, _ = CASES[case]

    async def count(protocol_class):
        metrics = ProcessMetrics()
        await exchange(protocol_class, request, app, metrics)
        buckets = metrics.duration_buckets
        # the histogram's count of each protocol (its durations differ run to run)
        durations = [
            sum(buckets[at : at + BUCKETS_PER_PROTOCOL])
            for at in range(0, len(buckets), BUCKETS_PER_PROTOCOL)
        ]
        return list(metrics.requests), durations, metrics.response_bytes[0]

    async def main():
        return await count(_parser.HttpProtocol), await count(H11Protocol)

    c_mode, pure = asyncio.run(main())
    requests, durations, body_bytes = c_mode
    assert (requests, durations, body_bytes) == pure
    assert sum(requests) == sum(durations)


@pytest.mark.parametrize(
    "request_bytes, hint",
    [(TLS_CLIENT_HELLO, "--ssl-certfile"), (HTTP2_PREFACE, "HTTP/2 with prior knowledge")],
    ids=["tls", "http2"],
)
def test_tls_or_http2_on_plain_port_is_answered_and_logged_once(
    protocol_class, request_bytes, hint
):
    error_log = logging.getLogger("fastserve.error")
    records = logging.handlers.BufferingHandler(capacity=100)
    error_log.addHandler(records)
    try:
        data, closed = asyncio.run(exchange(protocol_class, request_bytes, echo))
    finally:
        error_log.removeHandler(records)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and closed
    messages = [record.getMessage() for record in records.buffer]
    assert len(messages) == 1 and hint in messages[0], messages
    assert records.buffer[0].levelno == logging.WARNING
