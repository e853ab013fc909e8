"""HTTP/2's operations, both modes, against real server processes: keep-alive PINGs
(--http2-keep-alive-interval, --http2-keep-alive-timeout) and the graceful shutdown's
PING beside them, --limit-concurrency counting streams together with HTTP/1.1
requests, and pathsend over HTTP/2 (httpx; raw frames under a small client window,
the server's peak memory well under the file's size). Raw frames by
`h2_raw.py` (the client answers, or does not, as each test says)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import time
from urllib.parse import quote

import httpx
import pytest
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from flood_util import peak_rss_kib, rss_kib
from h2_raw import (
    CANCEL,
    DEFAULT_FRAME_SIZE,
    INITIAL_WINDOW,
    INTERNAL_ERROR,
    NO_ERROR,
    PREFACE,
    RawH2,
)
from process_util import get, wait_until

APP = "tests.apps_http2:app"
# The keep-alive interval and ack timeout of these tests (seconds): several PINGs a
# test, and a timeout that several acked PINGs outlast.
INTERVAL = 0.3
ACK_TIMEOUT = 0.6
KEEP_ALIVE = (
    "--http2",
    "--http2-keep-alive-interval", str(INTERVAL),
    "--http2-keep-alive-timeout", str(ACK_TIMEOUT),
    "--timeout-keep-alive", "60",  # (the idle deadline out of the way)
)  # fmt: skip
STREAM_ID_MAX = 2**31 - 1
# asyncio may run a timer up to its clock's resolution early; a margin for that.
EARLY = 0.95


def is_server_ping(frame) -> bool:
    return isinstance(frame, PingFrame) and "ACK" not in frame.flags


def ack(client: RawH2, ping: PingFrame) -> None:
    client.send(PingFrame(0, flags=["ACK"], opaque_data=ping.opaque_data))


# -- keep-alive PINGs -------------------------------------------------------------------


def test_a_quiet_connection_is_pinged_and_stays_open_while_it_acks(servers, mode):
    server = servers.get(APP, mode, *KEEP_ALIVE)
    with RawH2(server.port) as client:
        arrivals = []
        for _ in range(4):  # (spanning more than ACK_TIMEOUT)
            ping = client.wait_for(is_server_ping)
            arrivals.append(time.monotonic())
            ack(client, ping)
        gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
        # each PING comes an interval after the client's last bytes (the ack) at least
        assert all(gap >= INTERVAL * EARLY for gap in gaps), gaps
        client.request(1)
        assert client.response(1) == (200, b"Hello, world!")
        assert not [frame for frame in client.seen if isinstance(frame, GoAwayFrame)], client.seen


def test_a_client_that_does_not_ack_gets_goaway_and_is_closed(servers, mode):
    server = servers.get(APP, mode, *KEEP_ALIVE)
    with RawH2(server.port) as client:
        client.wait_for(is_server_ping)
        pinged = time.monotonic()
        assert client.wait_goaway().error_code == NO_ERROR
        assert time.monotonic() - pinged >= ACK_TIMEOUT * EARLY
        client.wait_closed()


def test_a_gone_client_ends_its_quiet_stream(servers, mode, token):
    """The case the PINGs are for: a stream whose app waits, a client that no longer
    answers. The app sees http.disconnect once the ack is overdue."""
    server = servers.get(APP, mode, *KEEP_ALIVE)
    with RawH2(server.port) as client:
        client.request(1, f"/_/wait-disconnect?token={token}")
        server.wait_event(token, lambda events: "waiting" in events)
        client.wait_for(is_server_ping)
        client.wait_goaway()
        client.wait_closed()
    server.wait_event(token, lambda events: "http.disconnect" in events)


def test_a_busy_connection_is_not_pinged(servers, mode):
    """Bytes from the client restart the wait: requests one after the other for three
    intervals, each taking a third of one, and no PING from the server among the
    frames."""
    server = servers.get(APP, mode, *KEEP_ALIVE)
    with RawH2(server.port) as client:
        until = time.monotonic() + 3 * INTERVAL
        stream_id = 1
        while time.monotonic() < until:
            client.request(stream_id, f"/_/slow?delay={INTERVAL / 3}")
            assert client.response(stream_id)[0] == 200
            stream_id += 2
        assert not [frame for frame in client.seen if is_server_ping(frame)], client.seen


def test_graceful_shutdown_beside_keep_alive_pings(start_server, mode, token):
    """SIGTERM with keep-alive PINGs on: the client acks every PING (the shutdown's
    too); the two GOAWAYs come, the running stream completes, the server exits 0."""
    server = start_server(APP, mode, *KEEP_ALIVE)
    with RawH2(server.port) as client:
        client.request(1, f"/_/slow?delay=1.5&token={token}")
        ack(client, client.wait_for(is_server_ping))  # a keep-alive PING, acked
        server.wait_event(token, lambda events: "started" in events)
        server.send_signal(signal.SIGTERM)
        while True:
            frame = client.next_frame()
            if is_server_ping(frame):
                ack(client, frame)
            elif isinstance(frame, DataFrame) and "END_STREAM" in frame.flags:
                break
        client.wait_closed()
        # any stream id, then the last one taken (and no other at the close)
        goaways = [frame for frame in client.seen if isinstance(frame, GoAwayFrame)]
        assert [frame.last_stream_id for frame in goaways] == [STREAM_ID_MAX, 1]
        assert {frame.error_code for frame in goaways} == {NO_ERROR}
    assert server.wait() == 0


# -- --limit-concurrency ---------------------------------------------------------------


# Streams tried before the event reader's request is surely gone (each a loop pass).
TAKE_ATTEMPTS = 20


def hold_http1_request(port: int, token: str) -> socket.socket:
    """An HTTP/1.1 request whose app waits for the client to leave."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /_/wait-disconnect?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
    return sock


