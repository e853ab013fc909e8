"""An HTTP/2 connection apart from its frame library, written once for both modes:
HTTP2Connection, the asyncio Protocol that H2Protocol (pure, over `h2`: h2_impl.py)
and Nghttp2Protocol (C mode, over fastserve._http2's nghttp2 session:
nghttp2_impl.py) extend. It holds the stream registry (`streams`), a stream's start
(its StreamCycle and Task, --limit-concurrency), the request body handed to a stream
(--limit-request-body), a stream's end (counted, forgotten), the idle deadlines
(--timeout-request-header, --timeout-keep-alive), the keep-alive PINGs
(--http2-keep-alive-interval, --http2-keep-alive-timeout), the order of a graceful
shutdown (and which of the server's PINGs an ack is for),
and the connection's facts a stream reads (stream.py's list). The flood defences
that are not frame work are here too, once (limits.py says which bound is which):
the connection's FloodLimits (`limits`), which both frame libraries' classes spend
from (H2Protocol through `_count`, Nghttp2Protocol's session from its callbacks), and
the stalled-client deadline (`_wait_for_client`: a connection whose streams all wait
on the client's windows or reads ends after --timeout-keep-alive).

What a frame library's class gives it: `_open_session()` (its SETTINGS written),
`_flush()` (the queued frames to the transport), `_answer(stream_id, status)` (the
server's own response; its body's size), `_reset(stream_id, error_code)`,
`_release(cycle)` (a forgotten stream's unread body gives its window back),
`_shutdown_notice()` (the first GOAWAY of a graceful shutdown and its PING),
`_shutdown_goaway()` (at that PING's ack: the GOAWAY naming the last stream taken,
written; the streams taken go on), `_ping()` (a keep-alive PING, written; the server's
PINGs all carry the same data, their acks call `_ping_acked()`),
`_final_goaway()` (GOAWAY NO_ERROR naming the last stream taken, queued),
`_flood_goaway()` (GOAWAY ENHANCE_YOUR_CALM written, what the flood made dropped
where the library allows); and the
stream's calls that are frame work: `send_head`, `send_data`, `body_consumed`.
"""

from __future__ import annotations

import asyncio
import time

from fastserve.protocols.asgi import REQUEST_TASK_NAME, start_task
from fastserve.protocols.http.cycle import open_connection
from fastserve.protocols.http2.limits import FloodLimits
from fastserve.protocols.http2.stream import (
    NO_ERROR,
    RequestHead,
    StreamCycle,
    StreamRefused,
    stream_scope,
)

# The content type of the server's own answers (errors.error_body).
ERROR_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"),)


