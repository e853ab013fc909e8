"""Unit tests of the pure-Python protocol (protocols.http.h11_impl.H11Protocol) with a fake
transport: the places where h11 is more lenient than llhttp and the protocol has
to check the bytes itself, plus flow control and pipelining internals.

The end-to-end behaviour of both modes is covered by tests/test_http_*.py.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from fastserve.protocols.http.errors import error_response
from fastserve.protocols.http.flow import HIGH_WATER_LIMIT
from fastserve.protocols.http.framing import CONTINUE_RESPONSE
from fastserve.protocols.http.h11_impl import H11Protocol
from protocol_fakes import DEFAULT_HEAD, Connection


def run(coro):
    return asyncio.run(coro)


REJECTED = {
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-lf-last-line": b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "cl-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl-plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "cl-twice-same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "http-0.9": b"GET / HTTP/0.9\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    "control-byte-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_with_400_and_app_not_called(data):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    async def main():
        h = Connection(H11Protocol, app)
        out = await h.feed(data)
        assert out == error_response(400)
        assert h.transport.closed
        assert not called
        assert h.state.total_requests == 0

    run(main())


BODY_REJECTED = {
    "chunk-overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000001\r\nhello\r\n0\r\n\r\n",
    "chunk-bad-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("data", BODY_REJECTED.values(), ids=BODY_REJECTED.keys())
def test_body_rejected_with_400_after_the_app_started(data):
    """As in the C mode, the app starts with the head; a body that then breaks a
    rule is a 400 and, for the app, a disconnect -- also when both came in one read."""
    received = []

    async def app(scope, receive, send):
        received.append(await receive())

    async def main():
        h = Connection(H11Protocol, app)
        out = await h.feed(data)
        assert out == error_response(400)
        assert h.transport.closed
        assert received == [{"type": "http.disconnect"}]
        assert h.state.total_requests == 1

    run(main())


def test_leading_empty_lines_ignored():
    async def main():
        h = Connection(H11Protocol)
        out = await h.feed(b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.endswith(b"GET /a ")
        out = await h.feed(b"\nM-SEARCH /b HTTP/1.1\r\nHost: x\r\nX-A: \x80\tb\r\n\r\n")
        assert out.endswith(b"M-SEARCH /b ")
        assert not h.transport.closed

    run(main())


def test_limits():
    async def main():
        h = Connection(H11Protocol, limit_request_line=10)
        assert (
            await h.feed(b"GET /" + b"a" * 10 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        ) == error_response(414)
        h = Connection(H11Protocol, limit_request_fields=2)
        out = await h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n")
        assert out == error_response(431)
        h = Connection(H11Protocol, limit_request_field_size=20)
        out = await h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20 + b"\r\n\r\n")
        assert out == error_response(431)
        h = Connection(H11Protocol, limit_request_head=100)
        out = await h.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 200)
        assert out == error_response(431)
        h = Connection(H11Protocol, limit_request_body=4)
        out = await h.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert out == error_response(413)
        h = Connection(H11Protocol, limit_request_body=4)
        out = await h.feed(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        assert out == error_response(413)
        assert h.state.total_requests == 1  # (the app started with the head, as in C mode)

    run(main())


def test_pipelined_body_requests_in_one_buffer():
    async def main():
        h = Connection(H11Protocol)
        out = await h.feed(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert out.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert out.index(b"POST /a hello") < out.index(b"POST /b abc") < out.index(b"GET /c ")
        assert h.state.total_requests == 3
        assert h.transport.reading

    run(main())


def test_single_write_with_content_length():
    async def main():
        h = Connection(H11Protocol)
        writes = []
        h.transport.write = writes.append
        await h.feed(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert len(writes) == 1
        assert writes[0].startswith(
            b"HTTP/1.1 200 OK\r\n" + DEFAULT_HEAD + b"content-type: text/plain\r\n"
        )
        assert b"content-length: 7\r\n\r\nGET /x " in writes[0]

    run(main())


def test_flow_control_pauses_and_resumes_reading():
    release = None

    async def slow(scope, receive, send):
        await release.wait()
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})

    async def main():
        nonlocal release
        release = asyncio.Event()
        h = Connection(H11Protocol, slow)
        size = HIGH_WATER_LIMIT * 3
        h.protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        h.protocol.data_received(b"x" * (HIGH_WATER_LIMIT + 1))
        assert not h.transport.reading
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert h.transport.reading
        out = await h.feed(b"x" * (size - HIGH_WATER_LIMIT - 1))
        assert out.endswith(b"\r\n\r\n%d" % size)

    run(main())


def test_expect_100_sent_on_first_receive_only():
    async def main():
        h = Connection(H11Protocol)
        h.protocol.data_received(
            b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert h.transport.data == CONTINUE_RESPONSE
        out = await h.feed(b"ok")
        assert out.count(b"100 Continue") == 1
        assert out.endswith(b"POST /u ok")

    run(main())


def test_unread_body_with_pending_100_continue_closes():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async def main():
        h = Connection(H11Protocol, app)
        out = await h.feed(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"
        )
        assert b"100 Continue" not in out
        assert out.startswith(b"HTTP/1.1 401 ")
        assert h.transport.closed

    run(main())


def test_contextvars_do_not_leak_between_pipelined_requests():
    var = contextvars.ContextVar("var")
    seen = []

    async def app(scope, receive, send):
        seen.append(var.get(None))
        var.set(scope["raw_path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main():
        h = Connection(H11Protocol, app)
        await h.feed(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert seen == [None, None]

    run(main())


def test_http10_keep_alive():
    async def main():
        h = Connection(H11Protocol)
        out = await h.feed(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"connection: keep-alive\r\n" in out
        assert not h.transport.closed
        out = await h.feed(b"GET /b HTTP/1.0\r\n\r\n")
        assert out.count(b"HTTP/1.1 200") == 2
        assert out.endswith(b"GET /b ")
        assert b"connection: close\r\n" in out
        assert h.transport.closed

    run(main())


def test_shutdown_idle_and_in_flight():
    gate = None

    async def app(scope, receive, send):
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        h = Connection(H11Protocol, app)
        h.protocol.shutdown()
        assert h.transport.closed
        h = Connection(H11Protocol, app)
        h.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0)
        h.protocol.shutdown()
        assert not h.transport.closed
        gate.set()
        await h.settle()
        out = h.transport.data
        assert b"connection: close\r\n" in out and out.endswith(b"done")
        assert h.transport.closed

    run(main())
