"""The C mode's HTTP/2 (RFC 9113): Nghttp2Protocol, the asyncio Protocol of one
connection over fastserve._http2's ServerSession (libnghttp2, sans-I/O). nghttp2
parses and writes the frames, checks the request heads, keeps the streams' states and
windows, and answers a protocol error itself (RST_STREAM, or GOAWAY and the end:
`want_close`); its events drive the same `stream.StreamCycle`s as the pure mode's
H2Protocol, and what is not frame work is connection.py's HTTP2Connection, which
both extend.

What it advertises and holds to (README "HTTP/2"), as H2Protocol does:
MAX_CONCURRENT_STREAMS --h2-max-concurrent-streams (nghttp2 refuses a stream over it,
REFUSED_STREAM); MAX_FRAME_SIZE --h2-max-inbound-frame-size; MAX_HEADER_LIST_SIZE
--limit-request-head (a head over it is answered 431, the connection goes on); a
request body window of --h2-initial-window-size a stream, reopened as the app
takes the bytes (`take_body(reopen=False)`, then `consume` at `body_consumed`), and
_http2.CONNECTION_WINDOW for the connection; response bodies go as the peer's windows
let nghttp2 frame them, a stream's `send` waiting while more than SEND_BUFFER of its
bytes are not framed yet, or while the transport is above its high-water mark; the
two-step GOAWAY of a graceful shutdown (`shutdown_notice` and `ping`, then `goaway`
at the PING's ack); the keep-alive PINGs (`ping`, connection.py's deadlines).

Attacks (limits.py, README's table): nghttp2's own limiters run at limits.py's bounds,
and the session spends the connection's FloodLimits (connection.py) on what nghttp2
does not count (PING / SETTINGS, stream resets); over a bound it ends the connection
itself (GOAWAY ENHANCE_YOUR_CALM, then `want_close`). The stalled-client deadline is
connection.py's, as in the pure mode.

Frames the streams queue are written once a loop pass (`_flush_soon`): the responses
of the streams that ran in that pass go out in one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Optional

from fastserve._http2 import (
    CLOSED,
    CONNECTION_WINDOW,
    DATA,
    END,
    GOAWAY,
    NGHTTP2_VERSION,
    PING_ACK,
    REQUEST,
    ServerSession,
)
from fastserve.protocols.asgi import DISCONNECTED, ClientDisconnected
from fastserve.protocols.http.errors import error_body
from fastserve.protocols.http.flow import HIGH_WATER_LIMIT
from fastserve.protocols.http2.connection import HTTP2Connection
from fastserve.protocols.http2.limits import ENHANCE_YOUR_CALM
from fastserve.protocols.http2.stream import NO_ERROR, StreamCycle, StreamRefused, request_head

# A stream's response bytes handed to nghttp2 and not framed yet (its window, or the
# connection's, is shut) past which the app's `send` waits.
SEND_BUFFER = HIGH_WATER_LIMIT


class Nghttp2Protocol(HTTP2Connection):
    """asyncio Protocol for HTTP/2 over nghttp2 (one per connection)."""

    __slots__ = ("session", "flush_handle", "blocked", "finishing")
    library = f"nghttp2 {NGHTTP2_VERSION}"

    def __init__(self, settings, server_state, app_state: dict, _loop=None) -> None:
        super().__init__(settings, server_state, app_state, _loop)
        self.session = None
        self.flush_handle = None  # the write of this loop pass's frames, when queued
        self.blocked: set = set()  # streams whose send waits for its bytes to be framed
        self.finishing: set = set()  # ids of those whose response's end is handed over

    def _open_session(self) -> None:
        settings = self.settings
        self.session = ServerSession(
            max_concurrent_streams=settings.h2_max_concurrent_streams,
            stream_window=settings.h2_initial_window_size,
            connection_window=max(CONNECTION_WINDOW, settings.h2_initial_window_size),
            max_frame_size=settings.h2_max_inbound_frame_size,
            max_header_list_size=settings.limit_request_head,
            limits=self.limits,
        )
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.heard = self.loop.time()
        for event in self.session.receive(data):
            self._on_event(event)
        self._flush()

    def _shutdown_notice(self) -> None:
        self.session.shutdown_notice()
        self._flush()
        self.session.ping()  # (after the GOAWAY: nghttp2 would send it first)
        self._flush()

    def _ping(self) -> None:
        self.session.ping()
        self._flush()

    def _shutdown_goaway(self) -> None:
        self.session.goaway()

    # -- events in ------------------------------------------------------------------

    def _on_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == DATA:
            self._on_data(event[1])
        elif kind == REQUEST:
            self._on_request(event)
        elif kind == END:
            self._body_complete(event[1])
        elif kind == CLOSED:
            self._on_closed(event[1], event[2])
        elif kind == PING_ACK:
            self._ping_acked()
        elif kind == GOAWAY:
            self._on_goaway(event[2])

    def _on_request(self, event: tuple) -> None:
        _, stream_id, method, _scheme, authority, path, headers, ended = event
        started = time.monotonic()
        try:
            head = request_head(method, path, authority, headers, self.settings)
            self._check_concurrency()
        except StreamRefused as refused:
            self._refuse(stream_id, refused.status, not ended)
            return
        self._open_stream(stream_id, head, started, ended)

    def _on_data(self, stream_id: int) -> None:
        """Body bytes, taken from the session at once; their windows stay shut until
        the app takes them (body_consumed)."""
        cycle = self.streams.get(stream_id)
        if cycle is None:  # answered, reset or refused: dropped, its window reopened
            self.session.take_body(stream_id)
            return
        data = self.session.take_body(stream_id, False)
        if data and not self._body_arrived(cycle, data):
            self.session.consume(stream_id, len(data))

    def _on_closed(self, stream_id: int, error_code: int) -> None:
        """A stream nghttp2 closed: the end of a response going out whole, or a
        reset (the client's, or nghttp2's for a protocol error)."""
        if stream_id in self.finishing:
            self.finishing.discard(stream_id)
            if error_code == NO_ERROR:
                return  # (its send returns, then _response_complete forgets it)
        self._stream_reset(stream_id)

    def _on_goaway(self, error_code: int) -> None:
        """The client is done: close at once on its error, else once the streams are."""
        if error_code != NO_ERROR or not self.streams:
            self._close()
        else:
            self.shutting_down = True

    # -- what a stream asks (stream.py) -------------------------------------------------

    def send_head(self, cycle: StreamCycle, status: int, fields: list, end_stream: bool) -> None:
        self.session.submit_response(cycle.stream_id, status, fields, b"", end_stream)
        self._flush_soon()

    def send_data(self, cycle: StreamCycle, data, end_stream: bool) -> Optional[Awaitable]:
        """`data` to the stream's response buffer, which nghttp2 frames as the stream's
        window, the connection's and the peer's frame size allow; what to wait on
        while the transport is full, or more than SEND_BUFFER is not framed yet."""
        if type(data) is not bytes:
            data = bytes(data)
        if cycle.disconnected or self.closed:
            raise ClientDisconnected(DISCONNECTED)
        if self.flow.write_paused:
            return self._send_data_drained(cycle, data, end_stream)
        if not self.session.send_body(cycle.stream_id, data, end_stream):
            raise ClientDisconnected(DISCONNECTED)
        self._flush_soon()
        if self.session.pending_body(cycle.stream_id) > SEND_BUFFER:
            return self._wait_framed(cycle, end_stream)
        return None

    async def _send_data_drained(self, cycle: StreamCycle, data: bytes, end_stream: bool):
        """send_data once the transport is below its high-water mark."""
        while self.flow.write_paused:
            if cycle.disconnected or self.closed:
                raise ClientDisconnected(DISCONNECTED)
            # (shielded: the future is the connection's, shared by its streams)
            await self._wait_for_client(asyncio.shield(self.flow.drain()))
        waiting = self.send_data(cycle, data, end_stream)
        if waiting is not None:
            await waiting

    async def _wait_framed(self, cycle: StreamCycle, end_stream: bool) -> None:
        """Until no more than SEND_BUFFER of the stream's response waits for the peer's
        windows (each flush wakes the senders in `blocked`)."""
        stream_id = cycle.stream_id
        if end_stream:
            self.finishing.add(stream_id)
        self.blocked.add(cycle)
        try:
            while self.session.pending_body(stream_id) > SEND_BUFFER:
                if cycle.disconnected or self.closed:
                    raise ClientDisconnected(DISCONNECTED)
                cycle.window_waiter = self.loop.create_future()
                await self._wait_for_client(cycle.window_waiter)
        finally:
            self.blocked.discard(cycle)

    def send_trailers(self, cycle: StreamCycle, fields: list) -> None:
        """The trailers, the stream's last HEADERS frame: nghttp2 sends them once
        the response buffer is framed whole."""
        if cycle.disconnected or self.closed:
            raise ClientDisconnected(DISCONNECTED)
        if not self.session.send_trailers(cycle.stream_id, fields):
            raise ClientDisconnected(DISCONNECTED)
        self._flush_soon()

    def send_informational(self, cycle: StreamCycle, status: int, fields: list) -> None:
        if cycle.disconnected or self.closed:
            raise ClientDisconnected(DISCONNECTED)
        if not self.session.submit_informational(cycle.stream_id, status, fields):
            raise ClientDisconnected(DISCONNECTED)
        self._flush_soon()

    def body_consumed(self, cycle: StreamCycle, n: int) -> None:
        if not self.closed:
            self.session.consume(cycle.stream_id, n)
            self._flush_soon()

    # -- helpers ------------------------------------------------------------------------

    def _answer(self, stream_id: int, status: int) -> int:
        """The server's own answer on a stream (errors.error_body), its body's size;
        written now, before a reset that may follow (_refuse)."""
        body = error_body(status)
        headers = self._answer_fields(body)
        self.session.submit_response(stream_id, status, headers, body, True)
        self._flush()
        return len(body)

    def _release(self, cycle: StreamCycle) -> None:
        """A forgotten stream's unread body: its bytes count no more against the
        connection's window."""
        if cycle.body_buffered and not self.closed:
            self.session.consume(cycle.stream_id, cycle.body_buffered)
        cycle.body_chunks = None
        cycle.body_buffered = 0

    def _reset(self, stream_id: int, error_code: int) -> None:
        """RST_STREAM, after what the stream has queued (nghttp2 drops what is left at
        a reset); NO_ERROR (the request body is not wanted) only once the response is
        framed whole: else the body's rest is dropped as it comes."""
        if self.closed:
            return
        self._flush()
        if self.closed or error_code == NO_ERROR and self.session.pending_body(stream_id):
            return
        self.session.reset_stream(stream_id, error_code)
        self._flush_soon()

    def _final_goaway(self) -> None:
        self.session.goaway()

    def _flood_goaway(self) -> None:
        self.session.goaway(ENHANCE_YOUR_CALM)
        self._flush()

    def _flush_soon(self) -> None:
        if self.flush_handle is None and not self.closed:
            self.flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """The frames nghttp2 has queued to the transport; then the streams those
        closed, the senders they let go on, and the end once nghttp2 wants it."""
        handle = self.flush_handle
        if handle is not None:
            self.flush_handle = None
            handle.cancel()
        if self.closed:
            return
        session = self.session
        data = session.data_to_send()
        if data:
            self.transport.write(data)
        for event in session.take_events():
            self._on_event(event)
        for cycle in self.blocked:
            cycle.wake_sender()
        if session.want_close:
            self._close()
