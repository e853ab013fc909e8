"""Pure-Python HTTP/2 (RFC 9113) over the `h2` library: H2Protocol, the asyncio
Protocol of one connection. `h2` (sans-I/O, server side, its header validation on)
parses and writes the frames and keeps the streams' states and windows; each
request stream is a `stream.StreamCycle` (the ASGI side, shared with the C mode's
session to come), which calls back the methods under "what a stream asks".

What the connection advertises and holds to (README "HTTP/2"):
- MAX_CONCURRENT_STREAMS 100; a stream over it is refused (RST_STREAM
  REFUSED_STREAM, which a client retries) and the connection goes on. `h2` would end
  the whole connection there, so its own count is set out of reach (_ServerSettings)
  and this protocol counts.
- MAX_HEADER_LIST_SIZE: --limit-request-head (HPACK's decoder enforces it: a
  header list over it ends the connection, GOAWAY ENHANCE_YOUR_CALM, as the decoder's
  table cannot be kept in step otherwise).
- Request bodies: a window of BODY_WINDOW per stream and for the connection; a
  stream's window reopens as its app takes the bytes (`receive`), so a connection
  holds at most BODY_WINDOW of unread body whatever the number of streams.
- Responses: DATA frames no bigger than the peer's windows and frame size, and none
  while the transport's buffer is above its high-water mark (per stream and per
  connection backpressure).
- Attacks (limits.py, README's table): stream resets (the client's and those its
  frames provoke), PING / SETTINGS and empty frames are counted against rates, over
  which the connection ends (GOAWAY ENHANCE_YOUR_CALM, nothing more answered); header
  blocks are bounded in bytes and CONTINUATION frames (h2_checks.CheckedFrameBuffer);
  a connection whose streams all wait on the client's windows or reads closes after
  --timeout-keep-alive. h2_checks also puts right the codes RFC 9113 asks for where
  `h2` differs (the preface, SETTINGS ACK, HPACK errors).
- Graceful shutdown (RFC 9113 6.8): a GOAWAY for any stream id and a PING, then,
  at the PING's ack, the GOAWAY naming the last stream taken; the connection closes
  once its streams are done (or at --timeout-graceful-shutdown, by the server).
"""

from __future__ import annotations

import asyncio
import logging
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from fastserve.logging import access_logger
from fastserve.protocols.asgi import (
    DISCONNECTED,
    REQUEST_TASK_NAME,
    ClientDisconnected,
    connection_context,
    start_task,
)
from fastserve.protocols.http.errors import error_body
from fastserve.protocols.http.flow import FlowControl
from fastserve.protocols.http2.h2_checks import CheckedDecoder, CheckedFrameBuffer
from fastserve.protocols.http2.limits import FloodLimits
from fastserve.protocols.http2.stream import (
    NO_ERROR,
    REFUSED_STREAM,
    StreamCycle,
    StreamRefused,
    read_head,
    stream_scope,
)
from fastserve.protocols.tls import tls_extension
from fastserve.protocols.utils import get_local_addr, get_remote_addr, is_ssl

MAX_CONCURRENT_STREAMS = 100
# The request body window of a stream, and of the connection (RFC 9113 6.9.2's
# initial window is 65,535 bytes: too small for a fast upload over a long path).
BODY_WINDOW = 1 << 20
INITIAL_WINDOW = 65535
# The largest stream id (31 bits): the first GOAWAY of a graceful shutdown names it.
STREAM_ID_MAX = 2**31 - 1
# The PING of a graceful shutdown (8 bytes); its ack is the second GOAWAY's moment.
SHUTDOWN_PING = b"goaway\x00\x00"
_ERROR_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"),)


class _ServerSettings(h2.settings.Settings):
    """The server's SETTINGS as advertised, with `h2`'s own check of concurrent
    streams out of reach (it ends the connection, TooManyStreamsError): H2Protocol
    refuses the one stream over MAX_CONCURRENT_STREAMS instead (RFC 9113 5.1.2)."""

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
            codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            codes.MAX_HEADER_LIST_SIZE: settings.limit_request_head,
            codes.INITIAL_WINDOW_SIZE: BODY_WINDOW,
        },
    )
    conn.incoming_buffer = CheckedFrameBuffer(settings.limit_request_head)
    conn.decoder = CheckedDecoder()
    # (h2 hands the setting to its decoder only once the peer acknowledges it)
    conn.decoder.max_header_list_size = settings.limit_request_head
    conn.initiate_connection()
    conn.increment_flow_control_window(BODY_WINDOW - INITIAL_WINDOW)
    return conn


