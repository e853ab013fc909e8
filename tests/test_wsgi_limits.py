"""WSGI apps at the limits (issue 20), in both HTTP modes, over real sockets:

- a 100 MiB upload (Content-Length and chunked) reaches the app whole while the
  server's peak memory grows by a fraction of it (wsgi.input spools to a file);
- a client that reads nothing of a 64 MiB streamed response blocks the app's thread
  at the protocol's flow control: the app produces, and the server holds, a bounded
  amount; every byte arrives once the client reads;
- clients stalled mid-head and mid-body hold no thread of --threads: a normal
  request is answered at once beside them.

The app: tests/apps_wsgi.py (`/digest`, `/produce`).
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import ExitStack

import pytest

from apps_wsgi import produced_chunk
from flood_util import peak_rss_kib, rss_kib, unread_bytes, wait_stalled
from process_util import ServerProcess, holds_connection, wait_until
from raw_http import RawClient
from test_wsgi import WSGI, WSGI_APP

pytestmark = [pytest.mark.flood, pytest.mark.serial, pytest.mark.timeout(120)]

KIB = 1024
MIB = 1024 * KIB

UPLOAD_BLOCKS = 100
UPLOAD_BLOCK = MIB
UPLOAD_SIZE = UPLOAD_BLOCKS * UPLOAD_BLOCK  # 100 MiB
# How much the server's peak RSS may grow while it takes a body of UPLOAD_SIZE bytes:
# its read buffers, the spooled file's first MiB, the app's blocks (measured: 1-2 MiB).
UPLOAD_PEAK_GROWTH = 32 * MIB

STREAM_SIZE = 64 * MIB
STREAM_CHUNK = 64 * KIB
# What the app may have produced for a client that reads nothing: the kernel's socket
# buffers (the server's send buffer autotunes up to tcp_wmem's 4 MiB), the transport's
# high-water mark and the message in flight.
STALLED_STREAM_BOUND = 16 * MIB  # measured: 4 MiB
STALLED_RSS_GROWTH = 16 * MIB  # measured: under 1 MiB

STALLED_HEAD = b"GET /write HTTP/1.1\r\nHost: x\r\n"  # no final CRLF: the head never ends
STALLED_BODY_HEAD = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
)
STALLED_BODY_PART = b"0123456789"
# Issue 20: the latency of a normal request beside the stalled clients (measured: 1-2 ms).
NORMAL_LATENCY_BOUND = 0.1


def wsgi_server(start_server, mode: str, *flags: str) -> ServerProcess:
    """A server of its own: its peak RSS is this test's alone."""
    return start_server(WSGI_APP, mode, *WSGI, "--no-access-log", *flags)


# -- a large upload -----------------------------------------------------------------------


def upload_blocks():
    """UPLOAD_BLOCKS distinct blocks of UPLOAD_BLOCK bytes (one random block, each copy
    numbered: reordered or lost blocks change the digest)."""
    base = os.urandom(UPLOAD_BLOCK)
    for index in range(UPLOAD_BLOCKS):
        yield index.to_bytes(8, "big") + base[8:]


def send_upload(client: RawClient, chunked: bool) -> dict:
    """POST the blocks to /digest, block by block; what the body was."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % UPLOAD_SIZE
    client.send(b"POST /digest HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % framing)
    hasher = hashlib.sha256()
    for block in upload_blocks():
        hasher.update(block)
        client.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
    if chunked:
        client.send(b"0\r\n\r\n")
    return {"size": UPLOAD_SIZE, "sha256": hasher.hexdigest()}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100_mib_upload_keeps_server_memory_bounded(start_server, mode, chunked):
    server = wsgi_server(start_server, mode)
    with server.client(timeout=60) as client:
        assert client.request("POST", "/digest", [("Host", "x")], b"warm").status == 200
        peak_before = peak_rss_kib(server.pid)
        sent = send_upload(client, chunked)
        response = client.read_response()
    growth = (peak_rss_kib(server.pid) - peak_before) * KIB
    assert (response.status, response.json()) == (200, sent)
    assert growth < UPLOAD_PEAK_GROWTH, f"server peak RSS grew by {growth / MIB:.1f} MiB"


# -- a client that does not read ----------------------------------------------------------


def test_client_that_does_not_read_keeps_server_memory_bounded(start_server, mode, token):
    server = wsgi_server(start_server, mode)
    rss_before = rss_kib(server.pid)
    target = f"/produce?size={STREAM_SIZE}&chunk={STREAM_CHUNK}&token={token}"
    with server.client(rcvbuf=STREAM_CHUNK, timeout=60) as client:
        client.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
        produced = wait_stalled(
            lambda: sum(server.get_events(token, path_prefix="/events")),
            "the app's thread to wait for the client",
        )
        growth = (rss_kib(server.pid) - rss_before) * KIB
        assert produced <= STALLED_STREAM_BOUND, f"the app produced {produced} bytes"
        assert growth <= STALLED_RSS_GROWTH, f"server RSS grew by {growth / MIB:.1f} MiB"
        response = client.read_response()
    assert response.status == 200 and len(response.body) == STREAM_SIZE
    for index in range(STREAM_SIZE // STREAM_CHUNK):
        piece = response.body[index * STREAM_CHUNK : (index + 1) * STREAM_CHUNK]
        assert piece == produced_chunk(index, STREAM_CHUNK), f"chunk {index} is wrong"


# -- stalled clients ----------------------------------------------------------------------


def stall_mid_head(server: ServerProcess) -> RawClient:
    """A client whose head never ends, once the server has read what it sent."""
    client = server.client()
    client.send(STALLED_HEAD)
    wait_until(
        lambda: (
            holds_connection(server.pid, client.sock)
            and unread_bytes(server.port, client.sock) == 0
        ),
        10,
        message="the server to read the stalled head",
    )
    return client


def stall_mid_body(server: ServerProcess) -> RawClient:
    """A client whose request is in (the 100 Continue: the app's body is awaited) and
    whose body stops after a few bytes, once the server has read them."""
    client = server.client()
    client.send(STALLED_BODY_HEAD)
    assert client.read_response().status == 100
    client.send(STALLED_BODY_PART)
    wait_until(
        lambda: unread_bytes(server.port, client.sock) == 0,
        10,
        message="the server to read the stalled body's first bytes",
    )
    return client


def normal_request_latency(server: ServerProcess) -> float:
    """Seconds from connecting to the whole response of one normal request."""
    started = time.perf_counter()
    with server.client() as client:
        response = client.request("GET", "/write", [("Host", "x")])
    latency = time.perf_counter() - started
    assert (response.status, response.body) == (200, b"written twice")
    return latency


@pytest.mark.parametrize(
    "threads, mid_head, mid_body", [(1, 0, 4), (4, 12, 12)], ids=["1-thread", "4-threads"]
)
def test_stalled_clients_hold_no_thread(start_server, mode, threads, mid_head, mid_body):
    server = wsgi_server(start_server, mode, "--threads", str(threads))
    normal_request_latency(server)  # the pool's threads started, the route imported
    with ExitStack() as stalled:
        for stall in [stall_mid_head] * mid_head + [stall_mid_body] * mid_body:
            stalled.enter_context(stall(server))
        latency = normal_request_latency(server)
    assert latency < NORMAL_LATENCY_BOUND, f"a normal request took {latency * 1000:.0f} ms"
    assert server.stop() == 0
