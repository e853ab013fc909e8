"""HTTP/2 frame-level conformance (RFC 9113), the groups of h2spec (not installable
offline) written with hyperframe and hpack: raw frames to a real server started with
`--http2` (h2c with prior knowledge), both modes, and the frames it answers with.

Where RFC 9113 names a stream error, a connection error (GOAWAY with the same code)
is accepted as well: section 5.4.1 lets an endpoint treat any stream error as a
connection error, and the pure mode's `h2` does so for malformed requests and a
stream's WINDOW_UPDATE of 0 (`STREAM_OR_CONNECTION`: the expected difference);
nghttp2 resets the stream alone, but ends the connection for some stream errors (a
stream's window overflow, DATA on a half-closed stream, a stream over
MAX_CONCURRENT_STREAMS once its SETTINGS are acknowledged).
"""

from __future__ import annotations

import struct

import pytest
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

from h2_raw import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_MAX,
    WINDOW_UPDATE,
    Closed,
    RawH2,
    raw_frame,
    request_fields,
)

APP = "tests.apps_http2:app"
MAX_CONCURRENT_STREAMS = 100  # what the server advertises
# A stream whose app stays in the request (it waits for the client to go away) and
# does not read its body.
WAITING_PATH = "/_/slow?delay=5"
# RFC 9113 6.5.2: setting identifiers.
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_UNKNOWN = 0xFF
UNKNOWN_TYPE = 0xEE
# The error of a stream, or (RFC 9113 5.4.1) of the whole connection.
STREAM_OR_CONNECTION = {"stream", "connection"}


@pytest.fixture
def port(servers, mode) -> int:
    return servers.get(APP, mode, "--http2").port


@pytest.fixture
def client(port):
    with RawH2(port) as connection:
        yield connection


def setting(identifier: int, value: int) -> bytes:
    return struct.pack(">HI", identifier, value)


def assert_alive(client: RawH2, stream_id: int) -> None:
    """The connection goes on: a PING is answered, a request on `stream_id` served."""
    assert client.ping_answered()
    client.request(stream_id)
    assert client.response(stream_id) == (200, b"Hello, world!")


def assert_error(client: RawH2, stream_id: int, code: int, scopes=STREAM_OR_CONNECTION) -> None:
    scope, got = client.error_of(stream_id)
    assert scope in scopes and got == code, (scope, got, client.seen)


# -- 3.4 the connection preface ----------------------------------------------------------


def test_preface_then_settings_is_answered_with_settings(port):
    with RawH2(port, handshake=False) as client:
        client.send_raw(PREFACE)
        client.send(SettingsFrame(0))
        first = client.next_frame()
        assert isinstance(first, SettingsFrame) and "ACK" not in first.flags
        assert first.settings[0x3] == MAX_CONCURRENT_STREAMS  # MAX_CONCURRENT_STREAMS


def test_bad_preface_is_a_protocol_error(port):
    """RFC 9113 3.4: PROTOCOL_ERROR; the GOAWAY may be left out (close alone)."""
    with RawH2(port, handshake=False) as client:
        client.send_raw(PREFACE[:16] + b"XX\r\n\r\n" + SettingsFrame(0).serialize())
        client.wait_closed()
        goaways = [f for f in client.seen if isinstance(f, GoAwayFrame)]
        assert [f.error_code for f in goaways] in ([], [PROTOCOL_ERROR]), client.seen


def test_preface_not_followed_by_settings_is_a_protocol_error(port):
    with RawH2(port, handshake=False) as client:
        client.send_raw(PREFACE)
        client.send(PingFrame(0, opaque_data=b"12345678"))
        assert client.connection_error() == PROTOCOL_ERROR


# -- 4 frames: size, unknown types and flags -------------------------------------------


def test_data_frame_over_max_frame_size(client):
    client.request(1, WAITING_PATH, end_stream=False)
    client.send(DataFrame(1, data=b"x" * (DEFAULT_FRAME_SIZE + 1)))
    assert_error(client, 1, FRAME_SIZE_ERROR)


def test_headers_frame_over_max_frame_size_ends_the_connection(client):
    """A frame carrying a field block alters the connection's state (RFC 9113 4.2)."""
    fields = [*request_fields(), (b"x-big", b"a" * (DEFAULT_FRAME_SIZE + 1))]
    block = client.encoder.encode(fields, huffman=False)  # (Huffman would shrink it)
    client.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    assert client.connection_error() == FRAME_SIZE_ERROR


