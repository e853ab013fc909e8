"""A raw HTTP/2 client for tests/test_http2_frames.py and tests/test_http2_attacks.py:
frames built with `hyperframe` (or byte by byte, `raw_frame`, for the ones hyperframe
refuses to build), header blocks encoded with `hpack`, written to the socket exactly
as a test says; the server's frames read back one at a time. Every wait has a
deadline, and the connection's close is an answer too (`Closed`): no test sleeps.
"""

from __future__ import annotations

import socket
import struct
from typing import Callable, Optional

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9
# The longest wait for one frame: long on a loaded machine, short enough to fail a test.
WAIT_SECONDS = 15
RECV_SIZE = 65536
# RFC 9113 7: error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
# RFC 9113 6: frame types, for frames built byte by byte.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
CONTINUATION = 9
END_STREAM = 0x1
END_HEADERS = 0x4
DEFAULT_FRAME_SIZE = 16384  # SETTINGS_MAX_FRAME_SIZE's initial value
WINDOW_MAX = 2**31 - 1
INITIAL_WINDOW = 65535  # a window's size before SETTINGS change it (RFC 9113 6.9.2)


class Closed(Exception):
    """The server closed the connection (or reset it) before the frame waited for."""


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A frame as bytes, whatever its fields say (RFC 9113 4.1)."""
    return (
        struct.pack(">I", len(payload))[1:]
        + struct.pack(">BBI", frame_type, flags, stream_id)
        + payload
    )


def request_fields(path: str = "/_/hello", method: str = "GET") -> list:
    return [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", b"h2.test"),
        (b":path", path.encode()),
    ]


class RawH2:
    """One connection: `send` frames, `next_frame` / `wait_for` the server's."""

    def __init__(self, port: int, handshake: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
        self.buffer = bytearray()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.seen: list = []  # every frame read, for failure messages
        self.server_settings: dict = {}
        if handshake:
            self.handshake()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def handshake(self) -> None:
        """The preface and an empty SETTINGS; the server's SETTINGS acknowledged, and
        ours by the server (its values apply from here on)."""
        self.send_raw(PREFACE)
        self.send(SettingsFrame(0))
        settings = self.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        self.server_settings = dict(settings.settings)
        self.send(SettingsFrame(0, flags=["ACK"]))
        self.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)

    # -- sending

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *frames) -> None:
        """Frames (hyperframe's, or bytes from `raw_frame`) in one write."""
        self.send_raw(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def block(self, fields) -> bytes:
        """A header block by this connection's encoder (its dynamic table kept in step)."""
        return self.encoder.encode(fields)

    def headers(self, stream_id: int, fields, end_stream: bool = True, end_headers: bool = True):
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(stream_id, data=self.block(fields), flags=flags)

    def request(self, stream_id: int, path: str = "/_/hello", end_stream: bool = True) -> None:
        self.send(self.headers(stream_id, request_fields(path), end_stream=end_stream))

    # -- reading

    def next_frame(self, timeout: float = WAIT_SECONDS) -> Frame:
        """The server's next frame; `Closed` when the connection ends first."""
        while True:
            frame = self._parse_buffered()
            if frame is not None:
                self.seen.append(frame)
                return frame
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(RECV_SIZE)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                raise AssertionError(f"no frame within {timeout}s; frames: {self.seen}") from None
            if not data:
                raise Closed(f"closed; frames so far: {self.seen}")
            self.buffer += data

    def _parse_buffered(self) -> Optional[Frame]:
        if len(self.buffer) < FRAME_HEADER_SIZE:
            return None
        frame, length = Frame.parse_frame_header(memoryview(self.buffer[:FRAME_HEADER_SIZE]))
        end = FRAME_HEADER_SIZE + length
        if len(self.buffer) < end:
            return None
        frame.parse_body(memoryview(self.buffer[FRAME_HEADER_SIZE:end]))
        del self.buffer[:end]
        if isinstance(frame, HeadersFrame):  # (the server's blocks fit one frame)
            frame.fields = self.decoder.decode(frame.data, raw=True)
        return frame

    def wait_for(self, wanted: Callable[[Frame], bool], timeout: float = WAIT_SECONDS) -> Frame:
        """The first frame (from now on) for which `wanted` holds."""
        while True:
            frame = self.next_frame(timeout)
            if wanted(frame):
                return frame

    def wait_goaway(self) -> GoAwayFrame:
        return self.wait_for(lambda f: isinstance(f, GoAwayFrame))

    def wait_closed(self) -> None:
        """Read (and keep in `seen`) until the server closes the connection."""
        try:
            while True:
                self.next_frame()
        except Closed:
            return

    def wait_reset(self, stream_id: int) -> RstStreamFrame:
        return self.wait_for(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == stream_id)

    def error_of(self, stream_id: int) -> tuple[str, int]:
        """How the server ended `stream_id` in error: ("stream", code) for its
        RST_STREAM, ("connection", code) for a GOAWAY (which must close it)."""
        frame = self.wait_for(
            lambda f: (
                isinstance(f, GoAwayFrame)
                or (isinstance(f, RstStreamFrame) and f.stream_id == stream_id)
            )
        )
        if isinstance(frame, GoAwayFrame):
            self.wait_closed()
            return "connection", frame.error_code
        return "stream", frame.error_code

    def connection_error(self) -> int:
        """The GOAWAY's error code, once the server has closed the connection."""
        code = self.wait_goaway().error_code
        self.wait_closed()
        return code

    def response(self, stream_id: int) -> tuple[int, bytes]:
        """The status and body of a stream's response (its window opened as it comes)."""
        status, body = 0, b""
        while True:
            frame = self.wait_for(lambda f: f.stream_id == stream_id)
            if isinstance(frame, RstStreamFrame):
                raise AssertionError(f"stream {stream_id} reset: {frame}")
            if isinstance(frame, HeadersFrame) and not status:
                status = int(dict(frame.fields)[b":status"])
            if isinstance(frame, DataFrame):
                body += frame.data
            if "END_STREAM" in frame.flags:
                return status, body

    def ping_answered(self, payload: bytes = b"pingpong") -> bool:
        """A PING is answered (the connection is alive and read to here)."""
        self.send(PingFrame(0, opaque_data=payload))
        ack = self.wait_for(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        return ack.opaque_data == payload


def served(port: int) -> bool:
    """A normal client on a new connection gets its `/_/hello`."""
    with RawH2(port) as client:
        client.request(1)
        return client.response(1) == (200, b"Hello, world!")
