"""Pure-Python HTTP/1.1 protocol (``--http python``), parsing with h11.

Behaviour matches the C protocol in ``fastserve/_parser.pyx`` (llhttp, strict), and
the two files read side by side: the same class, attribute and method names for
the same things. Every rule that is not hot-path code lives once, in the modules
beside this one (headers, target, proxy, errors, framing, flow, pathsend) and in
``fastserve.protocols.asgi``.

How h11 is used
---------------
h11 is the *parser* only. Responses are written by this module (status line from
``headers``, cached Date/Server head, app headers, framing by ``framing``) because h11's writer is
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
  limit (414), head size (431), body size (413), a Content-Length over 2**64 - 1,
- the request-target grammar (``target.is_valid_target``; h11 takes any visible ASCII),
- a method llhttp does not know, as soon as the first bytes cannot start one.
CONNECT reads no body and closes after its response, as llhttp has it.
h11 itself rejects space before the colon, unknown transfer codings and a
missing Host in HTTP/1.1; all its errors become a 400.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Optional

import h11

from fastserve.logging import log_access
from fastserve.protocols.asgi import (
    ASGI_VERSION,
    DISCONNECTED,
    EARLY_HINT,
    PATHSEND,
    REQUEST_TASK_NAME,
    TRAILERS,
    ASGIMessageError,
    ClientDisconnected,
    after_complete,
    announces_trailers,
    message_type_of,
    response_body,
    response_start,
    start_task,
)
from fastserve.protocols.http import framing as fr
from fastserve.protocols.http.cycle import (
    app_finished,
    app_raised,
    broken_length,
    fail_connection,
    fail_cycle,
    lose_connection,
    open_connection,
    send_extension,
    send_path,
    shut_down,
    skip_body,
    timed_out,
    trailers_follow,
)
from fastserve.protocols.http.errors import (
    CONTENT_LONGER,
    CONTENT_SHORTER,
    HTTP2_PREFACE_START,
    log_invalid_request,
)
from fastserve.protocols.http.flow import HIGH_WATER_LIMIT
from fastserve.protocols.http.headers import STATUS_LINES, encode_response_headers
from fastserve.protocols.http.proxy import apply_proxy_headers
from fastserve.protocols.http.target import host_error, is_valid_target, request_paths
from fastserve.protocols.http2.negotiation import hand_over as hand_over_h2
from fastserve.protocols.tls import TLS
from fastserve.protocols.websockets.handshake import accept, hand_over, is_websocket_upgrade
from fastserve.protocols.wsgi.environ import ENVIRON_EXTENSION, head_variables

_H11_REQUEST = h11.Request
_H11_ERROR = h11.RemoteProtocolError
_H11_SERVER = h11.SERVER

# "\ncontent-length:" anywhere in a head (names cannot contain spaces in h11).
_CONTENT_LENGTH_RE = re.compile(rb"\ncontent-length:[ \t]*([^\r\n]*)", re.IGNORECASE)
# The Transfer-Encoding value as sent (h11 hands it over lowercased).
_TRANSFER_ENCODING_RE = re.compile(rb"\ntransfer-encoding:[ \t]*([^\r\n]*?)[ \t]*\r", re.IGNORECASE)
_CHUNKED_HEADER = (b"transfer-encoding", b"chunked")

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
}  # fmt: skip
# llhttp's method table also holds these (RTSP, ICE, the HTTP/2 preface); it
# matches them byte by byte and rejects them later in the request.
_OTHER_PARSER_METHODS = (
    b"ANNOUNCE", b"DESCRIBE", b"FLUSH", b"GET_PARAMETER", b"PAUSE", b"PLAY", b"PRI",
    b"RECORD", b"REDIRECT", b"SETUP", b"SET_PARAMETER", b"TEARDOWN",
)  # fmt: skip
# A request's first bytes that llhttp cannot match to a method cannot start a
# request (TLS on the plain port, binary garbage, `get`): 400 at once, as llhttp.
_PARSER_METHODS = (*_METHODS, *_OTHER_PARSER_METHODS)
_METHOD_MAX = max(len(m) for m in _PARSER_METHODS)
_METHOD_PREFIXES = {m[:i] for m in _PARSER_METHODS for i in range(1, len(m) + 1)}
# Bytes a request head may hold: HTAB, CR, LF, SP..~ and obs-text. Control bytes
# and DEL are a 400 in llhttp; h11 lets them through in field values.
_HEAD_BYTES = bytes([9, 10, 13]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
# Where CRLF CRLF starts when a head is the preface's first line and the empty line after it.
_PREFACE_LINE_END = len(HTTP2_PREFACE_START) - 2
# A CR not followed by LF: llhttp answers it at once, so a head that will never end
# in CRLF CRLF (`Host: x\r\r\n`) does not wait for the header timeout.
_LONE_CR_RE = re.compile(rb"\r[^\n]")

# Chunked request bodies, as strict as llhttp (see the module doc). A size line
# (without its CRLF); it must not end in ";" either (llhttp rejects "5;" and "5;a;").
# An extension value is a token, a quoted-string, or, as llhttp takes it, a token
# with a quoted-string right after it (`a=b"c"`).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]+)(?:;"
    + _TOKEN
    + rb"*(?:="
    + _TOKEN
    + rb'*(?:"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*")?)?)*'
)
# A trailer line with its CRLF (control bytes are checked with _HEAD_BYTES).
_TRAILER_RE = re.compile(_TOKEN + rb"+:[^\r\n]*\r\n")
_TRAILER_FORBIDDEN_RE = re.compile(rb"(?:content-length|transfer-encoding):", re.IGNORECASE)
_MAX_CHUNK_DIGITS = 16  # a size over 2**64 - 1 is llhttp's overflow error
_MAX_CONTENT_LENGTH = 2**64 - 1  # and so is a Content-Length over it
_SEMICOLON = ord(";")
_CR = ord("\r")
_LF = ord("\n")
# chunk_left states besides "data bytes still to come" (> 0)
_CHUNK_SIZE = 0  # a size line is next
_CHUNK_CRLF = -1  # the CRLF after chunk data is next
_CHUNK_TRAILERS = -2  # trailer lines (or the final empty line) are next

_DISCONNECT = {"type": "http.disconnect"}  # copied on return, never handed out itself
START = "http.response.start"
BODY = "http.response.body"


class H11Protocol(asyncio.Protocol):
    """asyncio Protocol for HTTP/1.1 over h11 (one per connection)."""

    __slots__ = (
        "settings", "server_state", "app_state", "loop", "transport", "flow", "access_log",
        "client", "server", "scheme", "tls", "context", "pending", "metrics", "scan_from", "chunk_left",
        "chunk_buf", "body_left", "cycle", "timer", "header_deadline", "closed",
        "shutting_down",
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
        self.tls = None  # the `tls` extension every scope references; None: plain TCP
        self.context = None
        self.pending = b""  # bytes not yet parsed: a partial head, or pipelined requests
        self.scan_from = 0  # where to look for the end of a partial head
        self.chunk_left = None  # in a chunked body: data bytes to come, or a _CHUNK_* state
        self.chunk_buf = b""  # the unfinished size / trailer line (or CR) of a chunked body
        self.body_left = 0  # Content-Length body bytes still to come
        self.cycle = None  # the request in flight (None: waiting for a head)
        self.timer = None
        self.header_deadline = 0.0
        self.closed = False
        self.shutting_down = False

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport) -> None:
        open_connection(self, transport)
        timeout = self.settings.timeout_request_header
        self.header_deadline = self.loop.time() + timeout
        self.timer = self.loop.call_later(timeout, self._on_timer)

    def connection_lost(self, exc) -> None:
        lose_connection(self)
        self.chunk_left = None
        self.chunk_buf = b""
        self.body_left = 0

    # eof_received: not defined, so asyncio closes the transport on EOF. A client
    # half-close cannot be told from a close; the app sees http.disconnect.

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.closed:
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
            self.pending += data
            self._pause_reading()
            return
        buf = self.pending
        if buf:  # a head in pieces: grow a bytearray, not a new bytes each time
            if type(buf) is bytes:
                buf = self.pending = bytearray(buf)
            buf += data
        else:
            self.pending = data
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        self._read_head()

    # -- server ---------------------------------------------------------------------

    def shutdown(self) -> None:
        shut_down(self)

    def abort(self) -> None:
        """Past the graceful-shutdown bound: drop the connection now (a running app
        sees http.disconnect)."""
        if not self.closed:
            self.transport.abort()

    # -- request head -----------------------------------------------------------------

    def _read_head(self) -> None:
        """Parse the request head at the start of self.pending, if it is complete,
        and start its request: the steps below, each failing with _Refused."""
        try:
            end = self._head_end()
            if end < 0:
                return
            buf = self.pending
            if type(buf) is not bytes:
                buf = bytes(buf)
            head = buf[: end + 2]
            content_length = _check_head(head, end, self.settings)
            event = _h11_request(buf[: end + 4], self.settings.limit_request_head)
            rest = buf[end + 4 :]
            self.pending = b""
            http_version, method = self._request_line(event, head)
            request = _Request(head, event, http_version, method, content_length)
            self._check_request(request)
        except _Refused as refused:
            self._fail(refused.status)
            return
        raw_path, query_string, path = request_paths(event.target, self.settings.root_path)
        scope = self._scope(request, raw_path, query_string, path)
        if self.settings.ws_protocol_class is not None and is_websocket_upgrade(request.headers):
            ws_scope = self._upgrade_head(scope, request.has_body)
            if ws_scope is not None:
                self._upgrade(ws_scope, rest)
            return
        self._start_request(scope, request, rest)

    def _head_end(self) -> int:
        """Where the head at the start of self.pending ends (its CRLF CRLF), or -1:
        not yet (the timer is armed), or never (_Refused), or the bytes are HTTP/2's
        (handed over)."""
        buf = self.pending
        if buf[0] in (_CR, _LF):  # empty lines before a request line are ignored
            buf = self.pending = buf.lstrip(b"\r\n")
            self.scan_from = 0
            if not buf:
                self._wait_head()
                return -1
        scan_from = self.scan_from
        limit_head = self.settings.limit_request_head
        end = buf.find(b"\r\n\r\n", scan_from)
        if 0 <= end and end + 4 <= limit_head:
            self.scan_from = 0
            # (only a head this short may be the preface's first line and its CRLF)
            if end == _PREFACE_LINE_END and self._http2(buf):
                return -1
            return end
        # first: llhttp refuses these at byte one, and HTTP/2's preface at its first line
        if not _may_start_request(buf) or buf.startswith(HTTP2_PREFACE_START):
            if self._http2(buf):
                return -1
            log_invalid_request(bytes(buf))
            raise _Refused(400)
        if len(buf) > limit_head:
            raise _Refused(431)
        if (
            buf.find(b"\n\n", scan_from) >= 0
            or buf.find(b"\n\r\n", scan_from) >= 0
            or _LONE_CR_RE.search(buf, scan_from) is not None
        ):
            raise _Refused(400)  # the head ended with a bare LF, or a CR without LF
        # search only the new bytes next time (a trickled head stays O(n))
        self.scan_from = max(0, len(buf) - 3)
        self._wait_head()
        return -1

    def _request_line(self, event, head: bytes) -> tuple[str, str]:
        """The version and method of h11's Request, as llhttp takes them."""
        http_version = _VERSIONS.get(event.http_version)
        method = _METHODS.get(event.method)
        if http_version is None or method is None or not is_valid_target(method, event.target):
            log_invalid_request(head)  # (HTTP/2's preface, for one)
            raise _Refused(400)
        limit_line = self.settings.limit_request_line
        if limit_line and len(event.target) > limit_line:
            raise _Refused(414)
        return http_version, method

    def _check_request(self, request: _Request) -> None:
        """The shared rules of a parsed head: Host, the body limit, concurrency."""
        if host_error(request.http_version, request.headers) is not None:
            raise _Refused(400)
        settings = self.settings
        limit_body = settings.limit_request_body
        if limit_body is not None and request.content_length > limit_body:
            raise _Refused(413)
        limit = settings.limit_concurrency
        if limit is not None:
            state = self.server_state
            if len(state.connections) > limit or len(state.tasks) >= limit:
                raise _Refused(503)

    def _scope(self, request: _Request, raw_path: bytes, query_string: bytes, path: str) -> dict:
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION.copy(),
            "http_version": request.http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": request.method,
            "root_path": self.settings.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "headers": request.headers,
            "state": self.app_state.copy(),
            # a new dict per scope, as "asgi"
            "extensions": {PATHSEND: {}, TRAILERS: {}, EARLY_HINT: {}},
        }
        if self.tls is not None:
            scope["extensions"][TLS] = self.tls
        if self.settings.wsgi:
            scope["extensions"][ENVIRON_EXTENSION] = head_variables(
                request.method,
                request.http_version,
                raw_path,
                query_string,
                request.headers,
                self.settings.root_path,
            )
        return scope

    def _start_request(self, scope: dict, request: _Request, rest: bytes) -> None:
        """The head is good: start the app's Task, then read the body that follows."""
        settings = self.settings
        if settings.proxy_headers:
            apply_proxy_headers(scope, settings.proxy_trust)
        cycle = RequestCycle(self, scope)
        cycle.keep_alive = request.keep_alive and not self.shutting_down
        cycle.http10 = request.http_version == "1.0"
        cycle.head_request = request.method == "HEAD"
        cycle.expect_100 = request.expect_100
        self.cycle = cycle
        self.header_deadline = 0.0
        # The app starts with the head, before any body byte is read (as in the C
        # mode): a body that then breaks a rule (400 / 413) is a disconnect to it.
        self.server_state.total_requests += 1
        task = start_task(self.loop, self.context, cycle.run(), REQUEST_TASK_NAME)
        tasks = self.server_state.tasks
        tasks[task] = scope
        task.add_done_callback(tasks.pop)
        if request.chunked:
            self.chunk_left = _CHUNK_SIZE
            self._read_chunked(rest)
        elif request.content_length > 0:
            self.body_left = request.content_length
            if rest:
                self._take_body(rest)
        else:
            cycle.message_complete = True
            self.pending = rest

    def _upgrade_head(self, scope: dict, has_body: bool) -> Optional[dict]:
        """A WebSocket handshake: refuse it (400 / 426; None), or its WebSocket scope."""
        ws_scope, refused = accept(
            scope, has_body, self.scheme == "https", self.settings, self.server_state
        )
        if refused is not None:
            self._fail(400, refused)
        return ws_scope

    def _upgrade(self, ws_scope: dict, rest: bytes) -> None:
        """Give the connection to the WebSocket protocol with the bytes that
        followed the handshake; this one is done."""
        self._let_go()
        hand_over(self.transport, self.settings, self.server_state, ws_scope, rest, self.loop)

    def _http2(self, buf) -> bool:
        """HTTP/2 with prior knowledge: with --http2, give the connection to the HTTP/2
        protocol with what came of it (the preface on), True; else False."""
        if self.settings.h2_protocol_class is None or not buf.startswith(HTTP2_PREFACE_START):
            return False
        self._let_go()
        self.pending = b""
        hand_over_h2(
            self.transport, self.settings, self.server_state, self.app_state,
            self.client, self.server, buf, self.loop,
        )  # fmt: skip
        return True

    def _let_go(self) -> None:
        """Another protocol takes the connection: forget it, reading on (paused when
        the hand-over was pipelined behind a request)."""
        self.closed = True
        self.server_state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flow.resume_reading()

    def _wait_head(self) -> None:
        """Part of a head is here (or none): time out at the head deadline."""
        if self.timer is None:
            delay = self.header_deadline - self.loop.time()
            if delay <= 0:
                self._close()
                return
            self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.cycle is None:
            self._close()

    # -- request body -----------------------------------------------------------------

    def _take_body(self, data: bytes) -> None:
        """Content-Length body bytes: framing is a count (the value was checked
        strictly at the head), so h11 is not needed for it."""
        left = self.body_left
        rest = b""
        if len(data) > left:
            rest = data[left:]
            data = data[:left]
        self.body_left = left = left - len(data)
        self._queue_body(data)
        if not left:
            self._body_complete(rest)

    def _queue_body(self, piece: bytes) -> None:
        """Body bytes for the app (the C mode's `_flush_body`): queued, the app
        woken; reading pauses above HIGH_WATER_LIMIT. Discarded once answered."""
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.expect_100 = False
        if cycle.body_chunks is None:
            cycle.body_chunks = [piece]
        else:
            cycle.body_chunks.append(piece)
        cycle.body_buffered += len(piece)
        cycle.wake()
        if cycle.body_buffered > HIGH_WATER_LIMIT:
            self._pause_reading()

    def _body_complete(self, rest: bytes) -> None:
        """The whole body is read (the C mode's `_message_complete`): parse `rest`
        now if the response is done, else once it is."""
        cycle = self.cycle
        cycle.message_complete = True
        cycle.expect_100 = False
        self.pending = rest
        if cycle.response_complete:
            self._cycle_done()
            self._resume_parsing()
        else:
            cycle.wake()
            if rest:
                self._pause_reading()

    def _read_chunked(self, data: bytes) -> None:
        """Decode chunked body bytes (strict like llhttp, see the module doc): one
        step per state of `chunk_left` until the bytes run out or the body ends."""
        buf = self.chunk_buf
        if buf:
            buf += data
            self.chunk_buf = b""
        else:
            buf = data
        pos = 0
        end = len(buf)
        try:
            while pos < end and self.chunk_left is not None:
                left = self.chunk_left
                if left > 0:
                    step = self._chunk_data(buf, pos, end)
                elif left == _CHUNK_CRLF:
                    step = self._chunk_crlf(buf, pos, end)
                else:
                    step = self._chunk_line(buf, pos, end)
                if step == pos:
                    break  # the rest waits for more bytes
                pos = step
        except _Refused as refused:
            self._fail(refused.status)
            return
        if self.chunk_left is None:  # the body ended: the rest is the next request
            self._body_complete(buf[pos:])
        elif pos < end:
            self.chunk_buf = buf[pos:]

    def _chunk_data(self, buf: bytes, pos: int, end: int) -> int:
        """Chunk data: sliced off for the app (counted against the body limit)."""
        left = self.chunk_left
        take = min(end - pos, left)
        piece = buf if take == end else buf[pos : pos + take]
        left -= take
        self.chunk_left = left if left else _CHUNK_CRLF
        cycle = self.cycle
        if not cycle.response_complete:  # (answered already: discarded)
            cycle.body_received += take
            limit_body = self.settings.limit_request_body
            if limit_body is not None and cycle.body_received > limit_body:
                raise _Refused(413)
            self._queue_body(piece)
        return pos + take

    def _chunk_crlf(self, buf: bytes, pos: int, end: int) -> int:
        """The CRLF after chunk data (a lone CR waits for its LF)."""
        if buf[pos] != _CR or (end - pos > 1 and buf[pos + 1] != _LF):
            raise _Refused(400)
        if end - pos == 1:
            return pos  # keep the CR
        self.chunk_left = _CHUNK_SIZE
        return pos + 2

    def _chunk_line(self, buf: bytes, pos: int, end: int) -> int:
        """A size line, a trailer line or the final empty line, once its LF is here."""
        lf = buf.find(b"\n", pos)
        if lf < 0:
            cr = buf.find(b"\r", pos)
            if end - pos > self.settings.limit_request_head or 0 <= cr < end - 1:
                raise _Refused(400)  # too long, or a CR without LF
            return pos
        if lf == pos or buf[lf - 1] != _CR:
            raise _Refused(400)  # bare LF
        if self.chunk_left == _CHUNK_SIZE:
            self.chunk_left = _chunk_size(buf, pos, lf)
        elif lf == pos + 1:  # the empty line: end of the body
            self.chunk_left = None
        else:  # a trailer field: checked, then ignored
            line = buf[pos : lf + 1]
            if (
                _TRAILER_RE.fullmatch(line) is None
                or line.translate(None, _HEAD_BYTES)
                or _TRAILER_FORBIDDEN_RE.match(line) is not None
            ):
                raise _Refused(400)
        return lf + 1

    # -- response done / next request -------------------------------------------------

    def _response_complete(self, cycle: RequestCycle) -> None:
        """Called by the cycle once the last response byte is written."""
        if self.metrics is not None:
            self._count_response(cycle)
        if not cycle.keep_alive or self.shutting_down or self.closed:
            self._close()
            return
        if not cycle.message_complete:
            skip_body(self, cycle)
            return
        self._cycle_done()
        self._resume_parsing()

    def _count_response(self, cycle: RequestCycle) -> None:
        """--metrics-port: one more response (complete, or the 500 for a failed app)."""
        scope = cycle.scope
        self.metrics.count_response(
            scope["http_version"], scope["method"], cycle.status,
            time.monotonic() - cycle.started, cycle.body_bytes,
        )  # fmt: skip

    def _cycle_done(self) -> None:
        """The request and its response are done: forget it, start the wait for the
        next head (its deadline; the keep-alive timer unless bytes of it are here)."""
        self.cycle = None
        self.header_deadline = self.loop.time() + self.settings.timeout_request_header
        if not self.pending and self.timer is None:
            self.timer = self.loop.call_later(self.settings.timeout_keep_alive, self._on_timer)

    def _resume_parsing(self) -> None:
        """Parse what the client pipelined meanwhile. Reading resumes only once
        that is used up (as in C mode): a client that pipelines without reading
        answers would otherwise get one more read buffered for each answer."""
        if self.pending:
            self._read_head()
            cycle = self.cycle
            if cycle is not None and (self.pending or cycle.body_buffered > HIGH_WATER_LIMIT):
                return
        self._resume_reading()

    # -- helpers ------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.closed:
            self.flow.pause_reading()

    def _resume_reading(self) -> None:
        if not self.closed:
            self.flow.resume_reading()

    def _out(self, data: bytes) -> None:
        self.transport.write(data)

    def _fail(self, status: int, response: Optional[bytes] = None) -> None:
        """A request the server answers itself (parse error, limit, refused
        handshake): answer with `response` or the canned one for `status`, close."""
        self.chunk_left = None
        self.chunk_buf = b""
        self.body_left = 0
        fail_connection(self, status, response)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None