def test_unknown_frame_type_is_ignored(client):
    # (hyperframe's ExtensionFrame writes a length of 0: built byte by byte)
    client.send(
        raw_frame(UNKNOWN_TYPE, 0, 0, b"ignore me"), raw_frame(UNKNOWN_TYPE, 0, 1, b"me too")
    )
    assert_alive(client, 1)


def test_unknown_flags_are_ignored(client):
    client.send(raw_frame(PING, 0xFE, 0, b"flagging"))
    ack = client.wait_for(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
    assert ack.opaque_data == b"flagging"


# -- 5.1 stream states and identifiers ----------------------------------------------------


def test_even_stream_id_from_a_client(client):
    client.request(2)
    assert client.connection_error() == PROTOCOL_ERROR


def test_stream_id_going_backwards(client):
    client.request(5)
    assert client.response(5)[0] == 200
    client.request(3)
    assert client.connection_error() == PROTOCOL_ERROR


@pytest.mark.parametrize(
    "frame",
    [
        raw_frame(DATA, 0, 1, b"body"),
        raw_frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
        raw_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)),
        raw_frame(CONTINUATION, END_HEADERS, 1, b""),
    ],
    ids=["data", "rst_stream", "window_update", "continuation"],
)
def test_frame_on_an_idle_stream(client, frame):
    client.send(frame)
    assert client.connection_error() == PROTOCOL_ERROR


@pytest.mark.parametrize("late", ["data", "headers"])
def test_frame_on_a_half_closed_remote_stream(client, late):
    client.request(1, WAITING_PATH)  # END_STREAM: half-closed (remote) while its app runs
    if late == "data":
        client.send(DataFrame(1, data=b"late"))
    else:
        client.send(client.headers(1, [(b"x-trailer", b"late")]))
    assert_error(client, 1, STREAM_CLOSED)


def test_data_on_a_closed_stream(client):
    client.request(1)
    assert client.response(1)[0] == 200
    client.send(DataFrame(1, data=b"late"))
    assert_error(client, 1, STREAM_CLOSED)


def test_data_after_the_client_reset_the_stream(client):
    client.request(1, WAITING_PATH, end_stream=False)
    client.send(RstStreamFrame(1, error_code=CANCEL))
    client.send(DataFrame(1, data=b"late"))
    assert_error(client, 1, STREAM_CLOSED)
    # a stream error: the connection goes on
    if not any(isinstance(f, GoAwayFrame) for f in client.seen):
        assert_alive(client, 3)


def test_the_stream_over_max_concurrent_streams_is_refused(client):
    ids = range(1, 2 * MAX_CONCURRENT_STREAMS + 2, 2)
    client.send(*(client.headers(i, request_fields("/_/wait-disconnect")) for i in ids))
    scope, code = client.error_of(ids[-1])
    if scope == "connection":
        # nghttp2 (C mode), once its SETTINGS are acknowledged, takes a client over
        # the limit it knows for broken: RFC 9113 5.1.2 names the stream error
        # PROTOCOL_ERROR or REFUSED_STREAM, and 5.4.1 lets a stream error be a
        # connection error. The pure mode refuses the stream and goes on.
        assert code == PROTOCOL_ERROR, client.seen[-3:]
        return
    assert code == REFUSED_STREAM
    client.send(RstStreamFrame(1, error_code=CANCEL))
    assert_alive(client, 2 * MAX_CONCURRENT_STREAMS + 3)


# -- 6.9 flow control ---------------------------------------------------------------------


def test_connection_window_over_2_31_minus_1(client):
    client.send(WindowUpdateFrame(0, window_increment=WINDOW_MAX))
    assert client.connection_error() == FLOW_CONTROL_ERROR


def test_stream_window_over_2_31_minus_1(client):
    client.request(1, WAITING_PATH)
    client.send(WindowUpdateFrame(1, window_increment=WINDOW_MAX))
    assert_error(client, 1, FLOW_CONTROL_ERROR)


def test_initial_window_size_over_2_31_minus_1(client):
    client.send(SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: WINDOW_MAX + 1}))
    assert client.connection_error() == FLOW_CONTROL_ERROR


def test_data_beyond_the_window(client):
    """The app reads nothing: the server's window (its SETTINGS, acknowledged) runs out."""
    window = client.server_settings[SETTINGS_INITIAL_WINDOW_SIZE]
    client.request(1, WAITING_PATH, end_stream=False)
    frames = window // DEFAULT_FRAME_SIZE + 1
    client.send(*(DataFrame(1, data=b"x" * DEFAULT_FRAME_SIZE) for _ in range(frames)))
    assert_error(client, 1, FLOW_CONTROL_ERROR)


