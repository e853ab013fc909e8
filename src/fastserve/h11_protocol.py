"""Pure-Python HTTP/1.1 protocol (``--http python``), parsing with h11.

Behaviour matches the C protocol in ``_parser.pyx`` (llhttp, strict); the shared
rules live in ``rules.py``.

How h11 is used
---------------
h11 is the *parser* only. Responses are written by this module (status line from
``rules``, cached Date/Server head, app headers, framing) because h11's writer is
slow and adds headers of its own. Feeding h11 responses just to advance its state
machine would cost more than parsing, and h11 cannot express HTTP/1.0 keep-alive
anyway (it always moves a 1.0 exchange to MUST_CLOSE). So each request gets a
fresh ``h11.Connection`` (about 1 µs): we find the end of the request head
ourselves, run the checks h11 is too lenient for once over the head bytes, hand
h11 exactly the head, and take the Request event from it.

Bodies are framed here, not by h11. A Content-Length body needs no parser: the
value was checked strictly above, so the protocol just counts bytes. A chunked
body goes through ``_read_chunked``, a small decoder as strict as llhttp (h11's
accepts whitespace after the chunk size, any chunk extension, obs-fold, bare LF
and control bytes in trailers, and waits for a CRLF after a bare LF): size lines
must be ``HEX *( ";" [token] [ "=" ( token / quoted-string ) ] ) CRLF`` not ending
in ";", chunk data must be followed by CRLF, trailer lines must be ``token ":"
value CRLF`` without control bytes and without Content-Length / Transfer-Encoding
(trailers are then ignored). Data bytes are sliced, never looped over. An
unfinished size or trailer line longer than the head limit is a 400 (llhttp has
no limit there; we must bound the buffer). Bytes after the body (pipelined
requests) wait in our own buffer until the current response is complete;
reading pauses meanwhile.

What we check ourselves, because h11 is lenient where llhttp is not:
- obs-fold (h11 joins folded lines), bare LF or CR line ends (h11 accepts LF),
- two Content-Length headers (h11 folds equal ones into one), a Content-Length
  that is not a plain number (h11 accepts ``5, 5``), Content-Length together with
  Transfer-Encoding (h11 lets chunked win),
- HTTP versions other than 1.0/1.1, header count/size limits (431), request-target
  limit (414), head size (431), body size (413).
h11 itself rejects space before the colon, unknown transfer codings and a
missing Host in HTTP/1.1; all its errors become a 400.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from typing import Optional

import h11

from fastserve import rules

try:  # the lead's logging module; the fallbacks keep this file importable alone
    from fastserve.logging import ACCESS_LOG_FORMAT, access_logger
except ImportError:  # pragma: no cover
    access_logger = logging.getLogger("fastserve.access")
    ACCESS_LOG_FORMAT = '%s - "%s %s HTTP/%s" %d'

error_logger = logging.getLogger("fastserve.error")

HIGH_WATER_LIMIT = 65536  # buffered unread request body before reading pauses

_H11_REQUEST = h11.Request
_H11_ERROR = h11.RemoteProtocolError
_H11_SERVER = h11.SERVER

# "\ncontent-length:" anywhere in a head (names cannot contain spaces in h11).
_CONTENT_LENGTH_RE = re.compile(rb"\ncontent-length:[ \t]*([^\r\n]*)", re.IGNORECASE)

# The methods llhttp knows in HTTP_REQUEST mode (llhttp.h HTTP_METHOD_MAP): the C
# mode answers any other method (h11 takes every token) with a 400, so we do too.
_METHODS = {
    m.encode("ascii"): m
    for m in (
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        "COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK",
        "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE",
        "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK",
        "UNLINK", "SOURCE", "QUERY",
    )
}
# Bytes a request head may hold: HTAB, CR, LF, SP..~ and obs-text. Control bytes
# and DEL are a 400 in llhttp; h11 lets them through in field values.
_HEAD_BYTES = bytes([9, 10, 13]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}

# Chunked request bodies, as strict as llhttp (see the module doc). A size line
# (without its CRLF); it must not end in ";" either (llhttp rejects "5;" and "5;a;").
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]+)(?:;" + _TOKEN + rb"*(?:=(?:" + _TOKEN
    + rb'*|"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"))?)*'
)
# A trailer line with its CRLF (control bytes are checked with _HEAD_BYTES).
_TRAILER_RE = re.compile(_TOKEN + rb"+:[^\r\n]*\r\n")
_TRAILER_FORBIDDEN_RE = re.compile(rb"(?:content-length|transfer-encoding):", re.IGNORECASE)
_MAX_CHUNK_DIGITS = 16  # a size over 2**64 - 1 is llhttp's overflow error
# chunk_left states besides "data bytes still to come" (> 0)
_CHUNK_SIZE = 0  # a size line is next
_CHUNK_CRLF = -1  # the CRLF after chunk data is next
_CHUNK_TRAILERS = -2  # trailer lines (or the final empty line) are next

_DISCONNECT = {"type": "http.disconnect"}  # copied on return, never handed out itself

# response framing modes
_LENGTH = 0  # content-length (from the app or computed)
_CHUNKED = 1
_UNTIL_CLOSE = 2  # HTTP/1.0 client, unknown length: body ends at close
_NONE = 3  # HEAD / 1xx / 204 / 304: no body bytes at all

_CLOSE_LINE = b"connection: close\r\n"
_KEEP_ALIVE_LINE = b"connection: keep-alive\r\n"
_CHUNKED_LINE = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_SINGLE_WRITE_MAX = 262144  # above this, head and body go in two writes (no copy)


class H11Protocol(asyncio.Protocol):
    __slots__ = (
        "config", "server_state", "app_state", "loop", "transport", "app",
        "root_path", "proxy_headers", "proxy_trust", "access_log",
        "limit_concurrency", "limit_head", "limit_line", "limit_fields",
        "limit_field_size", "limit_body", "timeout_keep_alive", "timeout_header",
        "client", "server", "scheme", "context", "buffer", "scan_from", "chunk_left",
        "chunk_buf", "body_left", "cycle",
        "read_paused", "write_paused", "drain_waiter", "timer", "head_deadline",
        "closing", "shutting_down",
    )

    def __init__(self, config, server_state, app_state: dict, _loop=None) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport = None
        self.app = config.loaded_app
        self.root_path = getattr(config, "root_path", "") or ""
        self.proxy_headers = bool(getattr(config, "proxy_headers", False))
        self.proxy_trust = getattr(config, "proxy_trust", None)
        if self.proxy_headers and self.proxy_trust is None:
            self.proxy_trust = rules.ProxyTrust(getattr(config, "forwarded_allow_ips", None))
        self.access_log = bool(getattr(config, "access_log", True))
        self.limit_concurrency = getattr(config, "limit_concurrency", None)
        self.limit_head = getattr(config, "limit_request_head", 65536) or 65536
        self.limit_line = getattr(config, "limit_request_line", 0) or 0
        fields = getattr(config, "limit_request_fields", 100)
        self.limit_fields = (1 << 62) if fields is None else fields
        self.limit_field_size = getattr(config, "limit_request_field_size", 0) or 0
        self.limit_body = getattr(config, "limit_request_body", None)
        self.timeout_keep_alive = getattr(config, "timeout_keep_alive", 5)
        self.timeout_header = getattr(config, "timeout_request_header", 30)
        self.client = self.server = None
        self.scheme = "http"
        self.context = None
        self.buffer = b""  # bytes not yet given to a parser (next request head)
        self.scan_from = 0  # where to look for the end of a partial head
        self.chunk_left = None  # in a chunked body: data bytes to come, or a _CHUNK_* state
        self.chunk_buf = b""  # the unfinished size / trailer line (or CR) of a chunked body
        self.body_left = 0  # Content-Length body bytes still to come
        self.cycle = None  # the request in flight (None: waiting for a head)
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter = None
        self.timer = None
        self.head_deadline = 0.0
        self.closing = False
        self.shutting_down = False

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server_state.connections.add(self)
        self.client = rules.get_remote_addr(transport)
        self.server = rules.get_local_addr(transport)
        self.scheme = "https" if rules.is_ssl(transport) else "http"
        # Every request Task is created inside a copy of this context, so a
        # contextvar set by one request never shows up in the next one.
        self.context = contextvars.copy_context()
        if self.access_log and not access_logger.isEnabledFor(logging.INFO):
            self.access_log = False
        self.head_deadline = self.loop.time() + self.timeout_header
        self.timer = self.loop.call_later(self.timeout_header, self._on_timeout)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server_state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.wake()
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self.chunk_left = None
        self.chunk_buf = b""
        self.body_left = 0
        self.buffer = b""

    # eof_received: not defined, so asyncio closes the transport on EOF. A client
    # half-close cannot be told from a close; the app sees http.disconnect.

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.body_left:  # in a Content-Length body
            self._take_body(data)
            return
        if self.chunk_left is not None:  # in a chunked body
            self._read_chunked(data)
            return
        if self.cycle is not None:
            # Pipelined data while a request is being answered: keep it, read no
            # more until the response is complete.
            self.buffer += data
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        buf = self.buffer
        if buf:  # a head in pieces: grow a bytearray, not a new bytes each time
            if type(buf) is bytes:
                buf = self.buffer = bytearray(buf)
            buf += data
        else:
            self.buffer = data
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        self._read_head()

    # -- server ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the current response."""
        self.shutting_down = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._close()
        else:
            cycle.keep_alive = False

    # -- request head -----------------------------------------------------------------

    def _read_head(self) -> None:
        """Parse the request head at the start of self.buffer, if it is complete."""
        buf = self.buffer
        if buf[0] in (13, 10):  # empty lines before a request line are ignored
            buf = buf.lstrip(b"\r\n")
            self.buffer = buf
            self.scan_from = 0
            if not buf:
                self._wait_head()
                return
        scan_from = self.scan_from
        end = buf.find(b"\r\n\r\n", scan_from)
        if end < 0 or end + 4 > self.limit_head:
            if len(buf) > self.limit_head:
                self._error(431)
            elif buf.find(b"\n\n", scan_from) >= 0 or buf.find(b"\n\r\n", scan_from) >= 0:
                self._error(400)  # the head ended with a bare LF
            else:
                # search only the new bytes next time (a trickled head stays O(n))
                self.scan_from = max(0, len(buf) - 3)
                self._wait_head()
            return
        self.scan_from = 0
        if type(buf) is not bytes:
            buf = bytes(buf)
        head = buf[: end + 2]

        # --- what h11 accepts but llhttp (and we) reject, in one pass per check ---
        lines = head.count(b"\r\n")
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            self._error(400)  # bare LF or CR
            return
        if b"\n " in head or b"\n\t" in head:
            self._error(400)  # obs-fold
            return
        if head.translate(None, _HEAD_BYTES):
            self._error(400)  # control bytes
            return
        if lines - 1 > self.limit_fields:
            self._error(431)
            return
        if self.limit_field_size:
            limit = self.limit_field_size + 2
            start = head.find(b"\r\n") + 2
            while start < end:
                stop = head.find(b"\r\n", start)
                if stop - start + 2 > limit:
                    self._error(431)
                    return
                start = stop + 2
        content_length = -1
        found = _CONTENT_LENGTH_RE.findall(head)
        if found:
            value = found[0].strip()
            if len(found) > 1 or not value.isdigit():
                self._error(400)
                return
            content_length = int(value)

        # --- h11 parses the head (fresh Connection per request, see module doc) ---
        parser = h11.Connection(_H11_SERVER, max_incomplete_event_size=self.limit_head + 4)
        size = end + 4
        if len(buf) == size:
            parser.receive_data(buf)
            rest = b""
        else:
            parser.receive_data(buf[:size])
            rest = buf[size:]
        self.buffer = b""
        try:
            event = parser.next_event()
        except _H11_ERROR:
            self._error(400)
            return
        if type(event) is not _H11_REQUEST:  # cannot happen with a complete head
            self._error(400)
            return

        http_version = _VERSIONS.get(event.http_version)
        method = _METHODS.get(event.method)
        if http_version is None or method is None:
            self._error(400)
            return
        target = event.target
        if self.limit_line and len(target) > self.limit_line:
            self._error(414)
            return
        headers = list(event.headers)
        keep_alive = http_version == "1.1"
        expect_100 = False
        chunked = False
        for name, value in headers:
            if name == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip()
                    if token == b"close":
                        keep_alive = False
                        break
                    if token == b"keep-alive" and http_version == "1.0":
                        keep_alive = True
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect":
                if value.lower() == b"100-continue" and http_version == "1.1":
                    expect_100 = True
        if chunked and content_length >= 0:
            self._error(400)
            return
        if rules.host_error(http_version, headers) is not None:
            self._error(400)
            return
        if self.limit_body is not None and content_length > self.limit_body:
            self._error(413)
            return
        limit = self.limit_concurrency
        if limit is not None:
            state = self.server_state
            if len(state.connections) > limit or len(state.tasks) >= limit:
                self._error(503)
                return

        raw_path, query_string = rules.split_target(target)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": self.root_path,
            "path": rules.decode_path(raw_path),
            "raw_path": raw_path,
            "query_string": query_string,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        if self.proxy_headers:
            rules.apply_proxy_headers(scope, self.proxy_trust)

        cycle = RequestResponseCycle(self, scope, keep_alive and not self.shutting_down)
        cycle.head = method == "HEAD"
        cycle.expect_100 = expect_100
        self.cycle = cycle
        if chunked:
            self.chunk_left = _CHUNK_SIZE
            self._read_chunked(rest)
            if self.closing:  # the body already broke a rule (400 / 413): no app
                return
        elif content_length > 0:
            self.body_left = content_length
            if rest:
                self._take_body(rest)
        else:
            cycle.more_body = False
            self.buffer = rest

        self.server_state.total_requests += 1
        task = self.context.run(self.loop.create_task, cycle.run())
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _wait_head(self) -> None:
        """Part of a head is here (or none): time out at the head deadline."""
        if self.timer is None:
            delay = self.head_deadline - self.loop.time()
            if delay <= 0:
                self._close()
                return
            self.timer = self.loop.call_later(delay, self._on_timeout)

    def _on_timeout(self) -> None:
        self.timer = None
        if self.cycle is None:
            self._close()

    # -- request body -----------------------------------------------------------------

    def _take_body(self, data: bytes) -> None:
        """Content-Length body bytes: framing is a count (the value was checked
        strictly at the head), so h11 is not needed for it."""
        left = self.body_left
        cycle = self.cycle
        if len(data) > left:
            rest = data[left:]
            data = data[:left]
        else:
            rest = b""
        left -= len(data)
        self.body_left = left
        if not cycle.response_complete:  # else: answered already, discard
            cycle.expect_100 = False
            cycle.body.append(data)
            size = cycle.body_size + len(data)
            cycle.body_size = size
            if left:
                cycle.wake()
                if size > HIGH_WATER_LIMIT and not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
        if not left:
            cycle.more_body = False
            self.buffer = rest
            if cycle.response_complete:
                self._next_request()
            else:
                cycle.wake()
                if rest and not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()

    def _read_chunked(self, data: bytes) -> None:
        """Decode chunked body bytes (strict like llhttp, see the module doc)."""
        cycle = self.cycle
        buf = self.chunk_buf
        if buf:
            buf += data
            self.chunk_buf = b""
        else:
            buf = data
        pos = 0
        end = len(buf)
        left = self.chunk_left
        while pos < end:
            if left > 0:  # chunk data
                take = end - pos
                if take > left:
                    take = left
                piece = buf if take == end else buf[pos : pos + take]
                pos += take
                left -= take
                if not left:
                    left = _CHUNK_CRLF
                if cycle.response_complete:  # answered already: discard the rest
                    continue
                cycle.expect_100 = False
                cycle.received += take
                if self.limit_body is not None and cycle.received > self.limit_body:
                    self._body_error(413)
                    return
                cycle.body.append(piece)
                cycle.body_size += take
                cycle.wake()
                if cycle.body_size > HIGH_WATER_LIMIT and not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
            elif left == _CHUNK_CRLF:
                if buf[pos] != 13 or (end - pos > 1 and buf[pos + 1] != 10):
                    self._body_error(400)
                    return
                if end - pos == 1:
                    break  # keep the CR
                pos += 2
                left = _CHUNK_SIZE
            else:  # a size line or a trailer line
                lf = buf.find(b"\n", pos)
                if lf < 0:
                    cr = buf.find(b"\r", pos)
                    if end - pos > self.limit_head or 0 <= cr < end - 1:
                        self._body_error(400)  # too long, or a CR without LF
                        return
                    break
                if lf == pos or buf[lf - 1] != 13:
                    self._body_error(400)  # bare LF
                    return
                if left == _CHUNK_SIZE:
                    match = _CHUNK_LINE_RE.fullmatch(buf, pos, lf - 1)
                    if match is None or buf[lf - 2] == 59:  # 59: ";"
                        self._body_error(400)
                        return
                    digits = match.group(1).lstrip(b"0")
                    if len(digits) > _MAX_CHUNK_DIGITS:
                        self._body_error(400)
                        return
                    left = int(digits, 16) if digits else _CHUNK_TRAILERS
                    pos = lf + 1
                elif lf == pos + 1:  # the empty line: end of the body
                    self.chunk_left = None
                    rest = buf[lf + 1 :]
                    cycle.more_body = False
                    cycle.expect_100 = False
                    if rest:
                        self.buffer = rest
                    if cycle.response_complete:
                        self._next_request()
                    else:
                        cycle.wake()
                        if rest and not self.read_paused:
                            self.read_paused = True
                            self.transport.pause_reading()
                    return
                else:  # a trailer field: checked, then ignored
                    line = buf[pos : lf + 1]
                    if (
                        _TRAILER_RE.fullmatch(line) is None
                        or line.translate(None, _HEAD_BYTES)
                        or _TRAILER_FORBIDDEN_RE.match(line) is not None
                    ):
                        self._body_error(400)
                        return
                    pos = lf + 1
        self.chunk_left = left
        if pos < end:
            self.chunk_buf = buf[pos:]

    def _body_error(self, status: int) -> None:
        cycle = self.cycle
        self.chunk_left = None
        self.chunk_buf = b""
        self.body_left = 0
        if cycle is not None:
            started = cycle.response_started
            cycle.disconnected = True
            cycle.keep_alive = False
            cycle.wake()
            if started:
                self._close()
                return
        self._error(status)

    # -- response done / next request -------------------------------------------------

    def _response_complete(self, cycle) -> None:
        """Called by the cycle once the last response byte is written."""
        if not cycle.keep_alive or self.shutting_down or self.closing:
            self._close()
            return
        if cycle.more_body:
            # The app answered without reading the whole body. Read and discard
            # it, then go on -- unless the client still waits for a 100 Continue
            # that never came: it might never send the body, so close.
            if cycle.expect_100:
                self._close()
                return
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            return
        self._next_request()

    def _next_request(self) -> None:
        self.cycle = None
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.head_deadline = self.loop.time() + self.timeout_header
        if self.buffer:
            self._read_head()
        elif self.timer is None:
            self.timer = self.loop.call_later(self.timeout_keep_alive, self._on_timeout)

    # -- helpers ------------------------------------------------------------------------

    def _error(self, status: int) -> None:
        """Answer with a canned error response and close (no app involved)."""
        self.chunk_left = None
        self.chunk_buf = b""
        self.body_left = 0
        self.buffer = b""
        if not self.closing:
            self.transport.write(rules.error_response(status))
            self._close()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.transport.close()
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None

    async def drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is None:
            waiter = self.drain_waiter = self.loop.create_future()
        await waiter


