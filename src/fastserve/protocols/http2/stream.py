"""The ASGI side of one HTTP/2 stream, apart from the frame library (hypercorn's
model): the request's scope from its decoded header list, `receive` with the request
body and its flow control, `send` with the response state. Both modes' connections drive it
(connection.py: h2_impl.py over `h2`, nghttp2_impl.py over the C mode's nghttp2
session). The names are the HTTP/1.1 `RequestCycle`s' (`run`, `receive`, `send`,
`_start`, `_body`, `_pathsend`, `_complete`, `_fail`, `wake`, `body_chunks`,
`message_complete`...; docs/architecture.md) for the same things.

What a stream asks of its connection (`protocol`), whatever parses the frames:
`send_head(cycle, status, headers, end_stream)` (a HEADERS frame), `send_data(cycle,
data, end_stream)` (DATA frames, as the stream's and the connection's windows and the
transport let them go: None once handed over, else an awaitable to wait on;
ClientDisconnected once the stream or the connection is gone),
`send_trailers(cycle, fields)` (the last HEADERS frame, ending the stream, after the
DATA handed over), `send_informational(cycle, status, fields)` (a 1xx HEADERS frame),
`reset_stream(cycle, error_code)`, `body_consumed(cycle, n)` (the app took `n` body
bytes: their window opens again), `answer(cycle, status)` (the server's own short
response; its body's size), `_response_complete(cycle)` (counted, forgotten), and
`settings`, `server_state`, `loop`, `access_log`, `client`, `server`, `scheme`, `tls`,
`app_state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Optional

from fastserve.logging import HTTP2_VERSION, HTTP2_VERSION_TEXT, log_access
from fastserve.protocols.asgi import (
    APP_DONE,
    ASGI_VERSION,
    DISCONNECTED,
    EARLY_HINT,
    PATHSEND,
    TRAILERS,
    ASGIMessageError,
    ClientDisconnected,
    after_complete,
    announces_trailers,
    app_returned,
    bad_header,
    early_hint_links,
    log_app_exception,
    message_type_of,
    pathsend_after_body,
    response_body,
    response_pathsend,
    response_start,
    response_trailers,
    unexpected_trailers,
)
from fastserve.protocols.http.cycle import timed_out
from fastserve.protocols.http.errors import (
    CONTENT_LONGER,
    CONTENT_SHORTER,
    INTERNAL_SERVER_ERROR,
    error_logger,
)
from fastserve.protocols.http.framing import (
    EARLY_HINTS_STATUS,
    NO_TRAILERS,
    TRAILERS_SENT,
    http2_trailer_mode,
)
from fastserve.protocols.http.headers import (
    CONNECTION_SPECIFIC,
    checked_header,
    is_token,
    link_fields,
    trailer_fields,
)
from fastserve.protocols.http.pathsend import length_error, open_path, read_block
from fastserve.protocols.http.proxy import PROXY_HEADER_NAMES, apply_proxy_headers
from fastserve.protocols.http.target import is_valid_target, request_paths
from fastserve.protocols.tls import TLS
from fastserve.protocols.wsgi.environ import ENVIRON_EXTENSION, head_variables

# RFC 9113 7: the error codes a stream is reset with.
NO_ERROR = 0x0
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
# Responses without content (RFC 9110 6.4.1): their HEADERS end the stream.
NO_CONTENT_STATUSES = frozenset((204, 304))

_DISCONNECT = {"type": "http.disconnect"}  # copied on return, never handed out itself


class StreamRefused(Exception):
    """A stream's request the server answers itself with `status` (the HTTP/1.1
    protocols' `_Refused`): the connection goes on."""

    def __init__(self, status: int) -> None:
        self.status = status


