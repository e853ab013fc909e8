"""Serving requests leaves nothing behind, in both HTTP modes.

Each protocol (C: `fastserve._parser.HttpProtocol`, pure: `H11Protocol`) is driven
in-process, as tests/test_parity.py does it (settings from a real Config, a fake
transport, a real event loop), through a round of exchanges, over and over: keep-alive,
pipelined, chunked request and response bodies, a 400, a 413, an app exception (500),
and clients that go away in the middle of a request or of a response. Every exchange
is checked (its answer, whether the connection closed, the app's task finished).

After a warm-up, the footprint is measured when a fifth of the requests are served and
again at the end: objects per type (gc), Python's allocated blocks, the bytes traced by
tracemalloc, the bytes in use in C's malloc (the C mode's buffers; glibc only) and the
open file descriptors. Between the two, four fifths of the requests were served; a leak
of one object per request, or per connection, would show in the thousands, so each
measure may grow by a small fixed amount only (caches and free lists settling).

FASTSERVE_LEAK_REQUESTS sets the number of requests per mode: 20000 by default (20 to
40 s for both modes), 100000 for a thorough run (as .ci/run does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import pytest

from protocol_fakes import Connection, make_settings

# Memory and descriptors must stay flat: alone, as the other measures of the suite.
pytestmark = pytest.mark.serial

_parser = pytest.importorskip("fastserve._parser")

REQUESTS = int(os.environ.get("FASTSERVE_LEAK_REQUESTS", "20000"))
WARM_UP_REQUESTS = 1000
# How much each measure may grow while four fifths of the requests are served.
OBJECTS_PER_TYPE_NOISE = 20
ALLOCATED_BLOCKS_NOISE = 500
TRACED_BYTES_NOISE = 48 * 1024
MALLOC_BYTES_NOISE = 64 * 1024

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
)
BODY_LIMIT = 16
POST_TOO_LARGE = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT + 1)
POST_HALF = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"
GARBAGE = b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"
CHUNKED_RESPONSE = b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"


# -- apps ----------------------------------------------------------------------------


async def read_body(receive) -> bytes:
    data = b""
    message = {"more_body": True}
    while message.get("more_body"):
        message = await receive()
        data += message.get("body", b"")
    return data


async def app(scope, receive, send):
    """/echo answers the request body; /raise raises; /stream streams until the client
    goes away; any other path answers a chunked body."""
    path = scope["path"]
    data = await read_body(receive)
    if path == "/raise":
        raise RuntimeError("boom")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if path == "/echo":
        await send({"type": "http.response.body", "body": data})
    elif path == "/stream":
        while True:  # until send() raises ClientDisconnected
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.sleep(0)
    else:
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd", "more_body": True})
        await send({"type": "http.response.body", "body": b""})


# -- driving a protocol --------------------------------------------------------------


def expect(conn: Connection, *parts: bytes, closed: bool) -> None:
    for part in parts:
        assert part in conn.data, conn.data
    assert conn.closed == closed, conn.data


async def serve_round(protocol_class, settings, limited_settings) -> int:
    """One of every exchange; returns the number of requests served."""
    keep_alive = Connection(protocol_class, settings=settings)
    for _ in range(3):
        await keep_alive.feed(GET)
    expect(keep_alive, CHUNKED_RESPONSE, closed=False)
    assert keep_alive.transport.data.count(b"HTTP/1.1 200 OK") == 3
    await keep_alive.close()

    pipelined = Connection(protocol_class, settings=settings)
    await pipelined.feed(GET + POST + POST_CHUNKED + GET)
    expect(pipelined, b"\r\n\r\nhello", CHUNKED_RESPONSE, closed=False)
    assert pipelined.transport.data.count(b"HTTP/1.1 200 OK") == 4
    await pipelined.close()

    bad = Connection(protocol_class, settings=settings)
    await bad.feed(GARBAGE)
    expect(bad, b"HTTP/1.1 400 Bad Request", closed=True)
    await bad.close()

    too_large = Connection(protocol_class, settings=limited_settings)
    await too_large.feed(POST_TOO_LARGE)
    expect(too_large, b"HTTP/1.1 413 ", closed=True)
    await too_large.close()

    failing = Connection(protocol_class, settings=settings)
    await failing.feed(b"GET /raise HTTP/1.1\r\nHost: x\r\n\r\n")
    expect(failing, b"HTTP/1.1 500 Internal Server Error", closed=True)
    await failing.close()

    gone_in_request = Connection(protocol_class, settings=settings)
    await gone_in_request.feed(POST_HALF, until=lambda: gone_in_request.state.tasks)
    await gone_in_request.close()
    assert gone_in_request.transport.data == b""  # the app's answer had nowhere to go

    gone_in_response = Connection(protocol_class, settings=settings)
    await gone_in_response.feed(
        b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
        until=lambda: gone_in_response.transport.data.count(b"\r\n1\r\nx\r\n") >= 2,
    )
    await gone_in_response.close()
    return 3 + 4 + 1 + 1 + 1 + 1 + 1  # keep-alive, pipelined, 400, 413, 500, the two gone


# -- measuring -----------------------------------------------------------------------


class MallocInfo(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33+)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    function = getattr(libc, "mallinfo2", None)
    if function is not None:
        function.restype = MallocInfo
    return function


MALLINFO2 = _mallinfo2() if sys.platform.startswith("linux") else None


def malloc_in_use() -> Optional[int]:
    """Bytes in use in malloc (small blocks and mmapped ones), where glibc tells."""
    if MALLINFO2 is None:
        return None
    info = MALLINFO2()
    return info.uordblks + info.hblkhd


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))


@dataclass
class Footprint:
    objects: Counter
    allocated_blocks: int
    traced_bytes: int
    malloc_bytes: Optional[int]
    fds: int

    @classmethod
    def now(cls) -> Footprint:
        gc.collect()
        return cls(
            objects=Counter(type(obj).__qualname__ for obj in gc.get_objects()),
            allocated_blocks=sys.getallocatedblocks(),
            traced_bytes=tracemalloc.get_traced_memory()[0],
            malloc_bytes=malloc_in_use(),
            fds=open_fds(),
        )

    def growth_to(self, later: Footprint) -> list[str]:
        """What grew beyond its noise from this footprint to `later`."""
        grown = [
            f"{name}: {self.objects[name]} -> {count} objects"
            for name, count in later.objects.items()
            if count - self.objects[name] > OBJECTS_PER_TYPE_NOISE
        ]
        for what, noise in (
            ("allocated_blocks", ALLOCATED_BLOCKS_NOISE),
            ("traced_bytes", TRACED_BYTES_NOISE),
            ("malloc_bytes", MALLOC_BYTES_NOISE),
            ("fds", 0),
        ):
            before, after = getattr(self, what), getattr(later, what)
            if before is not None and after - before > noise:
                grown.append(f"{what}: {before} -> {after}")
        return grown


async def serve_and_measure(protocol_class) -> tuple[Footprint, Footprint, int]:
    """The footprints at a fifth of REQUESTS and at the end, and the rounds served."""
    settings = make_settings(app)
    limited_settings = make_settings(app, limit_request_body=BODY_LIMIT)
    served = rounds = 0
    while served < WARM_UP_REQUESTS:
        served += await serve_round(protocol_class, settings, limited_settings)
        rounds += 1
    tracemalloc.start()
    try:
        Footprint.now()  # the measuring code's own first-use allocations
        first = None
        served = 0
        while served < REQUESTS:
            if first is None and served >= REQUESTS // 5:
                first = Footprint.now()
            served += await serve_round(protocol_class, settings, limited_settings)
            rounds += 1
        return first, Footprint.now(), rounds
    finally:
        tracemalloc.stop()


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records = 0

    def emit(self, record) -> None:
        self.records += 1


@contextlib.contextmanager
def counted_errors():
    """fastserve.error's records are counted, and kept by no other handler: pytest's
    log capture (on this logger too, as it does not propagate) would hold thousands of
    tracebacks, a leak of the test's own. Entered in the test's body, after pytest
    attached its handlers for the call."""
    logger = logging.getLogger("fastserve.error")
    counter = CountingHandler()
    saved = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [counter], False
    try:
        yield counter
    finally:
        logger.handlers, logger.propagate = saved


@pytest.mark.timeout(600)
def test_footprint_stays_flat(protocol_class):
    with counted_errors() as errors:
        first, last, rounds = asyncio.run(serve_and_measure(protocol_class))
    # One per round (the app exception): a client going away is not an error.
    assert errors.records == rounds
    assert not first.growth_to(last), "\n".join(first.growth_to(last))