def test_connection_window_update_of_0(client):
    client.send(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))
    assert client.connection_error() == PROTOCOL_ERROR


def test_stream_window_update_of_0(client):
    client.request(1, WAITING_PATH)
    client.send(raw_frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)))
    assert_error(client, 1, PROTOCOL_ERROR)


# -- 8.2 / 8.3 header fields of a request -------------------------------------------------

MALFORMED_REQUESTS = {
    "uppercase-name": [*request_fields(), (b"X-Upper", b"1")],
    "connection-specific": [*request_fields(), (b"connection", b"keep-alive")],
    "transfer-encoding": [*request_fields(), (b"transfer-encoding", b"chunked")],
    "te-not-trailers": [*request_fields(), (b"te", b"gzip")],
    "pseudo-after-regular": [*request_fields()[:3], (b"x-a", b"1"), request_fields()[3]],
    "unknown-pseudo": [*request_fields(), (b":foo", b"bar")],
    "response-pseudo": [*request_fields(), (b":status", b"200")],
    "duplicate-pseudo": [*request_fields(), (b":method", b"GET")],
    "missing-method": request_fields()[1:],
    "missing-path": request_fields()[:3],
    "missing-scheme": [request_fields()[0], *request_fields()[2:]],
    "empty-path": [*request_fields()[:3], (b":path", b"")],
}


@pytest.mark.parametrize("fields", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_malformed_request_is_a_protocol_error(client, fields):
    client.send(client.headers(1, fields))
    assert_error(client, 1, PROTOCOL_ERROR)


def test_te_trailers_is_taken(client):
    client.send(client.headers(1, [*request_fields(), (b"te", b"trailers")]))
    assert client.response(1) == (200, b"Hello, world!")


def test_pseudo_header_in_trailers(client):
    client.request(1, "/_/echo", end_stream=False)
    client.send(client.headers(1, [(b":path", b"/again")]))
    assert_error(client, 1, PROTOCOL_ERROR)


def test_content_length_not_matching_the_data(client):
    fields = [*request_fields("/_/echo", "POST"), (b"content-length", b"10")]
    client.send(
        client.headers(1, fields, end_stream=False), DataFrame(1, b"abc", flags=["END_STREAM"])
    )
    assert_error(client, 1, PROTOCOL_ERROR)


# -- 4.3 HPACK ----------------------------------------------------------------------------


def test_hpack_index_out_of_range_is_a_compression_error(client):
    dynamic_62 = b"\xbe"  # an indexed field at index 62: the empty dynamic table's first
    client.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, dynamic_62))
    assert client.connection_error() == COMPRESSION_ERROR


def test_hpack_table_size_update_over_the_setting(client):
    size_update_8192 = b"\x3f\xe1\x3f"  # RFC 7541 6.3, over SETTINGS_HEADER_TABLE_SIZE
    client.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, size_update_8192))
    assert client.connection_error() == COMPRESSION_ERROR


# -- 6.5 SETTINGS -------------------------------------------------------------------------


def test_settings_ack_with_a_payload(client):
    client.send(raw_frame(SETTINGS, 0x1, 0, setting(SETTINGS_ENABLE_PUSH, 0)))
    assert client.connection_error() == FRAME_SIZE_ERROR


def test_settings_length_not_a_multiple_of_6(client):
    client.send(raw_frame(SETTINGS, 0, 0, setting(SETTINGS_ENABLE_PUSH, 0)[:5]))
    assert client.connection_error() == FRAME_SIZE_ERROR


def test_settings_on_a_stream(client):
    client.send(raw_frame(SETTINGS, 0, 1, b""))
    assert client.connection_error() == PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("identifier", "value"),
    [
        (SETTINGS_ENABLE_PUSH, 2),
        (SETTINGS_MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE - 1),
        (SETTINGS_MAX_FRAME_SIZE, 1 << 24),
    ],
    ids=["enable-push-2", "max-frame-size-too-small", "max-frame-size-too-large"],
)
def test_settings_invalid_value(client, identifier, value):
    client.send(raw_frame(SETTINGS, 0, 0, setting(identifier, value)))
    assert client.connection_error() == PROTOCOL_ERROR