class _Refused(Exception):
    """Bytes the server answers itself with `status`, then closes."""

    def __init__(self, status: int) -> None:
        self.status = status


def _check_head(head: bytes, end: int, settings) -> int:
    """What h11 accepts but llhttp (and we) reject, one pass per check; the
    Content-Length (-1: none)."""
    lines = head.count(b"\r\n")
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise _Refused(400)  # bare LF or CR
    if b"\n " in head or b"\n\t" in head:
        raise _Refused(400)  # obs-fold
    if head.translate(None, _HEAD_BYTES):
        log_invalid_request(head)
        raise _Refused(400)  # control bytes
    if lines - 1 > settings.limit_request_fields:
        raise _Refused(431)
    if settings.limit_request_field_size:
        _check_field_sizes(head, end, settings.limit_request_field_size)
    return _content_length(head)


def _check_field_sizes(head: bytes, end: int, limit_field_size: int) -> None:
    """A field's size is counted as the C mode counts it: name and value (from its
    first non-blank byte) plus 2, as if written `name: value`."""
    limit = limit_field_size - 1
    start = head.find(b"\r\n") + 2
    while start < end:
        stop = head.find(b"\r\n", start)
        if stop - start > limit:  # (the whole line is longer than that count)
            value = head.find(b":", start, stop) + 1
            blank = len(head[value:stop]) - len(head[value:stop].lstrip(b" \t"))
            if stop - start - blank > limit:
                raise _Refused(431)
        start = stop + 2


