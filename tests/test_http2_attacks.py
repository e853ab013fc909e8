"""The published HTTP/2 attacks against a real server started with `--http2` (h2c with
prior knowledge), both modes, with raw frames (tests/h2_raw.py): each is answered as
limits.py says, a normal client on another connection is served meanwhile, and where
memory is the point the server's peak RSS stays bounded. Floods are bounded in count
(a small multiple of the bound they cross) and sent to 127.0.0.1 only.

The GOAWAY codes taken: ENHANCE_YOUR_CALM (the pure mode's, nghttp2's glitch limit,
the C session's counts) and, for rapid reset, INTERNAL_ERROR (nghttp2's stream reset
limit says so, should it come first); where one provoked stream error already ends the
connection, that error's code (RFC 9113 5.4.1: PROVOCATIONS). An HPACK bomb is a 431
in the C mode (RFC 9113 10.5.1), the end of the connection in the pure one.
"""

from __future__ import annotations

import struct

import pytest
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from fastserve.protocols.http2.limits import (
    CONTINUATION_FRAMES_MAX,
    CONTROL_FRAME_BURST,
    EMPTY_FRAME_BURST,
    STREAM_RESET_BURST,
)
from flood_util import peak_rss_kib
from h2_raw import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DEFAULT_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    INITIAL_WINDOW,
    INTERNAL_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    STREAM_CLOSED,
    WINDOW_MAX,
    WINDOW_UPDATE,
    RawH2,
    raw_frame,
    request_fields,
    served,
)
from process_util import holds_connection, wait_until

APP = "tests.apps_http2:app"
# How far past a bound a flood goes.
FLOOD_FACTOR = 2
# The most a test's attack may add to the server's peak RSS.
RSS_GROWTH_MAX_KIB = 64 * 1024
# --timeout-keep-alive of the stalled-client tests' server: a stalled connection's end.
KEEP_ALIVE_SECONDS = 2
CLOSE_WAIT_SECONDS = 30
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_HEADER_TABLE_SIZE_DEFAULT = 4096
HPACK_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
HPACK_FIRST_DYNAMIC_INDEX = b"\xbe"  # an indexed field, index 62
CALM = {ENHANCE_YOUR_CALM}
# What a response body's stream sends: far more than the windows let through.
BIG_PATH = "/_/big-stream?size=104857600"
STALLED_STREAMS = 50

# Floods: they bound the server's memory (peak RSS), which the sanitizer run's shadow
# memory and quarantine inflate, so that run leaves them out (as tests/test_floods.py).
pytestmark = pytest.mark.flood


@pytest.fixture
def server(servers, mode):
    return servers.get(APP, mode, "--http2")


def stream_ids(count: int, first: int = 1) -> range:
    return range(first, first + 2 * count, 2)


def send_flood(client: RawH2, frames) -> None:
    """Frames in one write; the server may end the connection before it read them all."""
    try:
        client.send(*frames)
    except (BrokenPipeError, ConnectionResetError):
        pass


