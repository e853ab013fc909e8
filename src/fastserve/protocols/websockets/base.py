"""The ASGI side of one WebSocket connection, written once for both framing libraries.

An HTTP protocol that validated an upgrade request hands the connection over (see
`handshake.hand_over`): this protocol then starts the app, whose first `receive()`
is `websocket.connect`. Everything but framing lives here: the state machine of an
ASGI websocket, `send`/`receive` and their message checks, the receive queue and
both directions of flow control, keepalive pings, the closing handshake, graceful
shutdown, the `websocket.http.response` extension, access log and errors.

A subclass wraps one framing library behind five methods:

- `_handshake(subprotocol, headers)`: the bytes of the 101 response, with the
  extensions negotiated; the library is then ready for frames. Raises
  `HandshakeRefused` when the library will not accept the request.
- `_receive(data)`: parse bytes from the client and report what they held, through
  `_on_data`, `_on_pong`, `_on_close` and `_fail_connection` (the library answers
  pings itself; the subclass writes what the library has to send).
- `_data_frame(data)`, `_close_frame(code, reason)`, `_ping_frame(payload)`: the
  bytes of one message (text for str, binary for bytes), close frame, or ping.

States: the app has not answered the handshake (CONNECTING); it answers with an HTTP
response instead (RESPONDING); it accepted (OPEN); a close frame went out and the
peer's is awaited (CLOSING); nothing more is sent (CLOSED). Frames that arrive
before the app accepted wait, unparsed, with reading paused.

Close codes the app sees in `websocket.disconnect`: the peer's own, 1005 when its
close frame had none, 1006 when the connection dropped without one, the code the
app closed with, 1002 / 1007 / 1009 for what the client broke, 1011 when a ping
went unanswered, 1012 when the server shuts down.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Optional, Union

from fastserve.logging import access_logger, format_client, log_websocket_access
from fastserve.protocols.asgi import (
    APP_FAIL,
    WEBSOCKET_TASK_NAME,
    ASGIMessageError,
    ClientDisconnected,
    after_close,
    app_returned,
    bad_header,
    connection_context,
    log_app_exception,
    malformed_header,
    message_type_of,
    response_body,
    response_start,
    start_task,
    unexpected_message,
    websocket_accept,
    websocket_close,
    websocket_send,
)
from fastserve.protocols.http.errors import error_response
from fastserve.protocols.http.flow import FlowControl
from fastserve.protocols.http.headers import STATUS_LINES, is_field_value, is_token

error_logger = logging.getLogger("fastserve.error")

# Close codes (RFC 6455 7.4.1) the server sends or reports itself.
NORMAL_CLOSURE = 1000
NO_STATUS_RECEIVED = 1005  # the peer's close frame had no code (never sent)
ABNORMAL_CLOSURE = 1006  # the connection dropped without a close frame (never sent)
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012

# HTTP statuses the server answers a handshake with by itself.
BAD_REQUEST = 400  # the framing library refused the handshake
FORBIDDEN = 403  # the app closed before accepting (ASGI)
INTERNAL_SERVER_ERROR = 500
SWITCHING_PROTOCOLS = 101

# After a close frame goes out, the peer has this long to answer with its own before
# the server closes the TCP connection anyway.
CLOSE_TIMEOUT = 10.0
# Reading, paused at ws_max_queue unread messages, resumes once the app has taken
# the queue down to a quarter of that: not once per message.
QUEUE_RESUME_FRACTION = 4
# The server compresses (permessage-deflate) with a 4 KiB window, not zlib's 32 KiB:
# a fraction of the memory per connection for nearly the same compression.
DEFLATE_MAX_WINDOW_BITS = 12
# A keepalive ping carries random bytes, so that only the pong to it counts.
PING_PAYLOAD_SIZE = 4
# The app's data frames are held until the loop's next pass and written together
# (one system call for all it sent meanwhile, the largest cost per small message),
# or at once when this many bytes are held.
HELD_FRAMES_MAX = 65536

CONNECTING = 0
RESPONDING = 1
OPEN = 2
CLOSING = 3
CLOSED = 4

_CONNECT = {"type": "websocket.connect"}  # copied on return, never handed out itself
_CONNECTING_MESSAGES = ("websocket.accept", "websocket.close", "websocket.http.response.start")
_OPEN_MESSAGES = ("websocket.send", "websocket.close")
_RESPONSE_START = "websocket.http.response.start"
_RESPONSE_BODY = "websocket.http.response.body"


class HandshakeRefused(Exception):
    """The framing library would not accept the handshake request (an extension
    offer it cannot parse, say): the client gets a 400."""


def check_headers(headers: list, message_type: str) -> list:
    """An app's headers as (name, value) pairs, each checked as the HTTP protocols
    check response headers: a token name and a value without NUL, CR or LF."""
    checked = []
    for header in headers:
        try:
            name, value = header
        except (TypeError, ValueError):
            raise malformed_header(header, message_type) from None
        if (
            not isinstance(name, bytes)
            or not isinstance(value, bytes)
            or not is_token(name)
            or not is_field_value(value)
        ):
            raise bad_header(name, value, message_type)
        checked.append((name, value))
    return checked


def plain_response(status: int, default_head: bytes) -> bytes:
    """The canned plain-text answer for `status`, with the Date/Server lines."""
    status_line = STATUS_LINES[status]
    return status_line + default_head + error_response(status)[len(status_line) :]


class WebSocketProtocol(asyncio.Protocol):
    """asyncio Protocol for one WebSocket connection (see the module docstring);
    subclasses supply the framing."""

    __slots__ = (
        "settings", "server_state", "scope", "loop", "transport", "flow", "access_log",
        "state", "app_closed", "message_error", "connect_delivered", "messages",
        "waiter", "disconnect", "early_data", "parts", "parts_text", "parts_size",
        "resume_at", "closed", "close_timer", "ping_timer", "pong_timer", "ping_payload",
        "response_status", "response_headers", "response_head_pending", "held",
        "held_size", "started",
    )  # fmt: skip

    def __init__(self, settings, server_state, scope: dict, loop) -> None:
        self.settings = settings
        self.server_state = server_state
        self.scope = scope
        self.loop = loop
        self.transport = None
        self.flow = None
        self.access_log = settings.access_log
        self.state = CONNECTING
        self.app_closed = False  # the app closed or refused the WebSocket itself
        self.message_error: Optional[BaseException] = None
        self.connect_delivered = False
        self.messages: collections.deque = collections.deque()  # received, not yet taken
        self.waiter = None  # the app's receive() waiting for a message
        self.disconnect: Optional[dict] = None  # the websocket.disconnect, once over
        self.early_data = bytearray()  # bytes that came before the app accepted
        self.parts: list = []  # the pieces of a data message still coming in
        self.parts_text = False
        self.parts_size = 0
        self.resume_at = settings.ws_max_queue // QUEUE_RESUME_FRACTION
        self.closed = False  # the transport is closed (or closing)
        self.close_timer = None
        self.ping_timer = None
        self.pong_timer = None
        self.ping_payload = b""
        # websocket.http.response: status and checked headers, until the first body
        self.response_status = 0
        self.response_headers: list = []
        self.response_head_pending = False
        self.held: list = []  # data frames not written yet (see HELD_FRAMES_MAX)
        self.held_size = 0
        self.started = time.monotonic()  # the handshake request, for the access log

    # -- the framing library (subclasses) -------------------------------------------

    def _handshake(self, subprotocol: Optional[str], headers: list) -> bytes:
        raise NotImplementedError

    def _receive(self, data: bytes) -> None:
        raise NotImplementedError

    def _data_frame(self, data: Union[str, bytes]) -> bytes:
        raise NotImplementedError

    def _close_frame(self, code: int, reason: str) -> bytes:
        raise NotImplementedError

    def _ping_frame(self, payload: bytes) -> bytes:
        raise NotImplementedError

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flow = FlowControl(transport, self.loop)
        self.server_state.connections.add(self)
        metrics = self.server_state.metrics
        if metrics is not None:
            metrics.websockets_open += 1
        if self.access_log and not access_logger.isEnabledFor(logging.INFO):
            self.access_log = False
        # In a copy of the context, as every request Task: a contextvar the app sets
        # never leaks into another connection.
        context = connection_context(self.settings.reset_contextvars)
        task = start_task(self.loop, context, self._run(), WEBSOCKET_TASK_NAME)
        tasks = self.server_state.tasks
        tasks[task] = self.scope
        task.add_done_callback(tasks.pop)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.state = CLOSED
        self.server_state.connections.discard(self)
        metrics = self.server_state.metrics
        if metrics is not None:
            metrics.websockets_open -= 1
        self._stop_keepalive()
        self._cancel_close_timer()
        self._disconnected(ABNORMAL_CLOSURE)
        self.flow.resume_writing()  # wakes a send() waiting to drain
        self.early_data = bytearray()
        self.parts = []
        self.held = []

    # eof_received: not defined, so asyncio closes the transport on EOF; a client that
    # half-closes without a close frame has gone (1006).

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.state < OPEN:
            # A client may send frames right after its handshake: they wait for the
            # app to accept (and are dropped if it refuses). Read no more meanwhile.
            self.early_data += data
            self.flow.pause_reading()
            return
        self._receive(data)

    # -- server -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop: an open WebSocket gets a close frame with 1012 (the app sees
        websocket.disconnect 1012 and may finish), one not yet accepted is dropped;
        an HTTP response under way and a closing handshake are let finish."""
        if self.state == OPEN:
            self._disconnected(SERVICE_RESTART, "service restart")
            self._start_closing(SERVICE_RESTART, "service restart")
        elif self.state == CONNECTING:
            self._disconnected(SERVICE_RESTART, "service restart")
            self.state = CLOSED
            self._close_transport()

    def abort(self) -> None:
        """Past the graceful-shutdown bound: drop the connection now (the app sees
        websocket.disconnect)."""
        if self.transport is not None:
            self.transport.abort()

    # -- what the client sent (called by _receive) ----------------------------------------

    def _on_data(self, data: Union[str, bytes], text: Optional[bool], last: bool) -> None:
        """A piece of a data message (a frame or part of one): `text` is the message's
        type, or None on a continuation; `last` ends the message."""
        if self.state != OPEN:
            return  # after our close frame the peer's messages are dropped
        if not self.parts:
            self.parts_text = bool(text)
        self.parts.append(data)
        if type(data) is str and not data.isascii():
            self.parts_size += len(data.encode("utf-8"))
        else:
            self.parts_size += len(data)
        if self.parts_size > self.settings.ws_max_size:
            self._fail_connection(MESSAGE_TOO_BIG, "message too big")
            return
        if not last:
            return
        parts = self.parts
        self.parts = []
        self.parts_size = 0
        payload = parts[0] if len(parts) == 1 else parts[0][:0].join(parts)
        if self.parts_text:
            if type(payload) is not str:
                try:
                    payload = bytes(payload).decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._fail_connection(INVALID_DATA, f"invalid UTF-8 at position {exc.start}")
                    return
            message = {"type": "websocket.receive", "text": payload}
        else:
            message = {"type": "websocket.receive", "bytes": bytes(payload)}
        messages = self.messages
        messages.append(message)
        self._wake()
        if len(messages) >= self.settings.ws_max_queue:
            self.flow.pause_reading()

    def _on_pong(self, payload: bytes) -> None:
        if self.pong_timer is not None and payload == self.ping_payload:
            self.pong_timer.cancel()
            self.pong_timer = None

    def _on_close(self, code: int, reason: str) -> None:
        """The peer's close frame: the answer to ours, or (after the subclass wrote
        the echo) the peer closing. The server closes TCP first (RFC 6455 7.1.1)."""
        if self.state == OPEN:
            self._disconnected(code, reason)
        self.state = CLOSED
        self._close_transport()

    def _fail_connection(self, code: int, reason: str, frame_sent: bool = False) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7) for a client that broke the
        protocol or stopped answering: a close frame with `code` (unless the library
        already sent it), then close TCP without waiting for the peer's."""
        if self.closed:
            return
        if self.state == OPEN and not frame_sent:
            self._write(self._close_frame(code, reason))
        error_logger.debug(
            "WebSocket %s failed with %d: %s", format_client(self.scope), code, reason
        )
        self._disconnected(code, reason)
        self.state = CLOSED
        self._close_transport()

    # -- the app ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            result = await self.settings.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                self._close_transport()
                raise
            log_app_exception(exc, self.disconnect is not None)
            self._app_failed()
        else:
            outcome = app_returned(
                result,
                self.message_error,
                self.state != CONNECTING,
                self.state != RESPONDING,
                self.disconnect is not None,
            )
            if outcome == APP_FAIL or self.state == RESPONDING:  # RESPONDING: incomplete
                self._app_failed()
            elif self.state == OPEN:
                self._start_closing(NORMAL_CLOSURE, "")
        finally:
            self.messages.clear()  # nobody will take them now
            self.parts = []

    def _app_failed(self) -> None:
        """The app raised, or broke the ASGI rules: 500 before it accepted (ASGI),
        1011 after, and an HTTP response it started ends where it stopped."""
        if self.closed:
            return
        if self.state == CONNECTING:
            self._refuse(INTERNAL_SERVER_ERROR)
        elif self.state == OPEN:
            self._start_closing(INTERNAL_ERROR, "")
        elif self.state == RESPONDING:
            self.state = CLOSED
            self._close_transport()

    async def receive(self) -> dict:
        if not self.connect_delivered:
            self.connect_delivered = True
            return dict(_CONNECT)
        messages = self.messages
        while not messages:
            if self.disconnect is not None:
                return dict(self.disconnect)
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        message = messages.popleft()
        if self.flow.read_paused and self.state == OPEN and len(messages) <= self.resume_at:
            self.flow.resume_reading()
        return message

    async def send(self, message) -> None:
        flow = self.flow
        if flow.write_paused and not self.closed:
            await flow.drain()
        try:
            self._send(message)
        except ASGIMessageError as exc:
            self.message_error = exc
            raise

    def _send(self, message) -> None:
        if self.app_closed:
            raise after_close(message)
        state = self.state
        if self.closed or state >= CLOSING:
            # ASGI 2.4: send() on a closed connection raises an OSError subclass.
            raise ClientDisconnected("the WebSocket is closed")
        message_type = message_type_of(message)
        if state == OPEN:
            if message_type == "websocket.send":
                self._write_held(self._data_frame(websocket_send(message)))
            elif message_type == "websocket.close":
                code, reason = websocket_close(message)
                self.app_closed = True
                self._disconnected(code, reason)
                self._start_closing(code, reason)
            else:
                raise unexpected_message(message, _OPEN_MESSAGES)
        elif state == RESPONDING:
            self._response_body(message)
        elif message_type == "websocket.accept":
            self._accept(message)
        elif message_type == "websocket.close":
            websocket_close(message)  # checked, though a refusal carries no code
            self.app_closed = True
            self._refuse(FORBIDDEN)
        elif message_type == _RESPONSE_START:
            status, headers = response_start(message, _RESPONSE_START)
            self.response_headers = check_headers(headers, _RESPONSE_START)
            self.response_status = status
            self.response_head_pending = True
            self.state = RESPONDING
        else:
            raise unexpected_message(message, _CONNECTING_MESSAGES)

    # -- answering the handshake ----------------------------------------------------------

    def _accept(self, message) -> None:
        subprotocol, headers = websocket_accept(message, self.scope["subprotocols"])
        headers = self._default_headers() + check_headers(headers, "websocket.accept")
        try:
            head = self._handshake(subprotocol, headers)
        except HandshakeRefused as exc:
            error_logger.debug(
                "WebSocket %s: handshake refused: %s", format_client(self.scope), exc
            )
            self._refuse(BAD_REQUEST)
            raise ClientDisconnected("the WebSocket handshake was refused") from exc
        self._write(head)
        self.state = OPEN
        if self.access_log:
            log_websocket_access(self.scope, SWITCHING_PROTOCOLS, self.started, headers)
        interval = self.settings.ws_ping_interval
        if interval is not None:
            self.ping_timer = self.loop.call_later(interval, self._keepalive)
        early = self.early_data
        if early:
            self.early_data = bytearray()
            self._receive(bytes(early))
        if self.state == OPEN and len(self.messages) < self.settings.ws_max_queue:
            self.flow.resume_reading()

    def _default_headers(self) -> list:
        """The Date and Server lines of every response, as (name, value) pairs."""
        return [
            tuple(line.split(b": ", 1))
            for line in self.server_state.default_head.split(b"\r\n")
            if line
        ]

    def _refuse(self, status: int) -> None:
        """Answer the handshake with a plain `status` response, and close."""
        self._write(plain_response(status, self.server_state.default_head))
        if self.access_log:
            log_websocket_access(self.scope, status, self.started, ())
        self._disconnected(ABNORMAL_CLOSURE)
        self.state = CLOSED
        self._close_transport()

    def _response_body(self, message) -> None:
        """websocket.http.response.body: the head goes out with the first one; the
        response ends the connection (`connection: close`), so a body without a
        length of its own runs until the close."""
        body, more_body = response_body(message, _RESPONSE_BODY)
        if self.response_head_pending:
            self.response_head_pending = False
            headers = self.response_headers
            names = {name.lower() for name, _ in headers}
            lines = [STATUS_LINES[self.response_status], self.server_state.default_head]
            lines.extend(b"%s: %s\r\n" % header for header in headers)
            if not more_body and b"content-length" not in names:
                lines.append(b"content-length: %d\r\n" % len(body))
            if b"connection" not in names:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            lines.append(body)
            self._write(b"".join(lines))
            if self.access_log:
                log_websocket_access(
                    self.scope, self.response_status, self.started, self.response_headers
                )
        else:
            self._write(body)
        if not more_body:
            self.app_closed = True
            self._disconnected(ABNORMAL_CLOSURE)
            self.state = CLOSED
            self._close_transport()

    # -- closing ----------------------------------------------------------------------------

    def _start_closing(self, code: int, reason: str) -> None:
        """Send a close frame; TCP closes when the peer answers with its own, or after
        CLOSE_TIMEOUT."""
        self._write(self._close_frame(code, reason))
        self.state = CLOSING
        self._stop_keepalive()
        self.flow.resume_reading()  # the peer's close frame must get past a full queue
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_transport)

    def _disconnected(self, code: int, reason: str = "") -> None:
        """The connection is over for the app: receive() returns this once the
        messages before it are taken. The first cause wins."""
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake()

    def _close_transport(self) -> None:
        """Close TCP once what is written has gone out; a peer that does not read
        would hold that forever, so it is cut off after CLOSE_TIMEOUT."""
        self._stop_keepalive()
        if not self.closed:
            self._flush_held()
            self.closed = True
            self.transport.close()
            self._cancel_close_timer()
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    # -- keepalive --------------------------------------------------------------------------

    def _keepalive(self) -> None:
        """Every ws_ping_interval: a ping, unless the last one is still unanswered
        (its deadline is running)."""
        self.ping_timer = self.loop.call_later(self.settings.ws_ping_interval, self._keepalive)
        if self.pong_timer is not None:
            return
        payload = os.urandom(PING_PAYLOAD_SIZE)
        self._write(self._ping_frame(payload))
        timeout = self.settings.ws_ping_timeout
        if timeout is not None:
            self.ping_payload = payload
            self.pong_timer = self.loop.call_later(timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self.pong_timer = None
        self._fail_connection(INTERNAL_ERROR, "keepalive ping timeout")

    def _stop_keepalive(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = None

    def _cancel_close_timer(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # -- helpers ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Any write but the app's data frames: after the frames still held."""
        if data and not self.closed:
            if self.held:
                self._flush_held()
            self.transport.write(data)

    def _write_held(self, frame: bytes) -> None:
        held = self.held
        held.append(frame)
        self.held_size += len(frame)
        if self.held_size >= HELD_FRAMES_MAX:
            self._flush_held()
        elif len(held) == 1:
            self.loop.call_soon(self._flush_held)

    def _flush_held(self) -> None:
        held = self.held
        if held:
            self.held = []
            self.held_size = 0
            if not self.closed:
                self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