def take_running_stream(client: RawH2, path: str, first_id: int) -> int:
    """The id of a stream of `path` the server runs rather than refuses: the event
    reader's last request may count against the limit for a moment after its
    answer, so a refused stream (503) is tried again on the next id. Two PING round
    trips after each: a refusal, written with the first ack at the latest, is here."""
    for stream_id in range(first_id, first_id + 2 * TAKE_ATTEMPTS, 2):
        client.request(stream_id, path)
        assert client.ping_answered() and client.ping_answered()
        if not any(frame.stream_id == stream_id for frame in client.seen):
            return stream_id
    raise AssertionError(f"every stream of {path} refused: {client.seen[-6:]}")


def test_limit_concurrency_counts_streams_with_http1_requests(servers, mode, token):
    """--limit-concurrency 3: one HTTP/1.1 request and two streams fill it; a third
    stream and another HTTP/1.1 request get 503, the connection goes on; once the
    HTTP/1.1 request is gone, a stream is served again."""
    server = servers.get(APP, mode, "--http2", "--limit-concurrency", "3")
    waiting = f"/_/wait-disconnect?token={token}"
    held = hold_http1_request(server.port, token)
    server.wait_event(token, lambda events: events.count("waiting") == 1)
    with RawH2(server.port) as client:
        client.request(1, waiting)
        # (the event reader is a request too: it fits while two run, not three)
        server.wait_event(token, lambda events: events.count("waiting") == 2)
        third = take_running_stream(client, waiting, 3)  # the limit's third request
        client.request(third + 2)  # one too many
        assert client.response(third + 2) == (503, b"503 Service Unavailable\n")
        assert get(server.url("/_/hello")).status_code == 503
        held.close()
        stream_ids = iter(range(third + 4, 999, 2))

        def served_again():
            stream_id = next(stream_ids)
            client.request(stream_id)
            return client.response(stream_id)[0] == 200

        wait_until(served_again, 30, message="a stream served once the HTTP/1.1 one is gone")
        client.send(RstStreamFrame(1, error_code=CANCEL), RstStreamFrame(third, error_code=CANCEL))


# -- --timeout-request ------------------------------------------------------------------

REQUEST_TIMEOUT = 1.0


def test_timeout_request_resets_a_stream_whose_head_is_out(servers, mode):
    """--timeout-request is per stream (test_http2.py: the 504 before the head): a
    response stuck on the client's window past it is reset (INTERNAL_ERROR, the 504
    can no longer go), a concurrent stream on the connection completes, and the
    connection serves the next one."""
    server = servers.get(APP, mode, "--http2", "--timeout-request", str(REQUEST_TIMEOUT))
    with small_window_client(server.port) as client:
        started = time.monotonic()
        client.request(1, f"/_/big-stream?size={MIB}")  # (the window not opened: stuck)
        client.request(3, "/_/slow?delay=0.2")
        status, body = client.response(3)
        assert status == 200 and b'"path": "/_/slow"' in body
        reset = client.wait_reset(1)
        assert reset.error_code == INTERNAL_ERROR
        assert time.monotonic() - started >= REQUEST_TIMEOUT * EARLY
        client.request(5)
        assert client.response(5) == (200, b"Hello, world!")