def _content_length(head: bytes) -> int:
    """The one plain-number Content-Length of a head (-1: none)."""
    found = _CONTENT_LENGTH_RE.findall(head)
    if not found:
        return -1
    value = found[0].strip()
    if len(found) > 1 or not value.isdigit():
        raise _Refused(400)
    content_length = int(value)
    if content_length > _MAX_CONTENT_LENGTH:
        raise _Refused(400)
    return content_length


def _h11_request(head: bytes, limit_head: int):
    """h11's Request for a whole head (a fresh Connection each, see the module doc)."""
    parser = h11.Connection(_H11_SERVER, max_incomplete_event_size=limit_head + 4)
    parser.receive_data(head)
    try:
        event = parser.next_event()
    except _H11_ERROR:
        raise _Refused(400) from None
    if type(event) is not _H11_REQUEST:  # cannot happen with a complete head
        raise _Refused(400)
    return event


class _Request:
    """What the head's fields say about the request: keep-alive, 100-continue,
    the body's framing; the headers as the app sees them."""

    __slots__ = (
        "http_version", "method", "headers", "content_length", "chunked", "keep_alive",
        "expect_100",
    )  # fmt: skip

    def __init__(self, head, event, http_version: str, method: str, content_length: int):
        self.http_version = http_version
        self.method = method
        self.headers = headers = list(event.headers)
        self.content_length = content_length
        self._read_fields(http_version == "1.0")
        if self.chunked:
            if content_length >= 0:
                raise _Refused(400)
            sent = _TRANSFER_ENCODING_RE.search(head).group(1)
            if sent != b"chunked":  # the app sees the header as sent, as in C mode
                headers[headers.index(_CHUNKED_HEADER)] = (b"transfer-encoding", sent)
        if method == "CONNECT":
            # No body, and no tunnel: close after the response (as the C mode does,
            # where llhttp reads no body for CONNECT).
            self.chunked = False
            self.content_length = -1
            self.keep_alive = False

    def _read_fields(self, http10: bool) -> None:
        keep_alive = not http10
        self.expect_100 = self.chunked = False
        for name, value in self.headers:
            if name == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip()
                    if token == b"close":
                        keep_alive = False
                        break
                    if token == b"keep-alive" and http10:
                        keep_alive = True
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"expect":
                if value.lower() == b"100-continue" and not http10:
                    self.expect_100 = True
        self.keep_alive = keep_alive

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