class HTTP2Connection(asyncio.Protocol):
    """One HTTP/2 connection's streams, limits, deadlines and shutdown."""

    __slots__ = (
        "settings", "server_state", "app_state", "loop", "transport", "flow", "access_log",
        "metrics", "client", "server", "scheme", "tls", "context", "streams", "timer",
        "closed", "shutting_down", "limits", "blocked_streams", "heard", "ping_timer",
        "ping_out", "last_goaway_sent",
    )  # fmt: skip

    # What the start-up line says serves HTTP/2 (Config.mode_details).
    library = ""

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
        self.streams: dict[int, StreamCycle] = {}  # the streams whose response runs
        self.timer = None  # the idle deadline (none while a stream runs)
        self.closed = False
        self.shutting_down = False
        self.limits = FloodLimits(time.monotonic())
        self.blocked_streams = 0  # streams whose sender waits on the client
        self.heard = 0.0  # loop.time() of the client's last bytes (data_received)
        self.ping_timer = None  # the keep-alive deadline: the next PING, or its ack's
        self.ping_out = False  # a keep-alive PING waits for its ack
        self.last_goaway_sent = False  # the shutdown's GOAWAY naming the last stream

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport) -> None:
        open_connection(self, transport)
        self._open_session()
        self._wait_idle(self.settings.timeout_request_header)
        interval = self.settings.http2_keep_alive_interval
        if interval is not None:
            self.heard = self.loop.time()
            self.ping_timer = self.loop.call_later(interval, self._on_quiet)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server_state.connections.discard(self)
        self._stop_timer()
        if self.ping_timer is not None:
            self.ping_timer.cancel()
        self._disconnect_streams()
        if self.flow is not None:
            self.flow.resume_writing()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- server ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """A graceful stop (RFC 9113 6.8): a GOAWAY for any stream and a PING, then, at
        the PING's ack, the GOAWAY naming the last stream taken (the frame library's
        class); the connection closes once its streams are done."""
        if self.shutting_down or self.closed:
            return
        self.shutting_down = True
        if not self.streams:
            self._close_gracefully()
            return
        self._shutdown_notice()

    def abort(self) -> None:
        """Past the graceful-shutdown bound: drop the connection now (running apps see
        http.disconnect)."""
        if not self.closed:
            self.transport.abort()

    # -- streams --------------------------------------------------------------------

    def _check_concurrency(self) -> None:
        """--limit-concurrency counts streams, as it counts HTTP/1.1 requests."""
        limit = self.settings.limit_concurrency
        if limit is not None:
            state = self.server_state
            if len(state.connections) > limit or len(state.tasks) >= limit:
                raise StreamRefused(503)

    def _refuse(self, stream_id: int, status: int, body_coming: bool) -> None:
        """A request the server answers itself; a body on its way is not wanted."""
        self._answer(stream_id, status)
        if body_coming:
            self._reset(stream_id, NO_ERROR)

    def _open_stream(
        self, stream_id: int, head: RequestHead, started: float, ended: bool
    ) -> StreamCycle:
        """A request's stream: its StreamCycle (`ended`: no body follows) and the Task
        running the app."""
        scope = stream_scope(self, head)
        cycle = StreamCycle(self, stream_id, scope, started)
        cycle.message_complete = ended
        self.streams[stream_id] = cycle
        self._stop_timer()
        self.server_state.total_requests += 1
        task = start_task(self.loop, self.context, cycle.run(), REQUEST_TASK_NAME)
        tasks = self.server_state.tasks
        tasks[task] = scope
        task.add_done_callback(tasks.pop)
        return cycle

    def _body_arrived(self, cycle: StreamCycle, data: bytes) -> bool:
        """Request body bytes for a stream's app (their window opens as it takes
        them); False: over --limit-request-body, the stream answered 413 and the
        bytes are the caller's to drop (their window reopened)."""
        cycle.body_received += len(data)
        limit_body = self.settings.limit_request_body
        if limit_body is not None and cycle.body_received > limit_body:
            cycle._fail(413)
            cycle.disconnected = True  # (to the app, as an HTTP/1.1 body over the limit)
            return False
        if cycle.body_chunks is None:
            cycle.body_chunks = [data]
        else:
            cycle.body_chunks.append(data)
        cycle.body_buffered += len(data)
        cycle.wake()
        return True

    def _body_complete(self, stream_id: int) -> None:
        cycle = self.streams.get(stream_id)
        if cycle is not None:
            cycle.message_complete = True
            cycle.wake()

    def _stream_reset(self, stream_id: int) -> None:
        """The client reset a stream: http.disconnect to its app alone."""
        cycle = self.streams.pop(stream_id, None)
        if cycle is not None:
            self._release(cycle)
            cycle.disconnected = True
            cycle.wake()
            cycle.wake_sender()
            self._stream_gone()

    # -- what a stream asks (stream.py), apart from frame work ----------------------------

    def reset_stream(self, cycle: StreamCycle, error_code: int) -> None:
        self._reset(cycle.stream_id, error_code)

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
        scope = cycle.scope
        self.metrics.count_response(
            scope["http_version"], scope["method"], cycle.status,
            time.monotonic() - cycle.started, cycle.body_bytes,
        )  # fmt: skip

    # -- floods (limits.py) ---------------------------------------------------------------

    def _count(self, limit) -> None:
        """One more against a flood bound of `limits`; over it, GOAWAY
        ENHANCE_YOUR_CALM and the end."""
        if limit.spend(time.monotonic()) or self.closed:
            return
        self._flood_goaway()
        self._close_now()

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
        if self.streams and self.blocked_streams >= len(self.streams) and not self.closed:
            self._final_goaway()
            self._flush()
            self._close_now()

    # -- keep-alive PINGs (--http2-keep-alive-interval) ---------------------------------

    def _on_quiet(self) -> None:
        """The keep-alive interval passed: if the client sent nothing for as long, a
        PING, whose ack is due within --http2-keep-alive-timeout; else the wait goes on
        from its last bytes. None during a graceful shutdown (which has its own PING
        and bound)."""
        self.ping_timer = None
        if self.closed or self.shutting_down:
            return
        interval = self.settings.http2_keep_alive_interval
        quiet = self.loop.time() - self.heard
        if quiet < interval:
            self.ping_timer = self.loop.call_later(interval - quiet, self._on_quiet)
            return
        self.ping_out = True
        self._ping()
        timeout = self.settings.http2_keep_alive_timeout
        self.ping_timer = self.loop.call_later(timeout, self._on_ping_timeout)

    def _on_ping_timeout(self) -> None:
        """No ack of the keep-alive PING in time: the client (or the path to it) is
        gone. GOAWAY and the end; running streams' apps see http.disconnect."""
        self.ping_timer = None
        if self.ping_out and not self.closed:
            self._final_goaway()
            self._flush()
            self._close_now()

    def _ping_acked(self) -> None:
        """The client acknowledged a PING of the server's. Both kinds carry the same
        data and acks come in the PINGs' order, and no keep-alive PING goes out during
        a graceful shutdown: so the ack is the keep-alive PING's while one is out, else
        the shutdown's (a round trip since its first GOAWAY: every stream the client
        opened before it saw that one is here). Any other ack is ignored."""
        if self.closed:
            return
        if self.ping_out:
            self.ping_out = False
            self.ping_timer.cancel()
            interval = self.settings.http2_keep_alive_interval
            self.ping_timer = self.loop.call_later(interval, self._on_quiet)
        elif self.shutting_down and not self.last_goaway_sent:
            self.last_goaway_sent = True
            self._shutdown_goaway()

    # -- deadlines and the end ----------------------------------------------------------

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
        """No stream runs: GOAWAY NO_ERROR (naming the last stream taken; once), close."""
        if self.closed:
            return
        if not self.last_goaway_sent:
            self.last_goaway_sent = True
            self._final_goaway()
        self._flush()
        self._close()

    def _disconnect_streams(self) -> None:
        """The connection is closed (by either side): every running stream's app sees
        a client's disconnect (its receive, a send that waits or comes later)."""
        streams = list(self.streams.values())
        self.streams.clear()
        for cycle in streams:
            cycle.disconnected = True
            cycle.wake()
            cycle.wake_sender()

    def _close_now(self) -> None:
        """The end after a GOAWAY; the connection aborted when what was written is
        not all out (asyncio's close would wait for a client that does not read)."""
        if self.transport.get_write_buffer_size():
            self.closed = True
            self._stop_timer()
            self._disconnect_streams()
            self.transport.abort()
        else:
            self._close()

    def _answer_fields(self, body: bytes) -> list:
        """The header fields of the server's own answer (`_answer`) with `body`, after
        its `:status`."""
        return [
            *self.server_state.default_headers,
            *ERROR_HEADERS,
            (b"content-length", b"%d" % len(body)),
        ]

    def _close(self) -> None:
        """The end: written frames go out, then the close (nghttp2 ends a session at
        a client's protocol error before the transport reports it)."""
        if not self.closed:
            self.closed = True
            self.transport.close()
        self._stop_timer()
        self._disconnect_streams()
