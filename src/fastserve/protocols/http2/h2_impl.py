"""Pure-Python HTTP/2 (RFC 9113) over the `h2` library: H2Protocol, the asyncio
Protocol of one connection. `h2` (sans-I/O, server side, its header validation on)
parses and writes the frames and keeps the streams' states and windows; each
request stream is a `stream.StreamCycle` (the ASGI side, shared with the C mode),
which calls back the methods under "what a stream asks"; what is not frame work is
connection.py's HTTP2Connection, shared with the C mode's Nghttp2Protocol.

What the connection advertises and holds to (README "HTTP/2"):
- MAX_CONCURRENT_STREAMS --h2-max-concurrent-streams (100); a stream over it is refused (RST_STREAM
  REFUSED_STREAM, which a client retries) and the connection goes on. `h2` would end
  the whole connection there, so its own count is set out of reach (_ServerSettings)
  and this protocol counts.
- MAX_HEADER_LIST_SIZE: --limit-request-head (HPACK's decoder enforces it: a
  header list over it ends the connection, GOAWAY ENHANCE_YOUR_CALM, as the decoder's
  table cannot be kept in step otherwise).
- MAX_FRAME_SIZE: --h2-max-inbound-frame-size (16 KiB).
- Request bodies: a window of --h2-initial-window-size per stream (1 MiB), and of
  BODY_WINDOW (or that, if larger) for the connection; a stream's window reopens as
  its app takes the bytes (`receive`), so a connection holds at most the connection
  window of unread body whatever the number of streams.
- Responses: DATA frames no bigger than the peer's windows and frame size, and none
  while the transport's buffer is above its high-water mark (per stream and per
  connection backpressure).
- Attacks (limits.py, README's table): stream resets (the client's and those its
  frames provoke), PING / SETTINGS and empty frames are counted against the bounds of
  the connection's FloodLimits (connection.py), over which the connection ends
  (GOAWAY ENHANCE_YOUR_CALM, nothing more answered); header blocks are bounded in
  bytes and CONTINUATION frames (h2_checks.CheckedFrameBuffer); a connection whose
  streams all wait on the client's windows or reads closes after --timeout-keep-alive
  (connection.py). h2_checks also puts right the codes RFC 9113 asks for where `h2`
  differs (the preface, SETTINGS ACK, HPACK errors).
- Graceful shutdown (RFC 9113 6.8): a GOAWAY for any stream id and a PING, then,
  at the PING's ack, the GOAWAY naming the last stream taken; the connection closes
  once its streams are done (or at --timeout-graceful-shutdown, by the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Optional

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from fastserve.protocols.asgi import DISCONNECTED, ClientDisconnected
from fastserve.protocols.http.errors import error_body
from fastserve.protocols.http2.connection import HTTP2Connection
from fastserve.protocols.http2.h2_checks import CheckedDecoder, CheckedFrameBuffer
from fastserve.protocols.http2.limits import ENHANCE_YOUR_CALM, SERVER_PING
from fastserve.protocols.http2.stream import (
    NO_ERROR,
    REFUSED_STREAM,
    StreamCycle,
    StreamRefused,
    read_head,
)

# The request body window of the connection, at least (a stream's is
# --h2-initial-window-size; RFC 9113 6.9.2's initial window, 65,535 bytes, is too small
# for a fast upload over a long path).
BODY_WINDOW = 1 << 20
INITIAL_WINDOW = 65535
# The largest stream id (31 bits): the first GOAWAY of a graceful shutdown names it.
STREAM_ID_MAX = 2**31 - 1


class _ServerSettings(h2.settings.Settings):
    """The server's SETTINGS as advertised, with `h2`'s own check of concurrent
    streams out of reach (it ends the connection, TooManyStreamsError): H2Protocol
    refuses the one stream over --h2-max-concurrent-streams instead (RFC 9113 5.1.2)."""

    @property
    def max_concurrent_streams(self) -> int:
        return STREAM_ID_MAX


def server_connection(settings) -> h2.connection.H2Connection:
    """A server's H2Connection, its SETTINGS and connection window sent (queued)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    codes = h2.settings.SettingCodes
    conn.local_settings = _ServerSettings(
        client=False,
        initial_values={
            codes.MAX_CONCURRENT_STREAMS: settings.h2_max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: settings.limit_request_head,
            codes.INITIAL_WINDOW_SIZE: settings.h2_initial_window_size,
            codes.MAX_FRAME_SIZE: settings.h2_max_inbound_frame_size,
        },
    )
    conn.incoming_buffer = CheckedFrameBuffer(settings.limit_request_head)
    conn.decoder = CheckedDecoder()
    # (h2 hands the setting to its decoder only once the peer acknowledges it)
    conn.decoder.max_header_list_size = settings.limit_request_head
    # (initial values are no change at the ack, so h2 would keep the default of 16 KiB)
    conn.max_inbound_frame_size = settings.h2_max_inbound_frame_size
    conn.initiate_connection()
    conn.increment_flow_control_window(
        max(BODY_WINDOW, settings.h2_initial_window_size) - INITIAL_WINDOW
    )
    return conn