def assert_ended_with(client: RawH2, codes) -> None:
    """The server closes the connection, its last GOAWAY with one of `codes`."""
    client.wait_closed()
    goaways = [f.error_code for f in client.seen if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[-1] in codes, client.seen[-5:]


def assert_peak_rss_bounded(server, peak_before: int) -> None:
    growth = peak_rss_kib(server.proc.pid) - peak_before
    assert growth < RSS_GROWTH_MAX_KIB, f"peak RSS grew by {growth} KiB"


# -- CVE-2023-44487 rapid reset, CVE-2025-8671 MadeYouReset ------------------------------


def test_rapid_reset(server):
    """HEADERS and RST_STREAM, over and over: the stream reset limit ends it."""
    peak_before = peak_rss_kib(server.proc.pid)
    with RawH2(server.port) as client:
        frames = []
        for stream_id in stream_ids(FLOOD_FACTOR * STREAM_RESET_BURST):
            frames += [
                client.headers(stream_id, request_fields()),
                RstStreamFrame(stream_id, CANCEL),
            ]
        send_flood(client, frames)
        assert served(server.port)
        assert_ended_with(client, {ENHANCE_YOUR_CALM, INTERNAL_ERROR})
    assert_peak_rss_bounded(server, peak_before)


def window_overflow(client: RawH2, stream_id: int) -> list:
    return [WindowUpdateFrame(stream_id, window_increment=WINDOW_MAX)]


def data_after_end_stream(client: RawH2, stream_id: int) -> list:
    return [DataFrame(stream_id, data=b"late")]


def window_update_of_0(client: RawH2, stream_id: int) -> list:
    return [raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", 0))]


# How each provokes a reset of the stream it follows, and the codes the connection may
# end with: besides the flood's ENHANCE_YOUR_CALM, the provoked stream error's code as
# a connection error (RFC 9113 5.4.1 lets any stream error be one): a WINDOW_UPDATE of
# 0 in the pure mode (`h2`); a stream's window overflow (FLOW_CONTROL_ERROR, 6.9.1) and
# DATA after END_STREAM (STREAM_CLOSED, 5.1) in the C mode (nghttp2), at the first.
PROVOCATIONS = {
    "window-overflow": (window_overflow, {ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR}),
    "data-after-end-stream": (data_after_end_stream, {ENHANCE_YOUR_CALM, STREAM_CLOSED}),
    "window-update-0": (window_update_of_0, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR}),
}


@pytest.mark.parametrize(("provoke", "codes"), PROVOCATIONS.values(), ids=PROVOCATIONS.keys())
def test_made_you_reset(server, provoke, codes):
    """Requests, each followed by a frame the server resets it for: its own resets
    count as the client's do."""
    with RawH2(server.port) as client:
        frames = []
        for stream_id in stream_ids(FLOOD_FACTOR * STREAM_RESET_BURST):
            frames += [client.headers(stream_id, request_fields()), *provoke(client, stream_id)]
        send_flood(client, frames)
        assert served(server.port)
        assert_ended_with(client, codes)


# -- CVE-2024-27316 and kin: CONTINUATION floods; HPACK bombs -------------------------------


@pytest.mark.parametrize("size", [0, DEFAULT_FRAME_SIZE], ids=["empty", "full"])
def test_continuation_flood(server, size):
    """A header block that never ends, in empty or full CONTINUATION frames."""
    peak_before = peak_rss_kib(server.proc.pid)
    with RawH2(server.port) as client:
        block = client.block(request_fields())
        piece = b"\x00" * size  # (never decoded: the block is refused first)
        frames = [raw_frame(HEADERS, END_STREAM, 1, block)]
        frames += [raw_frame(CONTINUATION, 0, 1, piece)] * (
            FLOOD_FACTOR * CONTINUATION_FRAMES_MAX + 1
        )
        send_flood(client, frames)
        assert served(server.port)
        assert_ended_with(client, CALM)
    assert_peak_rss_bounded(server, peak_before)


def test_hpack_bomb(server, mode):
    """One 4 KiB field put in the dynamic table, then named again by one byte at a
    time: ~16 MiB of header list in an 8 KiB block, refused at the list limit: the
    pure mode ends the connection (its HPACK decoder stops at the limit), the C mode
    answers the stream 431 and goes on (nghttp2 decodes the block to keep its table
    in step, the list is not kept past the limit): RFC 9113 10.5.1 allows either."""
    peak_before = peak_rss_kib(server.proc.pid)
    value_size = SETTINGS_HEADER_TABLE_SIZE_DEFAULT - HPACK_ENTRY_OVERHEAD - len(b"x-bomb")
    references = DEFAULT_FRAME_SIZE // 2 - value_size
    with RawH2(server.port) as client:
        entry = client.encoder.encode([(b"x-bomb", b"b" * value_size)], huffman=False)
        block = client.block(request_fields()) + entry + HPACK_FIRST_DYNAMIC_INDEX * references
        send_flood(client, [raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, block)])
        assert served(server.port)
        if mode == "c":
            assert client.response(1)[0] == 431
            # the connection goes on (no request: this client's encoder is out of step)
            assert client.ping_answered()
        else:
            assert_ended_with(client, {ENHANCE_YOUR_CALM, COMPRESSION_ERROR})
            assert not any(isinstance(f, HeadersFrame) for f in client.seen), "served"
    assert_peak_rss_bounded(server, peak_before)