# -- pathsend --------------------------------------------------------------------------

MIB = 1 << 20
# The raw client's stream window: two frames in flight at most (a slow reader).
SMALL_WINDOW = 2 * DEFAULT_FRAME_SIZE
FILE_SIZE = 16 * MIB


def write_file(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def pathsend_target(path) -> str:
    return f"/_/pathsend?path={quote(str(path))}"


def test_pathsend_over_http2_is_the_files_bytes(servers, mode, tmp_path):
    """A few MiB by httpx (HTTP/2 with prior knowledge), two streams at once."""
    server = servers.get(APP, mode, "--http2")
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    contents = [write_file(path, size) for path, size in zip(files, (3 * MIB, 3 * MIB + 7))]

    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            return await asyncio.gather(
                *(client.get(server.url(pathsend_target(path))) for path in files)
            )

    responses = asyncio.run(main())
    assert [response.http_version for response in responses] == ["HTTP/2", "HTTP/2"]
    assert [response.content for response in responses] == contents


def test_pathsend_to_a_head_request_is_the_head_alone(servers, mode, tmp_path, token):
    """HEAD: the HEADERS (the file's Content-Length) end the stream; the app's
    pathsend returns as sent, no DATA frame follows on the ended stream."""
    server = servers.get(APP, mode, "--http2")
    path = tmp_path / "head.bin"
    write_file(path, MIB)
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        response = client.head(server.url(pathsend_target(path) + f"&token={token}"))
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == str(MIB)
    server.wait_event(token, lambda events: "sent" in events)


def small_window_client(port: int) -> RawH2:
    """A raw client whose SETTINGS give each stream a SMALL_WINDOW and frames of the
    protocol's default size at most."""
    client = RawH2(port, handshake=False)
    client.send_raw(PREFACE)
    client.send(
        SettingsFrame(
            0,
            settings={
                SettingsFrame.INITIAL_WINDOW_SIZE: SMALL_WINDOW,
                SettingsFrame.MAX_FRAME_SIZE: DEFAULT_FRAME_SIZE,
            },
        )
    )
    client.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
    client.send(SettingsFrame(0, flags=["ACK"]))
    client.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
    return client


@pytest.mark.flood  # a slow client; it bounds RSS, which the sanitizer run inflates
def test_pathsend_under_a_small_window_is_bounded(servers, mode, tmp_path):
    """16 MiB to a client that opens its windows only by what it has read: every DATA
    frame within the peer's frame size and the windows granted, the bytes the file's,
    and the server's peak memory grows by far less than the file (read in blocks as
    the windows open, never whole)."""
    server = servers.get(APP, mode, "--http2", "--no-access-log")
    path = tmp_path / "big.bin"
    expected = hashlib.sha256(write_file(path, FILE_SIZE)).hexdigest()
    before = rss_kib(server.pid)
    with small_window_client(server.port) as client:
        client.request(1, pathsend_target(path))
        digest = hashlib.sha256()
        received = 0
        granted = {0: INITIAL_WINDOW, 1: SMALL_WINDOW}  # connection, stream
        while True:
            frame = client.wait_for(lambda f: f.stream_id == 1)
            if not isinstance(frame, DataFrame):
                continue
            size = len(frame.data)
            assert size <= DEFAULT_FRAME_SIZE
            received += size
            assert received <= min(granted.values()), (received, granted)
            digest.update(frame.data)
            if "END_STREAM" in frame.flags:
                break
            if size:  # read: the windows open by as much
                client.send(WindowUpdateFrame(0, size), WindowUpdateFrame(1, size))
                granted = {stream_id: sent + size for stream_id, sent in granted.items()}
        client.seen.clear()  # (2 x 16 MiB of frames kept otherwise)
    assert (received, digest.hexdigest()) == (FILE_SIZE, expected)
    grown_kib = peak_rss_kib(server.pid) - before
    assert grown_kib < FILE_SIZE // 1024 // 4, f"the peak grew by {grown_kib} KiB"