class H2Protocol(asyncio.Protocol):
    """asyncio Protocol for HTTP/2 over `h2` (one per connection)."""

    __slots__ = (
        "settings", "server_state", "app_state", "loop", "transport", "flow", "access_log",
        "metrics", "client", "server", "scheme", "tls", "context", "conn", "streams",
        "timer", "closed", "shutting_down", "last_stream_id", "limits", "blocked_streams",
    )  # fmt: skip

    def __init__(self, settings, server_state, app_state: dict, _loop=None) -> None:
        self.settings = settings
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport = None
        self.flow = None
        self.access_log = settings.access_log
        self.metrics = server_state.metrics  # ProcessMetrics; None: --metrics-port is off
        self.client = self.server = None
        self.scheme = "http"
        self.tls = None
        self.context = None
        self.conn = None
        self.streams: dict[int, StreamCycle] = {}  # the streams whose response runs
        self.timer = None  # the idle deadline (none while a stream runs)
        self.closed = False
        self.shutting_down = False
        self.last_stream_id = STREAM_ID_MAX  # streams above it are refused (GOAWAY sent)
        self.limits = FloodLimits(time.monotonic())
        self.blocked_streams = 0  # streams whose sender waits on the client (send_data)

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport, self.loop)
        self.server_state.connections.add(self)
        self.client = get_remote_addr(transport)
        self.server = get_local_addr(transport)
        if is_ssl(transport):
            self.scheme = "https"
            self.tls = tls_extension(transport, self.settings.tls_server_cert)
        self.context = connection_context(self.settings.reset_contextvars)
        if self.access_log and not access_logger.isEnabledFor(logging.INFO):
            self.access_log = False
        self.conn = server_connection(self.settings)
        self._flush()
        self._wait_idle(self.settings.timeout_request_header)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server_state.connections.discard(self)
        self._stop_timer()
        streams = list(self.streams.values())
        self.streams.clear()
        for cycle in streams:
            cycle.disconnected = True
            cycle.wake()
            cycle.wake_sender()
        if self.flow is not None:
            self.flow.resume_writing()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
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

    # -- server ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """A graceful stop: the two-step GOAWAY (the module doc), then close once the
        streams are done."""
        if self.shutting_down or self.closed:
            return
        self.shutting_down = True
        if not self.streams:
            self._close_gracefully()
            return
        self._flush()
        self.transport.write(_goaway(STREAM_ID_MAX))
        self.conn.ping(SHUTDOWN_PING)
        self._flush()

    def abort(self) -> None:
        """Past the graceful-shutdown bound: drop the connection now (running apps see
        http.disconnect)."""
        if not self.closed:
            self.transport.abort()

    # -- frames in --------------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if stream_id > self.last_stream_id or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._reset(stream_id, REFUSED_STREAM)  # (the client may retry it)
            self._count(self.limits.stream_resets)
            return
        started = time.monotonic()
        try:
            head = read_head(event.headers, self.settings)
            self._check_concurrency()
        except StreamRefused as refused:
            self._answer(stream_id, refused.status)
            if event.stream_ended is None:  # its body is not wanted
                self._reset(stream_id, NO_ERROR)
            return
        scope = stream_scope(self, head)
        cycle = StreamCycle(self, stream_id, scope, started)
        self.streams[stream_id] = cycle
        self._stop_timer()
        self.server_state.total_requests += 1
        task = start_task(self.loop, self.context, cycle.run(), REQUEST_TASK_NAME)
        tasks = self.server_state.tasks
        tasks[task] = scope
        task.add_done_callback(tasks.pop)

    def _check_concurrency(self) -> None:
        """--limit-concurrency counts streams, as it counts HTTP/1.1 requests."""
        limit = self.settings.limit_concurrency
        if limit is not None:
            state = self.server_state
            if len(state.connections) > limit or len(state.tasks) >= limit:
                raise StreamRefused(503)

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
        cycle.body_received += len(data)
        limit_body = self.settings.limit_request_body
        if limit_body is not None and cycle.body_received > limit_body:
            self.conn.acknowledge_received_data(len(data), event.stream_id)
            cycle._fail(413)
            cycle.disconnected = True  # (to the app, as an HTTP/1.1 body over the limit)
            return
        if cycle.body_chunks is None:
            cycle.body_chunks = [data]
        else:
            cycle.body_chunks.append(data)
        cycle.body_buffered += len(data)
        cycle.wake()

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        cycle = self.streams.get(event.stream_id)
        if cycle is not None:
            cycle.message_complete = True
            cycle.wake()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        """The client reset a stream, or made `h2` reset it (a stream error):
        http.disconnect to its app alone; counted either way (limits.py)."""
        self._count(self.limits.stream_resets)
        cycle = self.streams.pop(event.stream_id, None)
        if cycle is not None:
            self._release(cycle)
            cycle.disconnected = True
            cycle.wake()
            cycle.wake_sender()
            self._stream_gone()

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

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        if event.ping_data == SHUTDOWN_PING and not self.closed:
            # a round trip since the first GOAWAY: every stream the client opened
            # before it saw that one is here
            self.last_stream_id = self.conn.highest_inbound_stream_id
            self._flush()
            self.transport.write(_goaway(self.last_stream_id))

    def _on_control_frame(self, event) -> None:
        """A PING or SETTINGS frame (h2 answers it)."""
        self._count(self.limits.control_frames)

    def _on_empty_frame(self, event) -> None:
        """PRIORITY (deprecated: ignored) or an unknown frame type."""
        self._count(self.limits.empty_frames)

    def _count(self, limit) -> None:
        """One more against a flood limit; over it, GOAWAY ENHANCE_YOUR_CALM and the
        end, without what `h2` has written (the answers to the flood) going out."""
        if limit.spend(time.monotonic()) or self.closed:
            return
        self.conn.data_to_send()
        self.transport.write(
            _goaway(self.conn.highest_inbound_stream_id, ErrorCodes.ENHANCE_YOUR_CALM)
        )
        self._close_now()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """The client is done (h2 sends nothing after its GOAWAY): close."""
        self._close()

    # -- what a stream asks (stream.py) -------------------------------------------------

    def send_head(self, cycle: StreamCycle, status: int, fields: list, end_stream: bool) -> None:
        self.conn.send_headers(
            cycle.stream_id, [(b":status", b"%d" % status), *fields], end_stream=end_stream
        )
        self._flush()

    async def send_data(self, cycle: StreamCycle, data, end_stream: bool) -> None:
        """DATA frames of `data`, each as big as the stream's window, the connection's
        and the peer's frame size allow; waiting while they are shut or the transport
        is full."""
        if type(data) is not bytes:
            data = bytes(data)
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
            conn.send_data(stream_id, piece, end_stream=end_stream and sent == len(data))
            self._flush()
            if sent == len(data):
                return

    async def _wait_for_client(self, waiter) -> None:
        """A sender waits for the client's window or reads: once every running stream
        does, the connection is idle (limits.py) and its deadline runs."""
        self.blocked_streams += 1
        if self.blocked_streams >= len(self.streams):
            self._stop_timer()
            self.timer = self.loop.call_later(self.settings.timeout_keep_alive, self._on_stalled)
        try:
            await waiter
        finally:
            self.blocked_streams -= 1
            if self.streams:  # (none left: _stream_gone's idle deadline is on)
                self._stop_timer()

    def _on_stalled(self) -> None:
        """Every stream still waits on a client that neither reads nor opens its
        windows: the end (their apps see http.disconnect)."""
        self.timer = None
        if self.streams and self.blocked_streams >= len(self.streams):
            self.conn.close_connection(NO_ERROR)
            self._flush()
            self._close_now()

    def reset_stream(self, cycle: StreamCycle, error_code: int) -> None:
        self._reset(cycle.stream_id, error_code)

    def body_consumed(self, cycle: StreamCycle, n: int) -> None:
        if not self.closed:
            self.conn.acknowledge_received_data(n, cycle.stream_id)
            self._flush()

    def answer(self, cycle: StreamCycle, status: int) -> int:
        return self._answer(cycle.stream_id, status)

    def _response_complete(self, cycle: StreamCycle) -> None:
        """The stream's response is done (or reset): counted, forgotten; a request
        body still on its way is stopped (RFC 9113 8.1: RST_STREAM NO_ERROR)."""
        if self.metrics is not None and cycle.status:
            self._count_response(cycle)
        if self.streams.pop(cycle.stream_id, None) is None:
            return
        if not cycle.message_complete:
            self._reset(cycle.stream_id, NO_ERROR)
        self._release(cycle)
        self._stream_gone()

    def _count_response(self, cycle: StreamCycle) -> None:
        self.metrics.count_response(
            cycle.scope["method"], cycle.status, time.monotonic() - cycle.started, cycle.body_bytes
        )

    # -- helpers ------------------------------------------------------------------------

    def _answer(self, stream_id: int, status: int) -> int:
        """The server's own answer on a stream (errors.error_body), its body's size:
        none when the stream's window is shut."""
        body = error_body(status)
        if len(body) > self.conn.local_flow_control_window(stream_id):
            body = b""
        headers = [
            (b":status", b"%d" % status),
            *self.server_state.default_headers,
            *_ERROR_HEADERS,
            (b"content-length", b"%d" % len(body)),
        ]
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

    def _stream_gone(self) -> None:
        """A stream is done: with none left, the idle deadline, or the end."""
        if self.streams or self.closed:
            return
        if self.shutting_down:
            self._close_gracefully()
        else:
            self._wait_idle(self.settings.timeout_keep_alive)

    def _wait_idle(self, delay: float) -> None:
        self._stop_timer()
        self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.streams:
            self._close_gracefully()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _close_gracefully(self) -> None:
        """No stream runs: GOAWAY NO_ERROR (naming the last stream taken), close."""
        if self.closed:
            return
        self.conn.close_connection(NO_ERROR)
        self._flush()
        self._close()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _close_now(self) -> None:
        """The end after a GOAWAY; the connection aborted when what was written is
        not all out (asyncio's close would wait for a client that does not read)."""
        if self.transport.get_write_buffer_size():
            self.closed = True
            self._stop_timer()
            self.transport.abort()
        else:
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
        self._stop_timer()


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