def test_settings_unknown_identifier_is_ignored_and_acknowledged(client):
    client.send(raw_frame(SETTINGS, 0, 0, setting(SETTINGS_UNKNOWN, 1)))
    client.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
    assert_alive(client, 1)


# -- 6.7 PING -----------------------------------------------------------------------------


def test_ping_is_answered_with_the_same_payload(client):
    assert client.ping_answered(b"\x00\x01\x02\x03\x04\x05\x06\x07")


def test_ping_ack_is_not_answered(client):
    client.send(PingFrame(0, opaque_data=b"answered", flags=["ACK"]))
    client.send(PingFrame(0, opaque_data=b"the next"))
    ack = client.wait_for(lambda f: isinstance(f, PingFrame))
    assert ack.opaque_data == b"the next" and "ACK" in ack.flags


def test_ping_on_a_stream(client):
    client.send(raw_frame(PING, 0, 1, b"12345678"))
    assert client.connection_error() == PROTOCOL_ERROR


def test_ping_of_the_wrong_length(client):
    client.send(raw_frame(PING, 0, 0, b"123456"))
    assert client.connection_error() == FRAME_SIZE_ERROR


# -- 5.3 PRIORITY (deprecated, RFC 9113 5.3.2: parsed and ignored) ------------------------


def test_priority_is_ignored(client):
    client.send(PriorityFrame(3, depends_on=0, stream_weight=16), PriorityFrame(5, depends_on=3))
    client.request(1)
    assert client.response(1) == (200, b"Hello, world!")
    client.request(3)  # the idle stream PRIORITY named can still be opened
    assert client.response(3) == (200, b"Hello, world!")


def test_priority_of_the_wrong_length(client):
    client.send(raw_frame(PRIORITY, 0, 1, b"\x00\x00\x00"))
    assert_error(client, 1, FRAME_SIZE_ERROR)


# -- 6.10 CONTINUATION --------------------------------------------------------------------


def test_headers_continued(client):
    block = client.block(request_fields())
    client.send(
        raw_frame(HEADERS, END_STREAM, 1, block[:3]),
        raw_frame(CONTINUATION, 0, 1, block[3:5]),
        raw_frame(CONTINUATION, END_HEADERS, 1, block[5:]),
    )
    assert client.response(1) == (200, b"Hello, world!")


def test_another_frame_inside_a_header_block(client):
    block = client.block(request_fields())
    client.send(raw_frame(HEADERS, END_STREAM, 1, block[:3]), PingFrame(0, opaque_data=b"12345678"))
    assert client.connection_error() == PROTOCOL_ERROR


def test_continuation_of_another_stream(client):
    block = client.block(request_fields())
    client.send(
        raw_frame(HEADERS, END_STREAM, 1, block[:3]),
        raw_frame(CONTINUATION, END_HEADERS, 3, block[3:]),
    )
    assert client.connection_error() == PROTOCOL_ERROR


def test_continuation_after_end_headers(client):
    client.request(1)
    client.send(ContinuationFrame(1, data=b"", flags=["END_HEADERS"]))
    assert client.connection_error() == PROTOCOL_ERROR


# -- frames that need a stream, and frames that must have none ---------------------------


# Frames of a stream, each with a payload of the right length.
STREAM_FRAMES = {
    DATA: b"body",
    HEADERS: b"\x82",
    RST_STREAM: struct.pack(">I", 8),
    PRIORITY: struct.pack(">IB", 0, 16),
    CONTINUATION: b"\x82",
}


@pytest.mark.parametrize(
    ("frame_type", "payload"),
    STREAM_FRAMES.items(),
    ids=["data", "headers", "rst_stream", "priority", "continuation"],
)
def test_stream_frame_on_stream_0(client, frame_type, payload):
    client.send(raw_frame(frame_type, END_HEADERS, 0, payload))
    assert client.connection_error() == PROTOCOL_ERROR


def test_rst_stream_of_the_wrong_length(client):
    client.request(1, WAITING_PATH)
    client.send(raw_frame(RST_STREAM, 0, 1, b"\x00\x00\x08"))
    assert client.connection_error() == FRAME_SIZE_ERROR


def test_goaway_from_the_client_ends_the_connection(client):
    client.request(1)
    assert client.response(1)[0] == 200
    client.send(GoAwayFrame(0, last_stream_id=0))
    with pytest.raises(Closed):
        while True:
            assert not isinstance(client.next_frame(), HeadersFrame)