class H2Protocol(HTTP2Connection):
    """asyncio Protocol for HTTP/2 over `h2` (one per connection)."""

    __slots__ = ("conn", "last_stream_id")
    library = "h2"

    def __init__(self, settings, server_state, app_state: dict, _loop=None) -> None:
        super().__init__(settings, server_state, app_state, _loop)
        self.conn = None
        self.last_stream_id = STREAM_ID_MAX  # streams above it are refused (GOAWAY sent)

    def _open_session(self) -> None:
        self.conn = server_connection(self.settings)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.heard = self.loop.time()
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # (the GOAWAY h2 wrote for it)
            self._close()
            return
        for event in events:
            handler = _EVENT_HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
                if self.closed:  # (a flood: what is left of the batch is not taken)
                    return
        self._flush()

    def _shutdown_notice(self) -> None:
        self._flush()
        self.transport.write(_goaway(STREAM_ID_MAX))
        self.conn.ping(SERVER_PING)
        self._flush()

    def _ping(self) -> None:
        self.conn.ping(SERVER_PING)
        self._flush()

    def _shutdown_goaway(self) -> None:
        self.last_stream_id = self.conn.highest_inbound_stream_id
        self._flush()
        self.transport.write(_goaway(self.last_stream_id))

    # -- frames in --------------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if (
            stream_id > self.last_stream_id
            or len(self.streams) >= self.settings.h2_max_concurrent_streams
        ):
            self._reset(stream_id, REFUSED_STREAM)  # (the client may retry it)
            self._count(self.limits.stream_resets)
            return
        started = time.monotonic()
        try:
            head = read_head(event.headers, self.settings)
            self._check_concurrency()
        except StreamRefused as refused:
            self._refuse(stream_id, refused.status, event.stream_ended is None)
            return
        # (its StreamEnded event follows when no body does)
        self._open_stream(stream_id, head, started, False)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        cycle = self.streams.get(event.stream_id)
        length = event.flow_controlled_length
        if not length and event.stream_ended is None:
            self._count(self.limits.empty_frames)
        if cycle is None:  # answered, reset or refused: dropped, its window reopened
            self.conn.acknowledge_received_data(length, event.stream_id)
            return
        data = event.data
        if length > len(data):  # padding: never the app's
            self.conn.acknowledge_received_data(length - len(data), event.stream_id)
        if not self._body_arrived(cycle, data):
            self.conn.acknowledge_received_data(len(data), event.stream_id)

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        self._body_complete(event.stream_id)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        """The client reset a stream, or made `h2` reset it (a stream error): counted
        either way (limits.py)."""
        self._count(self.limits.stream_resets)
        self._stream_reset(event.stream_id)

    def _on_window(self, event) -> None:
        """WINDOW_UPDATE, or new SETTINGS (the initial window may grow): senders go on."""
        stream_id = getattr(event, "stream_id", 0)
        if stream_id:
            cycle = self.streams.get(stream_id)
            if cycle is not None:
                cycle.wake_sender()
            return
        for cycle in self.streams.values():
            cycle.wake_sender()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._on_control_frame(event)
        if not self.closed:
            self._on_window(event)  # (the initial window may have grown)

    def _on_control_frame(self, event) -> None:
        """A PING or SETTINGS frame (h2 answers it)."""
        self._count(self.limits.control_frames)

    def _on_empty_frame(self, event) -> None:
        """PRIORITY (deprecated: ignored) or an unknown frame type."""
        self._count(self.limits.empty_frames)

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        if event.ping_data == SERVER_PING:
            self._ping_acked()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """The client is done (h2 sends nothing after its GOAWAY): close."""
        self._close()

    # -- what a stream asks (stream.py) -------------------------------------------------

    def send_head(self, cycle: StreamCycle, status: int, fields: list, end_stream: bool) -> None:
        with _gone_as_disconnect(cycle):
            if self.closed:
                raise h2.exceptions.ProtocolError("the connection is closed")
            self.conn.send_headers(
                cycle.stream_id, [(b":status", b"%d" % status), *fields], end_stream=end_stream
            )
        self._flush()

    def send_data(self, cycle: StreamCycle, data, end_stream: bool) -> Optional[Awaitable]:
        """DATA frames of `data`: one now when the windows, the peer's frame size and
        the transport let it go whole, else what to wait on (_send_data_framed)."""
        if type(data) is not bytes:
            data = bytes(data)
        conn = self.conn
        stream_id = cycle.stream_id
        if cycle.disconnected or self.closed or self.flow.write_paused:
            return self._send_data_framed(cycle, data, end_stream)
        if len(data) > min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size):
            return self._send_data_framed(cycle, data, end_stream)
        with _gone_as_disconnect(cycle):
            conn.send_data(stream_id, data, end_stream=end_stream)
        self._flush()
        return None

    async def _send_data_framed(self, cycle: StreamCycle, data: bytes, end_stream: bool) -> None:
        """DATA frames of `data`, each as big as the stream's window, the connection's
        and the peer's frame size allow; waiting while they are shut or the transport
        is full."""
        conn = self.conn
        stream_id = cycle.stream_id
        sent = 0
        while True:
            if cycle.disconnected or self.closed:
                raise ClientDisconnected(DISCONNECTED)
            if self.flow.write_paused:
                # (shielded: the future is the connection's, shared by its streams)
                await self._wait_for_client(asyncio.shield(self.flow.drain()))
                continue
            left = len(data) - sent
            size = min(
                left, conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
            )
            if size <= 0 and left:
                cycle.window_waiter = self.loop.create_future()
                await self._wait_for_client(cycle.window_waiter)
                continue
            piece = data if size == len(data) else data[sent : sent + size]
            sent += size
            with _gone_as_disconnect(cycle):
                conn.send_data(stream_id, piece, end_stream=end_stream and sent == len(data))
            self._flush()
            if sent == len(data):
                return

    def send_trailers(self, cycle: StreamCycle, fields: list) -> None:
        """The trailers' HEADERS frame, ending the stream (`send_data` has handed
        every DATA frame to `h2` before it returned)."""
        self._send_fields(cycle, fields, True)

    def send_informational(self, cycle: StreamCycle, status: int, fields: list) -> None:
        self._send_fields(cycle, [(b":status", b"%d" % status), *fields], False)

    def _send_fields(self, cycle: StreamCycle, fields: list, end_stream: bool) -> None:
        with _gone_as_disconnect(cycle):
            if self.closed:
                raise h2.exceptions.ProtocolError("the connection is closed")
            self.conn.send_headers(cycle.stream_id, fields, end_stream=end_stream)
        self._flush()

    def body_consumed(self, cycle: StreamCycle, n: int) -> None:
        if not self.closed:
            self.conn.acknowledge_received_data(n, cycle.stream_id)
            self._flush()

    # -- helpers ------------------------------------------------------------------------

    def _answer(self, stream_id: int, status: int) -> int:
        """The server's own answer on a stream (errors.error_body), its body's size:
        none when the stream's window is shut."""
        body = error_body(status)
        if len(body) > self.conn.local_flow_control_window(stream_id):
            body = b""
        headers = [(b":status", b"%d" % status), *self._answer_fields(body)]
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self._flush()
        return len(body)

    def _release(self, cycle: StreamCycle) -> None:
        """A forgotten stream's unread body: its bytes count no more against the
        connection's window."""
        if cycle.body_buffered and not self.closed:
            self.conn.acknowledge_received_data(cycle.body_buffered, cycle.stream_id)
        cycle.body_chunks = None
        cycle.body_buffered = 0

    def _reset(self, stream_id: int, error_code: int) -> None:
        if self.closed:
            return
        try:
            self.conn.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            return  # (both sides ended it, or it was reset already)
        self._flush()

    def _final_goaway(self) -> None:
        self.conn.close_connection(NO_ERROR)

    def _flood_goaway(self) -> None:
        """GOAWAY ENHANCE_YOUR_CALM, without what `h2` has written (the answers to the
        flood) going out."""
        self.conn.data_to_send()
        self.transport.write(_goaway(self.conn.highest_inbound_stream_id, ENHANCE_YOUR_CALM))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.transport.write(data)