# -- CVE-2019-9512 / 9515 / 9518 / 9513: PING, SETTINGS, empty frames ---------------------


def ping_flood(client: RawH2, count: int) -> list:
    return [PingFrame(0, opaque_data=struct.pack(">Q", n)) for n in range(count)]


def settings_flood(client: RawH2, count: int) -> list:
    return [SettingsFrame(0)] * count


def empty_data_flood(client: RawH2, count: int) -> list:
    head = client.headers(1, request_fields("/_/slow?delay=5"), end_stream=False)
    return [head, *[DataFrame(1, data=b"")] * count]


def priority_flood(client: RawH2, count: int) -> list:
    return [PriorityFrame(stream_id, depends_on=0) for stream_id in stream_ids(count)]


FLOODS = {
    "ping": (ping_flood, CONTROL_FRAME_BURST),
    "settings": (settings_flood, CONTROL_FRAME_BURST),
    "empty-data": (empty_data_flood, EMPTY_FRAME_BURST),
    "priority": (priority_flood, EMPTY_FRAME_BURST),
}


@pytest.mark.parametrize(("flood", "burst"), FLOODS.values(), ids=FLOODS.keys())
def test_frame_flood(server, flood, burst):
    """Twice the bound's burst in one write, none of the answers read meanwhile."""
    with RawH2(server.port) as client:
        send_flood(client, flood(client, FLOOD_FACTOR * burst))
        assert served(server.port)
        assert_ended_with(client, CALM)


def test_a_burst_under_the_bounds_is_served(server):
    """The bounds leave room for a busy client: half of each burst, then requests."""
    with RawH2(server.port) as client:
        client.send(*ping_flood(client, CONTROL_FRAME_BURST // 2))
        pairs = []
        for stream_id in stream_ids(STREAM_RESET_BURST // 2):
            pairs += [
                client.headers(stream_id, request_fields()),
                RstStreamFrame(stream_id, CANCEL),
            ]
        client.send(*pairs)
        last = stream_ids(1, first=STREAM_RESET_BURST + 1)[0]
        client.request(last)
        assert client.response(last) == (200, b"Hello, world!")


# -- CVE-2019-9511 / 9517: a client that does not take what it asked for -----------------


@pytest.fixture
def stalling_server(servers, mode):
    return servers.get(APP, mode, "--http2", "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS))


@pytest.mark.parametrize("stall", ["zero-window", "no-reads"])
def test_stalled_client(stalling_server, stall):
    """Big responses on many streams to a client whose windows stay shut (or which
    opens them and never reads): the server holds a bounded amount meanwhile, and
    the connection ends once nothing moved for --timeout-keep-alive."""
    server = stalling_server
    peak_before = peak_rss_kib(server.proc.pid)
    with RawH2(server.port, handshake=False) as client:
        window = 0 if stall == "zero-window" else WINDOW_MAX
        client.send_raw(PREFACE)
        client.send(SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: window}))
        if window:
            client.send(WindowUpdateFrame(0, window_increment=WINDOW_MAX - INITIAL_WINDOW))
        ids = stream_ids(STALLED_STREAMS)
        client.send(*(client.headers(i, request_fields(BIG_PATH)) for i in ids))
        assert served(server.port)
        wait_until(
            lambda: not holds_connection(server.proc.pid, client.sock),
            CLOSE_WAIT_SECONDS,
            message="the stalled connection's end",
        )
    assert_peak_rss_bounded(server, peak_before)


# -- stream id exhaustion ------------------------------------------------------------------


def test_stream_id_exhaustion(server):
    """The last stream id at once: served; the connection can open no more (a lower id
    is a PROTOCOL_ERROR), and other connections are not concerned."""
    with RawH2(server.port) as client:
        client.request(WINDOW_MAX)
        assert client.response(WINDOW_MAX) == (200, b"Hello, world!")
        client.request(1)
        assert served(server.port)
        assert_ended_with(client, {PROTOCOL_ERROR})