def _chunk_size(buf: bytes, pos: int, lf: int) -> int:
    """A chunk's size line (ending at `lf`): data bytes to come, or _CHUNK_TRAILERS
    for the last chunk."""
    match = _CHUNK_LINE_RE.fullmatch(buf, pos, lf - 1)
    if match is None or buf[lf - 2] == _SEMICOLON:
        raise _Refused(400)
    digits = match.group(1).lstrip(b"0")
    if len(digits) > _MAX_CHUNK_DIGITS:
        raise _Refused(400)
    return int(digits, 16) if digits else _CHUNK_TRAILERS


def _may_start_request(buf) -> bool:
    """Whether the first bytes of an unfinished head can begin a request line: a
    method name (or the start of one), then a space."""
    space = buf.find(b" ", 0, _METHOD_MAX + 1)
    if space < 0:
        return bytes(buf[: _METHOD_MAX + 1]) in _METHOD_PREFIXES
    return bytes(buf[:space]) in _PARSER_METHODS


class RequestCycle:
    """One request: the app's `receive` and `send`, and the response state."""

    __slots__ = (
        "protocol", "transport", "scope", "waiter", "message_error",
        "body_chunks", "body_buffered", "body_received", "message_complete",
        "final_delivered", "disconnected", "expect_100", "keep_alive", "http10",
        "head_request", "response_started", "head_pending", "response_complete",
        "app_chunked", "app_close", "status", "framing", "content_length", "written",
        "header_lines", "head", "response_headers", "started", "body_bytes", "trailers",
        "trailers_due", "trailer_lines",
    )  # fmt: skip

    def __init__(self, protocol: H11Protocol, scope: dict) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.scope = scope
        self.waiter = None
        self.message_error: Optional[BaseException] = None
        # request body
        self.body_chunks: Optional[list] = None  # None: no body bytes for the app
        self.body_buffered = 0
        self.body_received = 0
        self.message_complete = False
        self.final_delivered = False
        self.disconnected = False
        self.expect_100 = False
        self.keep_alive = True
        self.http10 = False
        self.head_request = False
        # response
        self.response_started = False
        self.head_pending = False  # started, head not written yet
        self.response_complete = False
        self.app_chunked = False
        self.app_close = False
        self.status = 0
        self.framing = fr.LENGTH
        self.content_length = -1  # the app's, or computed; -1: none
        self.written = 0
        self.header_lines = b""
        self.head = b""  # the whole head, once _framing has ended it
        self.response_headers = None  # the app's, for the access log
        # when the head was complete; body bytes handed to the transport
        self.started = time.monotonic()
        self.body_bytes = 0
        self.trailers = fr.NO_TRAILERS  # framing.py's trailer modes
        self.trailers_due = False  # the last body message is out, the trailers not yet
        self.trailer_lines = None  # the trailer section's field lines (TRAILERS_SENT)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app ------------------------------------------------------------------------

    async def run(self) -> None:
        # Hot-path twin of _parser.pyx's `run`; change both.
        protocol = self.protocol
        timer = None
        timeout = protocol.settings.timeout_request
        if timeout is not None:
            task = asyncio.current_task()
            timer = protocol.loop.call_later(timeout, timed_out, self, task, timeout)
        try:
            result = await protocol.settings.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if app_raised(self, exc):
                raise
        else:
            app_finished(self, result)
        finally:
            if timer is not None:
                timer.cancel()

    def _fail(self, status: int = 500) -> None:
        fail_cycle(self, status)

    async def receive(self):
        # Hot-path twin: the wait loop and the body handed out are written again in
        # _parser.pyx's `receive`; change both (the parity tests bind them).
        protocol = self.protocol
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        if self.body_chunks is None and (not self.message_complete or self.final_delivered):
            if self.expect_100 and not self.message_complete:
                self.expect_100 = False
                if not self.response_started and not protocol.closed:
                    self.transport.write(fr.CONTINUE_RESPONSE)
            while self.body_chunks is None and (not self.message_complete or self.final_delivered):
                if not self.message_complete:
                    protocol._resume_reading()
                waiter = self.waiter = protocol.loop.create_future()
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
        self.body_buffered = 0
        more_body = not self.message_complete
        if not more_body:
            self.final_delivered = True
        else:
            protocol._resume_reading()
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def send(self, message) -> None:
        # Hot-path twin of _parser.pyx's `send` (with its `_send`); change both.
        protocol = self.protocol
        if protocol.flow.write_paused and not self.disconnected and not protocol.closed:
            await protocol.flow.drain()
        if self.disconnected or protocol.closed:
            # ASGI 2.4: send() on a closed connection raises an OSError subclass
            # (Starlette's StreamingResponse stops on it).
            self.disconnected = True
            raise ClientDisconnected(DISCONNECTED)
        try:
            if not self.response_started:
                self._start(message)
            elif self.response_complete:
                raise after_complete(message)
            elif self.trailers_due:
                send_extension(self, message)
            elif self._body(message):
                await self._pathsend(message)
        except ASGIMessageError as exc:
            self.message_error = exc
            raise

    # -- response -------------------------------------------------------------------

    def _start(self, message) -> None:
        # Hot-path twin of _parser.pyx's `_start`; change both.
        if message_type_of(message) != START and send_extension(self, message):
            return  # (an early hint)
        status, headers = response_start(message)
        lines, content_length, app_chunked, close = encode_response_headers(headers, self.http10)
        self.response_started = True
        self.head_pending = True
        self.status = status
        self.response_headers = headers
        self.header_lines = lines
        self.content_length = content_length
        self.app_chunked = app_chunked
        if close:
            self.keep_alive = False
            self.app_close = True
        if announces_trailers(message):
            self.trailers = fr.trailer_mode(
                self.scope["headers"], status, content_length, self.http10, self.head_request
            )

    def _body(self, message) -> bool:
        """A body message; True when it is a pathsend instead (for `_pathsend`)."""
        message_type = message_type_of(message)
        if message_type == PATHSEND:
            return True
        if message_type != BODY and send_extension(self, message):
            return False
        body, more_body = response_body(message)
        if not more_body and self.trailers:  # (rare) trailers follow this message
            more_body = trailers_follow(self)
        if self.head_pending:
            self._first_body(body, more_body)
        else:
            self._more_body(body, more_body)
        return False

    async def _pathsend(self, message) -> None:
        await send_path(self, message)

    def _framing(self, n: int, more_body: bool) -> None:
        """Choose the framing at the first body message; end the head (self.head)."""
        protocol = self.protocol
        self.head_pending = False
        framing = fr.choose_framing(
            self.status, self.content_length, self.app_chunked, more_body, self.http10
        )
        lines = b""
        if framing == fr.LENGTH and self.content_length < 0:
            self.content_length = n
            lines = b"content-length: %d\r\n" % n
        elif framing == fr.CHUNKED and not self.app_chunked:
            lines = fr.CHUNKED_LINE
        elif framing == fr.UNTIL_CLOSE and not self.head_request:
            self.keep_alive = False
        if self.head_request:
            framing = fr.NONE  # the headers of a GET, no body bytes
        self.framing = framing
        if protocol.shutting_down:
            self.keep_alive = False
        if not self.keep_alive:
            if not self.app_close:
                lines += fr.CLOSE_LINE
        elif self.http10:
            lines += fr.KEEP_ALIVE_LINE
        self.head = b"".join(
            (
                STATUS_LINES[self.status],
                protocol.server_state.default_head,
                self.header_lines,
                lines,
                b"\r\n",
            )
        )

    def _write_head(self, extra: bytes) -> None:
        """Write the head `_framing` ended, and `extra` after it."""
        self.transport.write(self.head + extra)

    def _first_body(self, body, more_body: bool) -> None:
        # Hot-path twin of _parser.pyx's `_first_body` (the framing of the first body
        # message, written again there over a C buffer); change both.
        n = len(body)
        self._framing(n, more_body)
        head = self.head
        framing = self.framing
        data = b""
        tail = b""
        error = None
        if framing == fr.LENGTH:
            self.written = n
            if n > self.content_length:
                error = CONTENT_LONGER
            else:
                data = body
                self.body_bytes = n
                if not more_body and n < self.content_length:
                    error = CONTENT_SHORTER
        elif framing == fr.CHUNKED:
            self.body_bytes = n
            if n:
                head += b"%x\r\n" % n
                data = body
                tail = fr.CHUNK_END if more_body else fr.CHUNK_END + fr.LAST_CHUNK
            elif not more_body:
                head += fr.LAST_CHUNK
        elif framing == fr.UNTIL_CLOSE:
            data = body
            self.body_bytes = n
        # one write: head (+ body)
        if not data:
            self.transport.write(head)
        elif len(data) <= fr.JOIN_MAX:
            self.transport.write(b"".join((head, data, tail)))
        else:
            self.transport.writelines((head, data, tail) if tail else (head, data))
        if error is not None:
            self._length_error(error)
        elif not more_body:
            self._complete()

    def _more_body(self, body, more_body: bool) -> None:
        # Hot-path twin of _parser.pyx's `_more_body`; change both.
        n = len(body)
        framing = self.framing
        write = self.transport.write
        if framing == fr.LENGTH:
            self.written += n
            if self.written > self.content_length:
                self._length_error(CONTENT_LONGER)
                return
            if n:
                write(body)
                self.body_bytes += n
            if not more_body and self.written < self.content_length:
                self._length_error(CONTENT_SHORTER)
                return
        elif framing == fr.CHUNKED:
            self.body_bytes += n
            if n:
                tail = fr.CHUNK_END if more_body else fr.CHUNK_END + fr.LAST_CHUNK
                if n <= fr.JOIN_MAX:
                    write(b"%x\r\n%b%b" % (n, body, tail))
                else:
                    self.transport.writelines((b"%x\r\n" % n, body, tail))
            elif not more_body:
                write(fr.LAST_CHUNK)
        elif framing == fr.UNTIL_CLOSE:
            self.body_bytes += n
            if n:
                write(body)
        if not more_body:
            self._complete()

    def _complete(self) -> None:
        # Hot-path twin of _parser.pyx's `_complete`; change both.
        if self.trailers_due:
            return  # the body is out; the last trailers message completes the response
        protocol = self.protocol
        self.response_complete = True
        if protocol.access_log:
            log_access(
                self.scope, self.status, self.started, self.body_bytes, self.response_headers
            )
        self.wake()
        protocol._response_complete(self)

    def _length_error(self, reason: str) -> None:
        broken_length(self, reason)
