"""Floods and slow clients, over real sockets against a running server, in both modes.

- 10,000 idle keep-alive connections held by one process, every one answered (twice),
  RSS growth per connection bounded;
- slowloris: 1,000 connections trickling a head byte a second are closed at
  --timeout-request-header while a normal client is served without delay;
- a slow reader of a 64 MiB streamed response: the app's send() waits (the server
  buffers a bounded amount) and every byte arrives when the client reads again;
- 200,000 pipelined requests from a client that does not read: the server stops
  reading (memory bounded), then answers every one, in order;
- --limit-concurrency under overload: 503 at once, 200 again afterwards;
- connection churn: thousands of clients resetting mid-head, mid-body and
  mid-response leave descriptors and RSS at the idle figures.

Each bound below was picked from measurements (README, "Floods and slow clients").
Every loop is bounded and stops by itself; waits have generous deadlines. Deselect
these tests with `-m "not flood"`. The app: tests/apps_floods.py.
"""

from __future__ import annotations

import resource
import select
import selectors
import socket
import time
from collections import Counter

import pytest

from flood_util import (
    STALL_POLL,
    connect_many,
    cpu_ticks,
    exchange,
    fd_count,
    open_files_limit,
    report,
    reset_all,
    response_end,
    rss_kib,
    status_of,
    unread_bytes,
    wait_stalled,
)
from process_util import start_thread, wait_until

pytestmark = [pytest.mark.flood, pytest.mark.serial, pytest.mark.timeout(300)]

APP = "tests.apps_floods:app"
# Access logging off: tens of thousands of lines would measure the log file.
QUIET = "--no-access-log"
KIB = 1024
MIB = 1024 * KIB

IDLE_CONNECTIONS = 10_000
# Descriptors the test process and the server each need beyond the connections.
FD_MARGIN = 200
# Measured 7.3 KiB per connection in c mode, 4.8 KiB in python mode (README).
IDLE_RSS_PER_CONNECTION = 10 * KIB

SLOWLORIS_CONNECTIONS = 1_000
HEADER_TIMEOUT = 2.0  # --timeout-request-header of the slowloris test
TRICKLE_INTERVAL = 1.0  # a head byte per connection this often
TRICKLED_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
# How late after the header timeout a trickling connection may be closed (a loaded machine).
HEADER_TIMEOUT_SLACK = 5.0
TIMER_TOLERANCE = 0.01  # event loop timers may fire a millisecond early

STREAM_SIZE = 64 * MIB
STREAM_CHUNK = 64 * KIB
# What the app may have sent to a client that reads nothing: the kernel's socket
# buffers (the server's send buffer autotunes up to tcp_wmem's 4 MiB) plus the
# transport's high-water mark and a message.
STALLED_STREAM_BOUND = 16 * MIB
STALLED_RSS_GROWTH = 16 * MIB
# CPU ticks (1/100 s) a server may use while counted as idle (its 10 Hz tick).
IDLE_TICKS = 2

PIPELINED = 200_000
PIPELINE_PAD = b"p" * 60  # ~100-byte requests: 20 MB in all, more than kernel buffers hold
# The client's socket buffers: small, so that answers back up into the server.
CLIENT_BUFFER = 256 * KIB
PIPELINE_RSS_GROWTH = 32 * MIB

LIMIT_CONCURRENCY = 8
HELD_REQUESTS = 4
OVERLOAD_CONNECTIONS = 500

CHURN_ROUNDS = 20
CHURN_SHAPE_COUNT = 50  # connections of each shape per round: 3,000 in all
CHURN_STREAM_SIZE = 8 * MIB
# RSS after the churn may exceed the idle figure by this much: freed memory the
# allocator keeps (measured up to 10 MiB in the pure mode). Leaked connections or
# tasks are counted exactly (the app's /_/census).
CHURN_RSS_SLACK = 16 * MIB

RECV_ANY = 4096  # bytes read to see that an answer (or a close) came


