"""The HTTP/2 session core (fastserve._http2.ServerSession: vendored libnghttp2) driven
in memory, with the `h2` library as the client: real frames both ways, no sockets."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import PingFrame

_http2 = pytest.importorskip("fastserve._http2")

# frame types (RFC 9113 6)
HEADERS_FRAME, SETTINGS_FRAME, PING_FRAME, GOAWAY_FRAME = 0x1, 0x4, 0x6, 0x7

GET = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]


def post(path: str = "/upload") -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", path),
    ]


class Pair:
    """A ServerSession and an h2 client connection, their bytes carried by hand."""

    def __init__(self, **limits: int) -> None:
        self.server = _http2.ServerSession(**limits)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()

    def to_server(self) -> list[tuple]:
        """The client's queued bytes into the server; the server's events."""
        return self.server.receive(self.client.data_to_send())

    def to_client(self) -> list[h2.events.Event]:
        """The server's queued bytes into the client; the client's events."""
        return self.client.receive_data(self.server.data_to_send())

    def handshake(self) -> None:
        assert self.to_server() == []
        self.to_client()
        assert self.to_server() == []  # the client's SETTINGS ACK


def of_type(events: list, kind: type) -> list:
    return [event for event in events if isinstance(event, kind)]


def test_version_is_the_vendored_release():
    # The header's version string is the library's (nghttp2_version() would be a
    # system copy's if one were linked instead).
    assert _http2.NGHTTP2_VERSION == "1.70.0"


def test_preface_and_settings_exchange():
    pair = Pair()
    assert pair.to_server() == []
    events = pair.to_client()
    changed = of_type(events, h2.events.RemoteSettingsChanged)[0].changed_settings
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 100
    assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == 1 << 20
    assert changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value == 65536
    # nghttp2 acknowledged the client's SETTINGS and opened the connection window
    assert of_type(events, h2.events.SettingsAcknowledged)
    window = of_type(events, h2.events.WindowUpdated)[0]
    assert (window.stream_id, window.delta) == (0, _http2.CONNECTION_WINDOW - 65535)
    assert pair.client.outbound_flow_control_window == _http2.CONNECTION_WINDOW
    pair.to_server()
    assert not pair.server.want_close


def test_get_answered():
    pair = Pair()
    pair.handshake()
    headers = [
        *GET[:3],
        (":path", "/items?id=7"),
        ("Accept", "*/*"),
        ("x-two", "a"),
        ("x-two", "b"),
    ]
    pair.client.send_headers(1, headers, end_stream=True)
    (request,) = pair.to_server()
    # names come lowercased by the client (RFC 9113 requires it); order and repeats kept
    assert request == (
        _http2.REQUEST, 1, b"GET", b"https", b"example.com", b"/items?id=7",
        [(b"accept", b"*/*"), (b"x-two", b"a"), (b"x-two", b"b")], True,
    )  # fmt: skip
    assert pair.server.submit_response(1, 200, [(b"Content-Type", b"text/plain")], b"hello")
    events = pair.to_client()
    response = of_type(events, h2.events.ResponseReceived)[0]
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert b"".join(e.data for e in of_type(events, h2.events.DataReceived)) == b"hello"
    assert of_type(events, h2.events.StreamEnded)[0].stream_id == 1
    # the stream closed on the server's END_STREAM: a CLOSED event, taken after sending
    assert pair.server.take_events() == [(_http2.CLOSED, 1, 0)]


def test_response_body_sent_later_and_ended():
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    assert pair.server.submit_response(1, 200, [], b"", end_stream=False)
    events = pair.to_client()
    assert of_type(events, h2.events.ResponseReceived)
    assert not of_type(events, h2.events.DataReceived)  # the provider waits for bytes
    assert pair.server.send_body(1, b"part one, ")
    assert pair.server.pending_body(1) == len(b"part one, ")
    events = pair.to_client()
    assert [e.data for e in of_type(events, h2.events.DataReceived)] == [b"part one, "]
    assert pair.server.pending_body(1) == 0
    assert not of_type(events, h2.events.StreamEnded)
    assert pair.server.send_body(1, b"part two", end_stream=True)
    events = pair.to_client()
    assert [e.data for e in of_type(events, h2.events.DataReceived)] == [b"part two"]
    assert of_type(events, h2.events.StreamEnded)
    assert pair.server.send_body(1, b"late") is False  # the stream is gone


def test_body_needs_a_response_going_on():
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    with pytest.raises(_http2.HTTP2Error, match="no response going on"):
        pair.server.send_body(1, b"before the head")
    pair.server.submit_response(1, 200, [], b"done")
    with pytest.raises(_http2.HTTP2Error, match="no response going on"):
        pair.server.send_body(1, b"after the end")


def test_post_body_across_data_frames_with_flow_control():
    pair = Pair(stream_window=65536, connection_window=1 << 20)
    pair.handshake()
    pair.client.send_headers(1, post(), end_stream=False)
    chunk = b"x" * 16384  # the default SETTINGS_MAX_FRAME_SIZE: one DATA frame each
    for _ in range(3):
        pair.client.send_data(1, chunk)
    events = pair.to_server()
    assert [e[:2] for e in events] == [(_http2.REQUEST, 1), (_http2.DATA, 1)]
    assert events[0][7] is False  # the body follows
    # More DATA before the body is taken: no second DATA event.
    pair.client.send_data(1, chunk)
    assert pair.to_server() == []
    # The window stays closed until the body is taken: 4 frames of 16 KiB fill 64 KiB.
    assert pair.client.local_flow_control_window(1) == 0
    with pytest.raises(h2.exceptions.FlowControlError):
        pair.client.send_data(1, b"y")
    assert pair.server.take_body(1) == chunk * 4
    assert pair.server.take_body(1) == b""
    updates = of_type(pair.to_client(), h2.events.WindowUpdated)
    assert sum(u.delta for u in updates if u.stream_id == 1) == 4 * len(chunk)
    assert pair.client.local_flow_control_window(1) == 65536
    pair.client.send_data(1, b"tail", end_stream=True)
    assert pair.to_server() == [(_http2.DATA, 1), (_http2.END, 1)]
    assert pair.server.take_body(1) == b"tail"


def test_body_taken_without_reopening_its_window_until_consumed():
    # (nghttp2 sends a WINDOW_UPDATE once half a window is consumed)
    pair = Pair(stream_window=2000, connection_window=65535)
    pair.handshake()
    pair.client.send_headers(1, post(), end_stream=False)
    pair.client.send_data(1, b"x" * 1000)
    assert pair.to_server()[1:] == [(_http2.DATA, 1)]
    assert pair.server.take_body(1, reopen=False) == b"x" * 1000
    assert of_type(pair.to_client(), h2.events.WindowUpdated) == []
    pair.client.send_data(1, b"y")  # reported again: the first bytes were taken
    assert pair.to_server() == [(_http2.DATA, 1)]
    pair.server.consume(1, 1000)
    updates = of_type(pair.to_client(), h2.events.WindowUpdated)
    assert [(u.stream_id, u.delta) for u in updates] == [(1, 1000)]


def test_graceful_shutdown_goaway_ping_then_last_stream():
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.shutdown_notice()
    data = pair.server.data_to_send()
    pair.server.ping()
    data += pair.server.data_to_send()
    assert [data[3], data[17 + 3]] == [GOAWAY_FRAME, PING_FRAME]  # GOAWAY first
    (goaway,) = of_type(pair.client.receive_data(data[:17]), h2.events.ConnectionTerminated)
    assert goaway.last_stream_id == 2**31 - 1
    # h2 takes a GOAWAY as the end: the ack is written past it
    ack = PingFrame(0, flags=["ACK"])
    ack.opaque_data = data[-8:]
    assert pair.server.receive(ack.serialize()) == [(_http2.PING_ACK, 0)]
    pair.server.goaway()
    last = pair.server.data_to_send()
    assert last[3] == GOAWAY_FRAME and int.from_bytes(last[9:13], "big") == 1
    # an unsolicited ack is not reported
    assert pair.server.receive(PingFrame(0, b"other\x00\x00\x00", flags=["ACK"]).serialize()) == []


def test_concurrent_streams_beyond_the_limit_are_refused():
    pair = Pair()
    # The client opens 101 streams before it reads the server's SETTINGS (it does not
    # know the limit yet); nghttp2 refuses the 101st.
    stream_ids = [1 + 2 * n for n in range(101)]
    for stream_id in stream_ids:
        pair.client.send_headers(stream_id, GET, end_stream=True)
    events = pair.to_server()
    assert [e[1] for e in events if e[0] == _http2.REQUEST] == stream_ids[:100]
    client_events = pair.to_client()
    (reset,) = of_type(client_events, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (stream_ids[100], ErrorCodes.REFUSED_STREAM)
    # an answered stream frees a slot
    pair.server.submit_response(1, 204, [])
    pair.to_client()
    pair.client.send_headers(203, GET, end_stream=True)
    # stream 1's CLOSED event came about in data_to_send(): the next take has it first
    assert [e[:2] for e in pair.to_server()] == [(_http2.CLOSED, 1), (_http2.REQUEST, 203)]


def test_client_reset_is_reported():
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, post(), end_stream=False)
    pair.client.send_data(1, b"some body")
    pair.to_server()
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    assert pair.to_server() == [(_http2.CLOSED, 1, ErrorCodes.CANCEL)]
    # the stream is gone: no response, no body
    assert pair.server.submit_response(1, 200, []) is False
    assert pair.server.take_body(1) == b""


def test_untaken_body_of_a_reset_stream_gives_its_connection_window_back():
    pair = Pair(connection_window=65535)  # the default: the client can fill it
    pair.handshake()
    pair.client.send_headers(1, post(), end_stream=False)
    for _ in range(3):
        pair.client.send_data(1, b"x" * 16384)
    pair.client.send_data(1, b"x" * (65535 - 3 * 16384))
    pair.to_server()
    assert pair.client.outbound_flow_control_window == 0
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    pair.to_server()
    updates = of_type(pair.to_client(), h2.events.WindowUpdated)
    assert [(u.stream_id, u.delta) for u in updates] == [(0, 65535)]
    pair.client.send_headers(3, post(), end_stream=False)
    pair.client.send_data(3, b"next", end_stream=True)
    assert [e[:2] for e in pair.to_server()] == [
        (_http2.REQUEST, 3), (_http2.DATA, 3), (_http2.END, 3),
    ]  # fmt: skip


def refused_with(raw_headers: list[tuple[bytes, bytes]]) -> tuple[list, list]:
    """Send a request head with h2's own checks off; the server's and client's events."""
    pair = Pair()
    pair.handshake()
    pair.client.config.validate_outbound_headers = False
    pair.client.config.normalize_outbound_headers = False
    pair.client.send_headers(1, raw_headers, end_stream=True)
    server_events = pair.to_server()
    return server_events, pair.to_client()


