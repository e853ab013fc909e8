"""In-process tests of the C protocol (fastserve._parser) with a fake conn.transport.

The conformance suite (tests/test_http_*.py) checks behaviour over real sockets in
both modes; these check what only the C mode does and a socket cannot see: the
number of writes, pause/resume_reading calls, head bytes counted across reads.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time

import pytest

from protocol_fakes import DEFAULT_HEAD, Connection

_parser = pytest.importorskip("fastserve._parser")
HttpProtocol = _parser.HttpProtocol


async def hello(scope, receive, send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def settle(rounds: int = 50):
    for _ in range(rounds):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_send_is_seen_as_async():
    cycle = _parser.RequestCycle.__new__(_parser.RequestCycle)
    assert asyncio.iscoroutinefunction(cycle.send)
    assert asyncio.iscoroutinefunction(cycle.receive)
    if sys.version_info >= (3, 11):  # older inspect does not know Cython coroutines
        assert inspect.iscoroutinefunction(cycle.send)


def test_one_write_per_response():
    async def main():
        conn = Connection(HttpProtocol, hello)
        conn.protocol.data_received(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert len(conn.transport.writes) == 1
        assert conn.transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n" + DEFAULT_HEAD)
        assert conn.transport.writes[0].endswith(b"content-length: 4\r\n\r\n/one")
        assert conn.state.total_requests == 1
        assert not conn.state.tasks
        conn.protocol.connection_lost(None)
        assert not conn.state.connections

    run(main())


def test_pipelined_batch_is_written_in_few_writes_in_order():
    async def main():
        conn = Connection(HttpProtocol, hello)
        batch = b"".join(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(16))
        conn.protocol.data_received(batch)
        await settle()
        data = conn.transport.data
        assert data.count(b"HTTP/1.1 200 OK") == 16
        positions = [data.index(b"/r%d" % i + (b"" if i == 15 else b"HTTP")) for i in range(16)]
        assert positions == sorted(positions)
        assert len(conn.transport.writes) <= 3, len(conn.transport.writes)
        assert not conn.transport.closed

    run(main())


def test_pipelined_batches_of_many_connections_are_each_written_in_few_writes():
    # One loop callback checks every connection holding responses back; it may run
    # before a connection's next request has started, which must not flush early.
    async def main():
        batch = b"".join(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(16))
        connections = [Connection(HttpProtocol, hello) for _ in range(8)]
        for conn in connections:
            conn.protocol.data_received(batch)
        await settle()
        for conn in connections:
            assert conn.transport.data.count(b"HTTP/1.1 200 OK") == 16
            assert len(conn.transport.writes) <= 3, len(conn.transport.writes)

    run(main())


def test_pipelined_batch_flushes_when_an_app_waits():
    gate = None

    async def app(scope, receive, send):
        if scope["path"] == "/slow":
            await gate.wait()
        await hello(scope, receive, send)

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        conn = Connection(HttpProtocol, app)
        conn.protocol.data_received(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await settle()
        # /a and /b are out although /slow is still waiting
        assert conn.transport.data.count(b"HTTP/1.1 200 OK") == 2
        gate.set()
        await settle()
        assert conn.transport.data.count(b"HTTP/1.1 200 OK") == 4
        assert conn.transport.data.endswith(b"/c")

    run(main())


def test_chunks_streamed_in_one_pass_leave_in_one_write():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(10):
            await send({"type": "http.response.body", "body": b"%d" % index, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main():
        conn = Connection(HttpProtocol, app)
        conn.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert len(conn.transport.writes) == 1, conn.transport.writes
        assert conn.transport.data.endswith(
            b"transfer-encoding: chunked\r\n\r\n"
            + b"".join(b"1\r\n%d\r\n" % index for index in range(10))
            + b"0\r\n\r\n"
        )

    run(main())


def test_streamed_chunk_leaves_before_the_app_waits():
    gate = None

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await gate.wait()
        await send({"type": "http.response.body", "body": b"last"})

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        conn = Connection(HttpProtocol, app)
        conn.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert conn.transport.data.endswith(b"5\r\nfirst\r\n")
        gate.set()
        await settle()
        assert conn.transport.data.endswith(b"4\r\nlast\r\n0\r\n\r\n")

    run(main())


def test_head_bytes_counted_across_reads():
    async def main():
        conn = Connection(HttpProtocol, hello, limit_request_head=1024)
        conn.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            if conn.transport.closed:
                break
            conn.protocol.data_received(b"X-Filler: " + b"a" * 30 + b"\r\n")
        assert conn.transport.closed
        assert conn.transport.data.startswith(b"HTTP/1.1 431 ")
        assert conn.state.total_requests == 0

    run(main())


def test_head_just_under_limit_ok():
    async def main():
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: "
        head += b"a" * (1024 - len(head) - 4) + b"\r\n\r\n"
        assert len(head) == 1024
        conn = Connection(HttpProtocol, hello, limit_request_head=1024)
        for i in range(0, len(head), 7):
            conn.protocol.data_received(head[i : i + 7])
        await settle()
        assert conn.transport.data.startswith(b"HTTP/1.1 200 OK"), conn.transport.data[:40]

    run(main())


def test_proxy_headers_applied_only_when_present():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["client"], scope["scheme"]))
        await hello(scope, receive, send)

    async def main():
        conn = Connection(HttpProtocol, app, proxy_headers=True, forwarded_allow_ips="127.0.0.1")
        conn.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        conn.protocol.data_received(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        await settle()
        assert seen == [(("127.0.0.1", 40000), "http"), (("10.1.2.3", 0), "https")]

    run(main())


def test_unread_body_pauses_reading_and_drain_resumes():
    release = None

    async def app(scope, receive, send):
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
        conn = Connection(HttpProtocol, app)
        size = 300_000
        conn.protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        )
        chunk = b"x" * 50_000
        for _ in range(size // len(chunk)):
            conn.protocol.data_received(chunk)
        await settle()
        assert conn.transport.paused >= 1
        release.set()
        await settle()
        assert conn.transport.resumed >= 1
        assert conn.transport.data.endswith(b"\r\n\r\n300000")

    run(main())


def test_send_waits_while_writing_is_paused():
    async def main():
        conn = Connection(HttpProtocol, hello)
        conn.protocol.pause_writing()
        conn.protocol.data_received(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert conn.transport.writes == []
        conn.protocol.resume_writing()
        await settle()
        assert conn.transport.data.endswith(b"/w")

    run(main())


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_strict_parsing_400(request_bytes):
    async def main():
        conn = Connection(HttpProtocol, hello)
        conn.protocol.data_received(request_bytes)
        await settle()
        assert conn.transport.data.startswith(b"HTTP/1.1 400 "), conn.transport.data[:60]
        assert conn.transport.closed
        if b"zz" not in request_bytes:  # (a bad chunk comes after the app started)
            assert conn.state.total_requests == 0

    run(main())


def test_trailers_after_a_large_chunk_are_ignored():
    async def app(scope, receive, send):
        total = 0
        while True:
            message = await receive()
            total += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})

    async def main():
        conn = Connection(HttpProtocol, app, limit_request_fields=2)
        body = b"y" * 100_000
        trailers = b"".join(b"T-%d: v\r\n" % i for i in range(5))
        conn.protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body)
            + body
            + b"\r\n0\r\n"
            + trailers
            + b"\r\n"
        )
        await settle()
        assert conn.transport.data.startswith(b"HTTP/1.1 200 OK"), conn.transport.data[:40]
        assert conn.transport.data.endswith(b"\r\n\r\n100000")

    run(main())


@pytest.mark.parametrize("mode", ["c", "python"])
def test_request_start_is_on_time_monotonic_clock(mode):
    """A request's start time, which logging.py and the metrics subtract from
    time.monotonic(), is read from that very clock in both modes."""
    from fastserve.protocols.http.h11_impl import H11Protocol

    seen = []

    async def app(scope, receive, send):
        seen.append(time.monotonic())
        await hello(scope, receive, send)

    async def main():
        conn = Connection(HttpProtocol if mode == "c" else H11Protocol, app)
        before = time.monotonic()
        conn.protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        cycle = conn.protocol.cycle
        await settle()
        assert before <= cycle.started <= seen[0]
        conn.protocol.connection_lost(None)

    run(main())