class RequestResponseCycle:
    """One request: the app's `receive` and `send`, and the response state."""

    __slots__ = (
        "protocol", "transport", "scope", "keep_alive", "head", "expect_100",
        "body", "body_size", "received", "more_body", "final_sent", "waiter",
        "disconnected", "response_started", "response_complete", "status",
        "header_lines", "content_length", "app_chunked", "head_pending", "mode",
        "written", "message_error", "app_close",
    )

    def __init__(self, protocol: H11Protocol, scope: dict, keep_alive: bool) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.scope = scope
        self.keep_alive = keep_alive
        self.head = False
        self.expect_100 = False
        # request body
        self.body = []
        self.body_size = 0
        self.received = 0
        self.more_body = True
        self.final_sent = False
        self.waiter = None
        self.disconnected = False
        # response
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.header_lines = b""
        self.content_length = -1
        self.app_chunked = False
        self.app_close = False
        self.head_pending = False
        self.mode = _LENGTH
        self.written = 0
        self.message_error: Optional[BaseException] = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app ------------------------------------------------------------------------

    async def run(self) -> None:
        protocol = self.protocol
        try:
            result = await protocol.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                protocol._close()
                raise
            rules.log_app_exception(exc, self.disconnected)
            self._fail()
        else:
            outcome = rules.app_returned(
                result,
                self.message_error,
                self.response_started,
                self.response_complete,
                self.disconnected,
            )
            if outcome == rules.APP_FAIL:
                self._fail()
            elif outcome == rules.APP_CLOSE:
                protocol._close()

    def _fail(self) -> None:
        protocol = self.protocol
        if not self.response_started and not self.disconnected and not protocol.closing:
            self.response_started = True
            self.response_complete = True
            self.transport.write(rules.error_response(500))
        self.response_complete = True
        self.wake()
        protocol._close()

    async def receive(self):
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        if not self.body and (self.more_body or self.final_sent):
            protocol = self.protocol
            if self.expect_100 and self.more_body:
                self.expect_100 = False
                if not self.response_started and not protocol.closing:
                    self.transport.write(rules.CONTINUE_RESPONSE)
            while not self.body and (self.more_body or self.final_sent):
                if protocol.read_paused and self.more_body:
                    protocol.read_paused = False
                    self.transport.resume_reading()
                waiter = self.waiter = protocol.loop.create_future()
                try:
                    await waiter
                finally:
                    self.waiter = None
                if self.disconnected or self.response_complete:
                    return dict(_DISCONNECT)
        body = self.body
        if len(body) == 1:
            data = body[0]
        else:
            data = b"".join(body)
        body.clear()
        self.body_size = 0
        more_body = self.more_body
        if not more_body:
            self.final_sent = True
        else:
            protocol = self.protocol
            if protocol.read_paused:
                protocol.read_paused = False
                self.transport.resume_reading()
        return {"type": "http.request", "body": data, "more_body": more_body}

    async def send(self, message) -> None:
        protocol = self.protocol
        if protocol.write_paused and not self.disconnected and not protocol.closing:
            await protocol.drain()
        if self.disconnected or protocol.closing:
            # ASGI 2.4: send() on a closed connection raises an OSError subclass
            # (Starlette's StreamingResponse stops on it).
            self.disconnected = True
            raise rules.ClientDisconnected("the client disconnected")
        if not self.response_started:
            try:
                status, headers = rules.response_start(message)
                lines, content_length, app_chunked, close = rules.encode_response_headers(headers)
            except rules.ASGIMessageError as exc:
                self.message_error = exc
                raise
            self.response_started = True
            self.head_pending = True
            self.status = status
            self.header_lines = lines
            self.content_length = content_length
            self.app_chunked = app_chunked
            if close:
                self.keep_alive = False
                self.app_close = True
            return
        if self.response_complete:
            exc = rules.ASGIMessageError(
                "Unexpected ASGI message %r sent, after response already completed."
                % (message.get("type") if isinstance(message, dict) else message,)
            )
            self.message_error = exc
            raise exc
        try:
            body, more_body = rules.response_body(message)
        except rules.ASGIMessageError as exc:
            self.message_error = exc
            raise

        transport = self.transport
        head = self._build_head(body, more_body) if self.head_pending else None
        mode = self.mode
        error = None
        if mode == _LENGTH:
            written = self.written + len(body)
            self.written = written
            if written > self.content_length:
                error = "Response content longer than Content-Length"
                data = body[: len(body) - (written - self.content_length)]
            else:
                data = body
                if not more_body and written < self.content_length:
                    error = "Response content shorter than Content-Length"
        elif mode == _CHUNKED:
            if body:
                data = b"%x\r\n%b\r\n" % (len(body), body)
                if not more_body:
                    data += _LAST_CHUNK
            else:
                data = b"" if more_body else _LAST_CHUNK
        elif mode == _NONE:
            data = b""
        else:  # _UNTIL_CLOSE
            data = body
        if head is not None:
            if not data:
                transport.write(head)
            elif len(data) <= _SINGLE_WRITE_MAX:
                transport.write(head + data)
            else:
                transport.write(head)
                transport.write(data)
        elif data:
            transport.write(data)
        if error is not None:
            self._length_error(error)
            return

        if not more_body:
            self.response_complete = True
            if protocol.access_log:
                self._log_access()
            self.wake()
            protocol._response_complete(self)

    def _build_head(self, body, more_body: bool) -> bytes:
        """Choose the framing and build the whole response head."""
        self.head_pending = False
        status = self.status
        framing = b""
        if rules.status_has_no_body(status):
            self.mode = _NONE
        elif self.content_length >= 0:
            self.mode = _LENGTH
        elif self.app_chunked:
            self.mode = _CHUNKED
        elif not more_body:
            self.mode = _LENGTH
            self.content_length = len(body)
            framing = b"content-length: %d\r\n" % len(body)
        elif self.scope["http_version"] == "1.1":
            self.mode = _CHUNKED
            framing = _CHUNKED_LINE
        else:
            self.mode = _UNTIL_CLOSE
            if not self.head:
                self.keep_alive = False
        if self.head:
            self.mode = _NONE  # same headers as GET, no body bytes
        protocol = self.protocol
        if protocol.shutting_down:
            self.keep_alive = False
        if not self.keep_alive:
            if not self.app_close:
                framing += _CLOSE_LINE
        elif self.scope["http_version"] == "1.0":
            framing += _KEEP_ALIVE_LINE
        return b"".join(
            (
                rules.STATUS_LINES[status],
                protocol.server_state.default_head,
                self.header_lines,
                framing,
                b"\r\n",
            )
        )

    def _length_error(self, reason: str) -> None:
        error_logger.error(reason)
        self.response_complete = True
        self.keep_alive = False
        self.disconnected = True
        self.wake()
        self.protocol._close()

    def _log_access(self) -> None:
        scope = self.scope
        client = scope.get("client")
        query = scope["query_string"]
        path = scope["raw_path"].decode("latin-1")
        if query:
            path = path + "?" + query.decode("latin-1")
        access_logger.info(
            ACCESS_LOG_FORMAT,
            "%s:%d" % (client[0], client[1]) if client else "-",
            scope["method"],
            path,
            scope["http_version"],
            self.status,
        )