@pytest.mark.parametrize(
    "extra",
    [
        [(b"X-Upper", b"1")],  # RFC 9113 8.2.1: uppercase name
        [(b"connection", b"keep-alive")],  # 8.2.2: connection-specific field
        [(b"transfer-encoding", b"chunked")],
        [(b"te", b"gzip")],  # te other than "trailers"
        # fields nghttp2 would drop by default; RFC 9113 8.2.1: malformed
        [(b"x-bad", b"a\r\nb")],  # CR / LF in a value
        [(b"x-bad", b"a\x00b")],  # NUL in a value
        [(b"x-bad", b" padded")],  # leading whitespace
        [(b"x bad", b"1")],  # not a token
        [(b"host", b"bad host")],
    ],
)
def test_malformed_header_refused(extra):
    raw = [(name.encode(), value.encode()) for name, value in GET]
    server_events, client_events = refused_with(raw + extra)
    assert server_events == []  # never reported
    (reset,) = of_type(client_events, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (1, ErrorCodes.PROTOCOL_ERROR)


def test_missing_pseudo_header_refused():
    raw = [(name.encode(), value.encode()) for name, value in GET if name != ":path"]
    server_events, client_events = refused_with(raw)
    assert server_events == []
    (reset,) = of_type(client_events, h2.events.StreamReset)
    assert reset.error_code == ErrorCodes.PROTOCOL_ERROR


def test_header_list_over_the_limit_answered_431():
    pair = Pair(max_header_list_size=4096)
    pair.handshake()
    pair.client.send_headers(1, [*GET, ("x-big", "v" * 5000)], end_stream=False)
    pair.client.send_data(1, b"dropped", end_stream=True)
    assert pair.to_server() == []  # never reported; its body dropped
    events = pair.to_client()
    response = of_type(events, h2.events.ResponseReceived)[0]
    assert response.headers == [(b":status", b"431")]
    assert of_type(events, h2.events.StreamEnded)
    pair.client.send_headers(3, [*GET, ("x-fits", "v" * 3000)], end_stream=True)
    assert [e[:2] for e in pair.to_server()] == [(_http2.REQUEST, 3)]


def test_client_goaway_reported_and_server_goaway_sent():
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.client.close_connection(ErrorCodes.NO_ERROR, last_stream_id=0)
    assert pair.to_server() == [(_http2.GOAWAY, 0, ErrorCodes.NO_ERROR)]
    pair.server.goaway()
    (terminated,) = of_type(pair.to_client(), h2.events.ConnectionTerminated)
    assert (terminated.error_code, terminated.last_stream_id) == (ErrorCodes.NO_ERROR, 1)
    # stream 1 is below the GOAWAY's last stream: it goes on until answered
    assert not pair.server.want_close
    assert pair.server.submit_response(1, 204, [])
    assert frame_types(pair.server.data_to_send()) == [HEADERS_FRAME]  # h2 has closed
    assert pair.server.want_close


def test_connection_error_answered_with_goaway():
    pair = Pair()
    pair.handshake()
    # DATA on stream 0 is a connection error (RFC 9113 6.1): nghttp2 sends GOAWAY.
    frame = b"\x00\x00\x01" + b"\x00" + b"\x00" + b"\x00\x00\x00\x00" + b"x"
    assert pair.server.receive(frame) == []
    (terminated,) = of_type(pair.to_client(), h2.events.ConnectionTerminated)
    assert terminated.error_code == ErrorCodes.PROTOCOL_ERROR
    assert pair.server.want_close


def test_bad_preface_answered_with_goaway():
    server = _http2.ServerSession()
    assert server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    # nghttp2 drops the queued WINDOW_UPDATE once the session is terminated
    assert frame_types(server.data_to_send()) == [SETTINGS_FRAME, GOAWAY_FRAME]
    assert server.want_close


def frame_types(data: bytes) -> list[int]:
    """The type of each frame in a run of whole frames (RFC 9113 4.1)."""
    types, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        types.append(data[offset + 3])
        offset += 9 + length
    return types


def test_rapid_reset_ends_the_connection():
    # CVE-2023-44487: streams opened and reset at once, past nghttp2's burst of 1000.
    pair = Pair()
    pair.handshake()
    stream_id = 1
    for _ in range(1100):
        pair.client.send_headers(stream_id, GET, end_stream=True)
        pair.client.reset_stream(stream_id, ErrorCodes.CANCEL)
        stream_id += 2
    pair.to_server()
    (terminated,) = of_type(pair.to_client(), h2.events.ConnectionTerminated)
    assert terminated.error_code == ErrorCodes.INTERNAL_ERROR