@pytest.fixture
def nofile():
    """`nofile(n)`: raise this process's soft RLIMIT_NOFILE to at least `n` (skip when
    the hard limit is lower); servers started afterwards inherit it. Restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def raise_to(n: int) -> None:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(
                f"needs {n} open files per process; the hard RLIMIT_NOFILE is {hard} "
                "(raise it: `ulimit -Hn`, /etc/security/limits.conf, LimitNOFILE=)"
            )
        if soft != resource.RLIM_INFINITY and soft < n:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))

    yield raise_to
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def counts(server, token: str) -> dict:
    with server.client() as client:
        response = client.request("GET", f"/_/counts?token={token}")
        assert response.status == 200, response
        return response.json()


def census(server) -> dict:
    with server.client() as client:
        return client.request("GET", "/_/census").json()


def wait_idle_fds(server, fds: int, timeout: float = 60) -> None:
    wait_until(
        lambda: fd_count(server.pid) <= fds,
        timeout,
        message=f"the server's descriptors to return to {fds} (have {fd_count(server.pid)})",
    )


def assert_no_errors(server) -> None:
    output = server.output()
    assert "Traceback" not in output and "ERROR" not in output, server.describe()


# -- 10,000 idle keep-alive connections ---------------------------------------------------


def test_ten_thousand_idle_keep_alive_connections(start_server, mode, nofile):
    nofile(IDLE_CONNECTIONS + FD_MARGIN)
    server = start_server(
        APP, mode, QUIET, "--timeout-keep-alive", "600", "--timeout-request-header", "600"
    )
    assert open_files_limit(server.pid) >= IDLE_CONNECTIONS + FD_MARGIN
    idle_fds = fd_count(server.pid)
    with server.client() as client:
        assert client.request("GET", "/warm-up").status == 200
    wait_idle_fds(server, idle_fds)
    rss_before = rss_kib(server.pid)

    started = time.monotonic()
    socks = connect_many(server.port, IDLE_CONNECTIONS)
    try:
        connected = time.monotonic()
        for round_ in ("first", "second"):  # the second: every connection was kept alive
            path = b"/%s" % round_.encode()
            answers = exchange(socks, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            wrong = [response for response, _ in answers if not response.endswith(b"\r\n" + path)]
            assert not wrong, f"{len(wrong)} wrong answers, the first: {wrong[0]!r}"
        answered = time.monotonic()
        assert fd_count(server.pid) == idle_fds + IDLE_CONNECTIONS, "connections were dropped"
        rss_after = rss_kib(server.pid)
        per_connection = (rss_after - rss_before) * KIB / IDLE_CONNECTIONS
        report(
            f"{mode}: {IDLE_CONNECTIONS} idle keep-alive connections",
            rss_before_kib=rss_before,
            rss_after_kib=rss_after,
            bytes_per_connection=round(per_connection),
            connect_s=round(connected - started, 2),
            two_requests_each_s=round(answered - connected, 2),
        )
        assert per_connection <= IDLE_RSS_PER_CONNECTION, (
            f"{mode}: RSS grew {per_connection:.0f} bytes per idle connection "
            f"({rss_before} -> {rss_after} KiB for {IDLE_CONNECTIONS}); "
            f"bound {IDLE_RSS_PER_CONNECTION}"
        )
    finally:
        reset_all(socks)
    wait_idle_fds(server, idle_fds)
    assert_no_errors(server)


# -- slowloris --------------------------------------------------------------------------


def trickle(port: int, count: int) -> tuple:
    """Open `count` connections and send each a byte of a head every
    TRICKLE_INTERVAL seconds until the server closes it. Returns (the time before the
    first connect, the time all were connected, the times each close was seen)."""
    connecting = time.monotonic()
    socks = connect_many(port, count)
    connected = time.monotonic()
    closes = []
    sent = dict.fromkeys(socks, 0)
    next_byte = connected
    deadline = connected + HEADER_TIMEOUT + HEADER_TIMEOUT_SLACK
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)

        def closed(sock) -> None:
            closes.append(time.monotonic())
            selector.unregister(sock)
            del sent[sock]
            sock.close()

        while sent and time.monotonic() < deadline:
            if time.monotonic() >= next_byte:
                for sock, index in list(sent.items()):
                    try:
                        sock.send(TRICKLED_HEAD[index : index + 1])
                        sent[sock] = index + 1
                    except OSError:
                        closed(sock)
                next_byte += TRICKLE_INTERVAL
            timeout = min(next_byte, deadline) - time.monotonic()
            for key, _ in selector.select(max(timeout, 0)):
                sock = key.fileobj
                try:
                    data = sock.recv(RECV_ANY)
                except ConnectionResetError:
                    data = b""
                # closing silently or with a 408 are both fine; a request must not run
                assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
                closed(sock)
    reset_all(sent)
    assert not sent, f"{len(sent)} trickling connections still open after {deadline - connected}s"
    return connecting, connected, closes


def test_slowloris_closed_at_header_timeout_normal_client_served(start_server, mode, nofile):
    nofile(2 * SLOWLORIS_CONNECTIONS + FD_MARGIN)
    server = start_server(APP, mode, QUIET, "--timeout-request-header", str(HEADER_TIMEOUT))
    idle_fds = fd_count(server.pid)
    attack = start_thread(trickle, server.port, SLOWLORIS_CONNECTIONS)
    latencies = []
    while attack.is_alive():
        started = time.monotonic()
        with server.client() as client:
            response = client.request("GET", "/normal")
        latencies.append(time.monotonic() - started)
        assert response.status == 200 and response.body == b"/normal", response
    connecting, connected, closes = attack.join(HEADER_TIMEOUT + HEADER_TIMEOUT_SLACK + 60)
    # Each was accepted between `connecting` and `connected`, and its timeout counts from then.
    earliest = min(closes) - connecting
    latest = max(closes) - connected
    report(
        f"{mode}: slowloris",
        connections=len(closes),
        connect_s=f"{connected - connecting:.2f}",
        closed_after_s=f"{earliest:.2f}..{latest:.2f}",
        normal_requests=len(latencies),
        slowest_normal_s=f"{max(latencies):.3f}",
    )
    assert len(closes) == SLOWLORIS_CONNECTIONS
    assert earliest >= HEADER_TIMEOUT - TIMER_TOLERANCE, f"closed {earliest:.3f}s after connecting"
    # (the trickle gives up on connections left open HEADER_TIMEOUT_SLACK after the timeout)
    assert max(latencies) < HEADER_TIMEOUT / 2, (
        f"a normal request took {max(latencies):.2f}s during the slowloris attack"
    )
    wait_idle_fds(server, idle_fds)
    assert_no_errors(server)


# -- a slow reader of a large streamed response ---------------------------------------------


def test_slow_reader_of_a_large_stream(start_server, mode, token):
    server = start_server(APP, mode, QUIET)
    assert counts(server, token) == {}
    rss_before = rss_kib(server.pid)
    with server.client(rcvbuf=STREAM_CHUNK, timeout=60) as client:
        client.send(
            b"GET /_/stream?size=%d&chunk=%d&token=%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % (STREAM_SIZE, STREAM_CHUNK, token.encode())
        )
        # the client reads nothing: the app's send() must wait
        sent = wait_stalled(
            lambda: counts(server, token).get("sent", 0), "the app's send() to wait"
        )
        rss_stalled = rss_kib(server.pid)
        report(
            f"{mode}: slow reader of {STREAM_SIZE} bytes",
            app_sent_while_stalled=sent,
            rss_growth_kib=rss_stalled - rss_before,
        )
        assert sent <= STALLED_STREAM_BOUND, (
            f"{mode}: the app sent {sent} bytes to a client that read nothing"
        )
        assert (rss_stalled - rss_before) * KIB <= STALLED_RSS_GROWTH, (
            f"{mode}: RSS grew {rss_stalled - rss_before} KiB while the client did not read"
        )
        response = client.read_response()
        assert response.status == 200
        body = response.body
        assert len(body) == STREAM_SIZE
        for index in range(STREAM_SIZE // STREAM_CHUNK):
            piece = body[index * STREAM_CHUNK : (index + 1) * STREAM_CHUNK]
            assert piece == bytes([index % 251]) * STREAM_CHUNK, f"chunk {index} is wrong"
        assert client.request("GET", "/after").body == b"/after"
    assert counts(server, token) == {"sent": STREAM_SIZE, "done": 1}
    assert_no_errors(server)


# -- pipelining without reading ---------------------------------------------------------------


def test_pipelined_flood_without_reading(start_server, mode):
    server = start_server(APP, mode, QUIET)
    requests = b"".join(
        b"GET /%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (index, PIPELINE_PAD)
        for index in range(PIPELINED)
    )
    view = memoryview(requests)
    rss_before = rss_kib(server.pid)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_BUFFER)
    sock.setblocking(False)
    sent = 0

    def push() -> int:
        nonlocal sent
        while sent < len(requests):
            try:
                sent += sock.send(view[sent : sent + MIB])
            except BlockingIOError:
                break
        return sent

    # 1. The client sends as much as it can and reads nothing: the server must stop
    # reading (unread bytes wait in its socket while it idles) once answers back up.
    last = {"sent": -1, "ticks": cpu_ticks(server.pid), "quiet": 0}

    def server_stopped_reading():
        now_sent = push()
        ticks = cpu_ticks(server.pid)
        idle = ticks - last["ticks"] <= IDLE_TICKS and now_sent == last["sent"]
        last.update(sent=now_sent, ticks=ticks)
        waiting = now_sent == len(requests) or unread_bytes(server.port, sock) > 0
        last["quiet"] = last["quiet"] + 1 if idle and waiting else 0
        return last["quiet"] >= 2

    started = time.monotonic()
    try:
        wait_until(
            server_stopped_reading, 120, interval=STALL_POLL, message="the server to stop reading"
        )
        rss_stalled = rss_kib(server.pid)
        stalled = time.monotonic()
        report(
            f"{mode}: {PIPELINED} pipelined requests, client not reading",
            requests_bytes=len(requests),
            sent_before_stall=sent,
            rss_growth_kib=rss_stalled - rss_before,
        )
        assert sent < len(requests), (
            f"{mode}: the server read all {len(requests)} bytes of requests while the client "
            "read no answer"
        )
        assert (rss_stalled - rss_before) * KIB <= PIPELINE_RSS_GROWTH, (
            f"{mode}: RSS grew {rss_stalled - rss_before} KiB while answers backed up"
        )

        # 2. The client reads: every request is answered, in order.
        buf = bytearray()
        answered = 0
        deadline = time.monotonic() + 240
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while answered < PIPELINED:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{mode}: {answered} of {PIPELINED} answered in time"
                for _, events in selector.select(remaining):
                    if events & selectors.EVENT_WRITE and push() == len(requests):
                        selector.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        data = sock.recv(MIB)
                        assert data, f"{mode}: closed after {answered} answers"
                        buf += data
                        answered = take_answers(buf, answered)
        finished = time.monotonic()
        assert not buf, f"bytes after the last answer: {bytes(buf[:200])!r}"
        rss_after = rss_kib(server.pid)
        report(
            f"{mode}: {PIPELINED} pipelined requests answered",
            stall_s=round(stalled - started, 2),
            answer_s=round(finished - stalled, 2),
            rss_growth_kib=rss_after - rss_before,
        )
        assert (rss_after - rss_before) * KIB <= PIPELINE_RSS_GROWTH
    finally:
        sock.close()
    assert_no_errors(server)


def take_answers(buf: bytearray, answered: int) -> int:
    """Check the complete answers at the start of `buf` (the first answers request
    number `answered`) and remove them; returns the new count."""
    pos = 0
    while True:
        end = response_end(buf, pos)
        if end < 0:
            break
        assert buf.startswith(b"HTTP/1.1 200 ", pos), bytes(buf[pos : pos + 200])
        # the body, the request's path, ends the answer
        expected = b"\r\n\r\n/%d" % answered
        assert buf.endswith(expected, pos, end), f"answer {answered}: {bytes(buf[pos:end])!r}"
        pos = end
        answered += 1
    del buf[:pos]
    return answered


# -- --limit-concurrency under overload ---------------------------------------------------------


def test_limit_concurrency_overload_503_and_recovery(start_server, mode, token, nofile):
    nofile(OVERLOAD_CONNECTIONS + FD_MARGIN)
    server = start_server(APP, mode, QUIET, "--limit-concurrency", str(LIMIT_CONCURRENCY))
    held = [server.client(timeout=60) for _ in range(HELD_REQUESTS)]
    try:
        for client in held:
            client.send(b"GET /_/hold?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        wait_until(
            lambda: counts(server, token).get("held") == HELD_REQUESTS,
            30,
            message="the held requests to run",
        )
        socks = connect_many(server.port, OVERLOAD_CONNECTIONS)
        try:
            answers = exchange(socks, b"GET /overload HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            reset_all(socks)
        statuses = Counter(status_of(response) for response, _ in answers)
        slowest = max(seconds for _, seconds in answers)
        report(
            f"{mode}: {OVERLOAD_CONNECTIONS} connections over --limit-concurrency "
            f"{LIMIT_CONCURRENCY}",
            statuses=dict(statuses),
            slowest_s=f"{slowest:.3f}",
        )
        # All answered while the held requests still run: none was queued behind them.
        # A connection accepted while the server held fewer than the limit is served.
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] <= LIMIT_CONCURRENCY - HELD_REQUESTS, statuses
        unanswered = select.select([client.sock for client in held], [], [], 0)[0] == []
        assert unanswered, "a held request was answered before its release"

        def release() -> bool:
            with server.client() as client:
                return client.request("GET", f"/_/release?token={token}").status == 200

        wait_until(release, 30, interval=0.1, message="a request to go through again")
        for client in held:
            response = client.read_response()
            assert response.status == 200 and response.body == b"released"
    finally:
        for client in held:
            client.close()
    for index in range(20):
        with server.client() as client:
            assert client.request("GET", f"/after/{index}").status == 200
    assert_no_errors(server)


# -- connection churn --------------------------------------------------------------------------


def churn_round(server, token: str, started_before: int) -> int:
    """CHURN_SHAPE_COUNT connections of each shape, reset (RST) once they are under way:
    a partial head, a partial body the app is reading, a large response the app is
    streaming. Returns the uploads started so far."""
    partial_head = b"GET /partial HTTP/1.1\r\nHost: x\r\nX-Partial: "
    partial_body = (
        b"POST /_/upload?token=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        % token.encode()
        + b"b" * 1000
    )
    stream = b"GET /_/stream?size=%d&token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (
        CHURN_STREAM_SIZE,
        token.encode(),
    )
    # Connected (and so accepted: the accept queue is first in, first out) in this
    # order: once the last streams run, the server has read the partial heads too.
    socks = connect_many(server.port, 3 * CHURN_SHAPE_COUNT)
    heads = socks[:CHURN_SHAPE_COUNT]
    bodies = socks[CHURN_SHAPE_COUNT : 2 * CHURN_SHAPE_COUNT]
    streams = socks[2 * CHURN_SHAPE_COUNT :]
    try:
        for group, data in ((heads, partial_head), (bodies, partial_body), (streams, stream)):
            for sock in group:
                assert sock.send(data) == len(data)
        started = started_before + CHURN_SHAPE_COUNT
        wait_until(
            lambda: counts(server, token).get("started", 0) >= started,
            60,
            message="the uploads to start",
        )
        waiting = set(streams)
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            for sock in streams:
                selector.register(sock, selectors.EVENT_READ)
            while waiting:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(waiting)} streams did not start"
                for key, _ in selector.select(remaining):
                    sock = key.fileobj
                    assert sock.recv(RECV_ANY).startswith(b"HTTP/1.1 200 ")
                    selector.unregister(sock)
                    waiting.discard(sock)
    finally:
        reset_all(socks)
    return started


def test_connection_churn_with_resets(start_server, mode, token):
    server = start_server(APP, mode, QUIET)
    idle_fds = fd_count(server.pid)
    started = churn_round(server, token, 0)  # warm-up: allocator pools, code paths
    wait_idle_fds(server, idle_fds)
    rss_idle = rss_kib(server.pid)
    census_idle = census(server)
    began = time.monotonic()
    for _ in range(CHURN_ROUNDS):
        started = churn_round(server, token, started)
    churned = time.monotonic()
    wait_idle_fds(server, idle_fds)
    rss_after = rss_kib(server.pid)
    census_after = census(server)
    report(
        f"{mode}: churn of {CHURN_ROUNDS * 3 * CHURN_SHAPE_COUNT} reset connections",
        seconds=round(churned - began, 2),
        rss_idle_kib=rss_idle,
        rss_after_kib=rss_after,
        census=census_after,
    )
    assert census_after == census_idle, f"{mode}: tasks or connections left: {census_after}"
    assert (rss_after - rss_idle) * KIB <= CHURN_RSS_SLACK, (
        f"{mode}: RSS {rss_idle} -> {rss_after} KiB after the churn"
    )
    assert counts(server, token).get("done", 0) == 0, "a stream was not cut short"
    with server.client() as client:
        assert client.request("GET", "/still-alive").body == b"/still-alive"
    assert_no_errors(server)