def _goaway(last_stream_id: int, error_code: int = NO_ERROR) -> bytes:
    """A GOAWAY written past `h2`, whose own GOAWAY ends its connection state at once:
    during a graceful shutdown the streams taken must still be served (NO_ERROR); at
    a flood, what `h2` queued must not go out."""
    return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code).serialize()


# What H2Protocol does with each `h2` event (the others need nothing: h2 answers
# PINGs and acknowledges SETTINGS itself).
_EVENT_HANDLERS = {
    h2.events.RequestReceived: H2Protocol._on_request,
    h2.events.DataReceived: H2Protocol._on_data,
    h2.events.StreamEnded: H2Protocol._on_stream_ended,
    h2.events.StreamReset: H2Protocol._on_reset,
    h2.events.WindowUpdated: H2Protocol._on_window,
    h2.events.PingAckReceived: H2Protocol._on_ping_ack,
    h2.events.ConnectionTerminated: H2Protocol._on_goaway,
    h2.events.PingReceived: H2Protocol._on_control_frame,
    h2.events.RemoteSettingsChanged: H2Protocol._on_settings,
    h2.events.PriorityUpdated: H2Protocol._on_empty_frame,
    h2.events.UnknownFrameReceived: H2Protocol._on_empty_frame,
}


@contextlib.contextmanager
def _gone_as_disconnect(cycle: StreamCycle):
    """`h2` refuses to send on a connection the client ended (its GOAWAY: h2 sends
    nothing after it) or on a stream it closed meanwhile: to the app, a disconnect (a
    quiet one, as when the connection is lost)."""
    try:
        yield
    except h2.exceptions.ProtocolError as exc:  # (StreamClosedError is one)
        cycle.disconnected = True
        raise ClientDisconnected(DISCONNECTED) from exc