class RequestHead:
    """What a stream's header list asks for: method, target (`:path`), the headers
    as the app sees them (`host` first, from `:authority`), the Content-Length, and
    whether a proxy header is among them (`forwarded`)."""

    __slots__ = ("method", "target", "headers", "content_length", "forwarded")

    def __init__(
        self, method: str, target: bytes, headers: list, content_length: int, forwarded: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.content_length = content_length
        self.forwarded = forwarded


def read_head(header_list, settings) -> RequestHead:
    """The request of a decoded header list (pseudo-header fields first, names in
    lowercase, as the frame layer checked them: RFC 9113 8.2-8.3) under the limits
    an HTTP/1.1 head has; StreamRefused with the status otherwise."""
    # (:scheme is not taken: the connection's is the scope's)
    pseudo = {name: value for name, value in header_list if name[:1] == b":"}
    return request_head(
        pseudo.get(b":method"),
        pseudo.get(b":path"),
        pseudo.get(b":authority"),
        header_list,
        settings,
    )


def request_head(
    method: Optional[bytes], path: Optional[bytes], authority: Optional[bytes], fields, settings
) -> RequestHead:
    """read_head's request from its pseudo-header values (None: absent) and its
    header fields (pseudo-header fields among them are passed over), as a frame
    layer that splits them hands them over (the C mode's session)."""
    headers = []
    host = None
    cookie_at = -1
    content_length = -1
    forwarded = False
    field_size = settings.limit_request_field_size
    for name, value in fields:
        if name[:1] == b":":
            continue
        if field_size and len(name) + len(value) + 2 > field_size:
            raise StreamRefused(431)
        if name == b"host":
            host = value
            continue
        if name == b"cookie":  # crumbs sent apart are one header (RFC 9113 8.2.3)
            if cookie_at >= 0:
                headers[cookie_at] = (name, headers[cookie_at][1] + b"; " + value)
                continue
            cookie_at = len(headers)
        elif name == b"content-length" and value.isdigit():
            content_length = int(value)
        elif name in PROXY_HEADER_NAMES:
            forwarded = True
        headers.append((name, value))
    if len(headers) >= settings.limit_request_fields:  # (with `host`, added below)
        raise StreamRefused(431)
    method = _method(method)
    target = _target(method, path, settings.limit_request_line)
    if authority is not None:
        host = authority
    if host is None:
        raise StreamRefused(400)
    headers.insert(0, (b"host", host))
    limit_body = settings.limit_request_body
    if limit_body is not None and content_length > limit_body:
        raise StreamRefused(413)
    return RequestHead(method, target, headers, content_length, forwarded)


def _method(value: Optional[bytes]) -> str:
    if value is None or not is_token(value):
        raise StreamRefused(400)
    return value.decode("ascii")


def _target(method: str, target: Optional[bytes], limit_line: int) -> bytes:
    """`:path`, by the HTTP/1.1 target rules (CONNECT, which has none, is refused:
    no tunnels)."""
    if target is None or not is_valid_target(method, target):
        raise StreamRefused(400)
    if limit_line and len(target) > limit_line:
        raise StreamRefused(414)
    return target


def stream_scope(protocol, head: RequestHead) -> dict:
    """The `http` scope of a stream: the connection's facts, the same --root-path and
    proxy trust as HTTP/1.1's."""
    settings = protocol.settings
    raw_path, query_string, path = request_paths(head.target, settings.root_path)
    scope = {
        "type": "http",
        "asgi": ASGI_VERSION.copy(),
        "http_version": HTTP2_VERSION,
        "server": protocol.server,
        "client": protocol.client,
        "scheme": protocol.scheme,
        "method": head.method,
        "root_path": settings.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": head.headers,
        "state": protocol.app_state.copy(),
        "extensions": {PATHSEND: {}, TRAILERS: {}, EARLY_HINT: {}},
    }
    if protocol.tls is not None:
        scope["extensions"][TLS] = protocol.tls
    if settings.wsgi:
        scope["extensions"][ENVIRON_EXTENSION] = head_variables(
            head.method,
            HTTP2_VERSION_TEXT,
            raw_path,
            query_string,
            head.headers,
            settings.root_path,
        )
    if head.forwarded and settings.proxy_headers:
        apply_proxy_headers(scope, settings.proxy_trust)
    return scope


def response_headers(headers) -> tuple[list, int]:
    """The app's response headers as HTTP/2 sends them, checked by the HTTP/1.1 rules
    (headers.py's tables): names lowercased, the connection-specific ones dropped;
    and the Content-Length (-1: none)."""
    fields = []
    content_length = -1
    for header in headers:
        name, value = checked_header(header)
        name = name.lower()
        if name in CONNECTION_SPECIFIC:
            continue
        if name == b"content-length":
            if not value.strip().isdigit():
                raise bad_header(name, value)
            content_length = int(value)
        fields.append((name, value))
    return fields, content_length


class StreamCycle:
    """One stream's request: the app's `receive` and `send`, and the response state."""

    __slots__ = (
        "protocol", "stream_id", "scope", "waiter", "window_waiter", "message_error",
        "body_chunks", "body_buffered", "body_received", "message_complete",
        "final_delivered", "disconnected", "head_request", "no_content",
        "response_started", "head_pending", "response_complete", "status",
        "header_list", "content_length", "written", "response_headers", "started",
        "body_bytes", "trailers", "trailers_due", "trailer_list",
    )  # fmt: skip

    def __init__(self, protocol, stream_id: int, scope: dict, started: float) -> None:
        self.protocol = protocol
        self.stream_id = stream_id
        self.scope = scope
        self.waiter = None  # receive() waiting for body bytes
        self.window_waiter = None  # send() waiting for the peer's window to open
        self.message_error: Optional[BaseException] = None
        # request body
        self.body_chunks: Optional[list] = None  # None: no body bytes for the app
        self.body_buffered = 0  # received, not handed to the app (their window is closed)
        self.body_received = 0
        self.message_complete = False
        self.final_delivered = False
        self.disconnected = False
        self.head_request = scope["method"] == "HEAD"
        self.no_content = self.head_request  # (or a status without content)
        # response
        self.response_started = False
        self.head_pending = False  # started, HEADERS not sent yet
        self.response_complete = False
        self.status = 0
        self.header_list: list = []
        self.content_length = -1  # the app's; -1: none
        self.written = 0  # body bytes the app sent
        self.response_headers = None  # the app's, for the access log
        self.started = started  # when the request's headers were complete
        self.body_bytes = 0  # body bytes handed to the connection
        self.trailers = NO_TRAILERS  # framing.py's trailer modes
        self.trailers_due = False  # the last body message is sent, the trailers not yet
        self.trailer_list: list = []  # the trailer fields to send (TRAILERS_SENT)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wake_sender(self) -> None:
        """The stream's window (or the connection's) opened, or the stream is gone."""
        waiter = self.window_waiter
        if waiter is not None:
            self.window_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app ------------------------------------------------------------------------

    async def run(self) -> None:
        protocol = self.protocol
        timer = None
        timeout = protocol.settings.timeout_request
        if timeout is not None:
            task = asyncio.current_task()
            timer = protocol.loop.call_later(timeout, timed_out, self, task, timeout)
        try:
            result = await protocol.settings.app(self.scope, self.receive, self.send)
        except (asyncio.CancelledError, GeneratorExit):
            self._fail()  # (the stream only: the connection's other streams go on)
            raise
        except BaseException as exc:
            log_app_exception(exc, self.disconnected)
            self._fail()
        else:
            outcome = app_returned(
                result,
                self.message_error,
                self.response_started,
                self.response_complete,
                self.disconnected,
            )
            if outcome != APP_DONE:
                self._fail()
        finally:
            if timer is not None:
                timer.cancel()

    def _fail(self, status: int = INTERNAL_SERVER_ERROR) -> None:
        """The app failed, broke its response or timed out: `status` if its HEADERS are
        not sent yet, else RST_STREAM INTERNAL_ERROR. The connection goes on."""
        if self.response_complete:
            return
        protocol = self.protocol
        self.response_complete = True
        self.wake()
        if self.disconnected:
            return  # (the stream was forgotten when it went)
        if not self.response_started or self.head_pending:
            self.response_started = True
            self.head_pending = False
            self.status = status
            self.body_bytes = protocol.answer(self, status)
            if protocol.access_log:
                log_access(self.scope, status, self.started, self.body_bytes, None)
        else:
            self.status = 0  # (not counted as a response)
            protocol.reset_stream(self, INTERNAL_ERROR)
        protocol._response_complete(self)

    async def receive(self):
        # The twin of the HTTP/1.1 cycles' `receive`, over a stream's flow control.
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        while self.body_chunks is None and (not self.message_complete or self.final_delivered):
            waiter = self.waiter = self.protocol.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
            if self.disconnected or self.response_complete:
                return dict(_DISCONNECT)
        chunks = self.body_chunks
        if chunks is None:
            body = b""
        elif len(chunks) == 1:
            body = chunks[0]
        else:
            body = b"".join(chunks)
        self.body_chunks = None
        taken = self.body_buffered
        self.body_buffered = 0
        if taken:
            self.protocol.body_consumed(self, taken)
        more_body = not self.message_complete
        if not more_body:
            self.final_delivered = True
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def send(self, message) -> None:
        if self.disconnected:
            # ASGI 2.4: send() on a closed stream raises an OSError subclass
            raise ClientDisconnected(DISCONNECTED)
        try:
            if self.response_complete:
                raise after_complete(message)
            if self.trailers_due:
                await self._trailers(message)
                return
            message_type = message_type_of(message)
            if message_type == EARLY_HINT:
                self._early_hint(message)
            elif not self.response_started:
                self._start(message)
            elif message_type == PATHSEND:
                await self._pathsend(message)
            elif message_type == TRAILERS:
                raise unexpected_trailers(message, self.trailers != NO_TRAILERS)
            else:
                waiting = self._body(message)
                if waiting is not None:  # (most bodies go out without waiting)
                    await waiting
        except ASGIMessageError as exc:
            self.message_error = exc
            raise

    # -- response -------------------------------------------------------------------

    def _start(self, message) -> None:
        status, headers = response_start(message)
        self.header_list, self.content_length = response_headers(headers)
        self.response_started = True
        self.head_pending = True
        self.status = status
        self.response_headers = headers
        if status in NO_CONTENT_STATUSES:
            self.no_content = True
        if announces_trailers(message):
            self.trailers = http2_trailer_mode(self.scope["headers"])

    def _early_hint(self, message) -> None:
        """`http.response.early_hint`: a 103 HEADERS frame, while the response's own
        are not sent (after them, ignored: the extension lets a server)."""
        fields = link_fields(early_hint_links(message))
        if not self.response_started or self.head_pending:
            self.protocol.send_informational(self, EARLY_HINTS_STATUS, fields)

    async def _trailers(self, message) -> None:
        """`http.response.trailers` after the last body message: gathered until the
        last (`more_trailers` false), then the last HEADERS frame ends the stream
        (an empty DATA frame when there are none to send)."""
        headers, more_trailers = response_trailers(message)
        fields = trailer_fields(headers)
        if self.trailers == TRAILERS_SENT:
            self.trailer_list += fields
        if more_trailers:
            return
        self.trailers_due = False
        if self.trailer_list:
            self.protocol.send_trailers(self, self.trailer_list)
        else:
            await self._sent(b"", True)
        self._complete()

    def _body_ended(self) -> bool:
        """The last body message: True when trailers follow it (the stream stays
        open for them)."""
        if self.trailers != NO_TRAILERS:
            self.trailers_due = True
        return self.trailers_due

    def _body(self, message) -> Optional[Awaitable]:
        """`http.response.body`; what the sender must await when the body cannot go
        out at once (None: it went)."""
        body, more_body = response_body(message)
        end_stream = not more_body and not self._body_ended()
        if self.head_pending and self._write_head(len(body), more_body, end_stream):
            self._complete()
            return None
        if self.no_content:  # HEAD, 204, 304: the headers alone
            return self._body_sent(b"", end_stream) if end_stream else None
        self.written += len(body)
        content_length = self.content_length
        if content_length >= 0 and self.written > content_length:
            self._length_error(CONTENT_LONGER)
            return None
        if content_length >= 0 and not more_body and self.written < content_length:
            self._length_error(CONTENT_SHORTER)
            return None
        return self._body_sent(body, end_stream)

    def _body_sent(self, body: bytes, end_stream: bool) -> Optional[Awaitable]:
        waiting = self.protocol.send_data(self, body, end_stream)
        if waiting is not None:
            return self._body_sent_later(waiting, len(body), end_stream)
        self.body_bytes += len(body)
        if end_stream:
            self._complete()
        return None

    async def _body_sent_later(self, waiting: Awaitable, n: int, end_stream: bool) -> None:
        await waiting
        self.body_bytes += n
        if end_stream:
            self._complete()

    async def _sent(self, data: bytes, end_stream: bool) -> None:
        """protocol.send_data, waited for when it must."""
        waiting = self.protocol.send_data(self, data, end_stream)
        if waiting is not None:
            await waiting

    def _write_head(self, n: int, more_body: bool, end_stream: bool) -> bool:
        """Send the HEADERS at the first body message (a body of `n` bytes, all of
        it unless `more_body`; `end_stream` unless more body or trailers follow):
        with its Content-Length when the app gave none (a HEAD request's too, as a
        GET's would be, as over HTTP/1.1). True when they end the stream (no body
        follows)."""
        self.head_pending = False
        fields = self.protocol.server_state.default_headers + self.header_list
        with_length = not self.no_content or self.head_request
        if self.content_length < 0 and not more_body and with_length:
            fields.append((b"content-length", b"%d" % n))
        end_stream = end_stream and (self.no_content or n == 0 >= self.content_length)
        self.protocol.send_head(self, self.status, fields, end_stream)
        return end_stream

    async def _pathsend(self, message) -> None:
        """`http.response.pathsend`: the file's bytes as DATA frames, read in blocks
        (pathsend.read_block), each sent as the windows allow."""
        if not self.head_pending:
            raise pathsend_after_body(message)
        opened = open_path(response_pathsend(message))
        try:
            size = opened.size
            if self.content_length >= 0 and self.content_length != size:
                self._length_error(length_error(self.content_length, size))
                return
            end_stream = not self._body_ended()
            if self._write_head(size, False, end_stream) or self.no_content:
                if end_stream:
                    self._complete()
                return
            sent = await self._send_file(opened, size, end_stream)
        finally:
            opened.close()
        if sent < size:  # the file shrank since it was opened
            self._length_error(CONTENT_SHORTER)
        elif end_stream:
            self._complete()

    async def _send_file(self, opened, size: int, end_stream: bool) -> int:
        protocol = self.protocol
        sent = 0
        while sent < size:
            data = await read_block(protocol.loop, opened, size - sent)
            if not data:
                break
            sent += len(data)
            await self._sent(data, end_stream and sent >= size)
            self.body_bytes = sent
        return sent

    def _complete(self) -> None:
        self.response_complete = True
        if self.protocol.access_log:
            log_access(
                self.scope, self.status, self.started, self.body_bytes, self.response_headers
            )
        self.wake()
        self.protocol._response_complete(self)

    def _length_error(self, reason: str) -> None:
        """The app broke its own Content-Length: logged, the stream reset (its
        HEADERS may be out; nothing of the message that broke it is sent)."""
        error_logger.error(reason)
        self.status = 0  # (not counted as a response)
        self.response_complete = True
        self.wake()
        self.protocol.reset_stream(self, INTERNAL_ERROR)
        self.protocol._response_complete(self)
