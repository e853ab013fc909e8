# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C mode, HTTP/2: a sans-I/O server session over libnghttp2 (vendor/nghttp2).

``ServerSession`` is the core the HTTP/2 protocol is to drive (that protocol comes
next); it does no I/O. One connection, as the code runs it:

1. The session starts with its SETTINGS queued (``MAX_CONCURRENT_STREAMS``,
   ``STREAM_WINDOW``, ``MAX_HEADER_LIST_SIZE``) and the connection window opened to
   ``CONNECTION_WINDOW``; ``data_to_send()`` returns them (``nghttp2_session_mem_send2``).
2. ``receive(data)`` hands the transport's bytes to ``nghttp2_session_mem_recv2``.
   nghttp2 checks the frames and the header rules of RFC 9113 (pseudo-headers,
   lowercase names, connection-specific fields) and answers a violation itself, with
   RST_STREAM or GOAWAY (a field it would drop, ``on_invalid_header``, resets the
   stream); so do its rate limiters (rapid reset, "glitches"). Its
   callbacks are ``cdef`` functions with the session as ``user_data``: a request's
   pseudo-header values and header names / values are copied into the stream's C
   buffer with their spans, body bytes into the stream's body buffer. No Python
   object is made per header or per DATA frame.
3. When a request's head is complete, its Python objects are made once and reported
   as a ``REQUEST`` event; body bytes are reported once (``DATA``) until the protocol
   takes them (``take_body``), and only then does their flow-control window reopen
   (the session never updates windows by itself): a stream buffers at most its
   window, a connection at most ``CONNECTION_WINDOW``.
4. ``submit_response`` queues the response HEADERS and, for a body, a data provider
   that reads the stream's own response buffer; ``send_body`` adds to that buffer
   (and wakes a provider that ran dry), ending the stream when told;
   ``send_trailers`` ends it with a trailer HEADERS frame instead, which the provider
   submits once the buffer is framed whole (its last DATA without END_STREAM);
   ``submit_informational`` queues a 1xx HEADERS frame (an early hint) before them.
5. Events (tuples, first item the kind) are taken by ``receive`` or ``take_events``:
   ``(REQUEST, stream_id, method, scheme, authority, path, headers, end_stream)``,
   ``(DATA, stream_id)``, ``(END, stream_id)`` (the request body is complete),
   ``(CLOSED, stream_id, error_code)`` (a reported stream is gone: answered, reset by
   the client, or refused by nghttp2), ``(GOAWAY, last_stream_id, error_code)``,
   ``(PING_ACK, 0)`` (the client acknowledged the PING of ``ping``).

A head over ``max_header_list_size`` (RFC 9113's size: names, values, 32 bytes each)
is answered 431 here, as the HTTP/1.1 mode answers a head over its limit.

The attack bounds are protocols/http2/limits.py's: nghttp2's own limiters are set
from them (its stream reset rate limit, its glitch rate limit: empty DATA, PRIORITY,
unknown frames, malformed requests; max_outbound_ack, max_continuations), and what
nghttp2 does not count is spent here from the connection's ``FloodLimits`` (the
``limits`` argument): PING and SETTINGS frames (``control_frames``), the client's
RST_STREAMs and the ones nghttp2 sends for the client's frames (``stream_resets``).
Over a bound, the session ends with GOAWAY ENHANCE_YOUR_CALM (nghttp2's stream reset
limit, should it come first, says INTERNAL_ERROR).
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memmove

from fastserve cimport _nghttp2 as ng
from fastserve._buffer cimport Buf, buf_add, buf_free, buf_reserve
from fastserve._clock cimport monotonic

from fastserve.protocols.http2 import limits as _limits

NGHTTP2_VERSION = (<bytes>ng.NGHTTP2_VERSION).decode("ascii")

# The settings a session starts with (RFC 9113 6.5.2), and its connection window.
MAX_CONCURRENT_STREAMS = 100
STREAM_WINDOW = 1 << 20
MAX_FRAME_SIZE = 16384  # the protocol's default (RFC 9113 6.5.2)
CONNECTION_WINDOW = 4 << 20  # at most this much unread request body per connection
MAX_HEADER_LIST_SIZE = 65536  # the HTTP/1.1 mode's default --limit-request-head

# Event kinds: the first item of each event tuple.
# Which FloodLimits bucket a frame is spent from (ServerSession._spend).
cdef enum FloodKind:
    FLOOD_CONTROL_FRAMES
    FLOOD_STREAM_RESETS

cdef enum EventKind:
    EV_REQUEST = 1
    EV_DATA
    EV_END
    EV_CLOSED
    EV_GOAWAY
    EV_PING_ACK
REQUEST = EV_REQUEST
DATA = EV_DATA
END = EV_END
CLOSED = EV_CLOSED
GOAWAY = EV_GOAWAY
PING_ACK = EV_PING_ACK

# The status of a head over the header list size (as the HTTP/1.1 mode's head limit).
cdef bytes _HEAD_TOO_LARGE = b"431"
# The opaque data of the session's PINGs (ping(): a graceful shutdown's, keep-alive's).
cdef bytes _SERVER_PING = _limits.SERVER_PING
# RFC 9113 6.5.2: each field counts its name, its value and this overhead.
cdef enum:
    NO_CODE = -1  # an event with no error code (_event)
    FIELD_OVERHEAD = 32
    SETTINGS_COUNT = 4  # the SETTINGS a session starts with
    RING_SIZE = 256  # the closed streams remembered (_on_closed_stream)
    FRAME_HEADER = 9  # RFC 9113 4.1
    CLIENT_MAGIC = 24  # the connection preface's fixed bytes (RFC 9113 3.4)
    # a scratch buffer grown past this is freed after use (as _parser.pyx does)
    BUFFER_SHRINK_ABOVE = 1048576

cdef unsigned char _LOWER[256]
cdef int _i
for _i in range(256):
    _LOWER[_i] = (_i + 32) if 65 <= _i <= 90 else _i


class HTTP2Error(Exception):
    """nghttp2 refused a call (its message and error number)."""


cdef int _check(int rv) except -1:
    if rv < 0:
        raise HTTP2Error(rv, (<bytes>ng.nghttp2_strerror(rv)).decode("ascii"))
    return 0


# -- one stream ------------------------------------------------------------------------

cdef enum Pseudo:
    PSEUDO_METHOD
    PSEUDO_SCHEME
    PSEUDO_AUTHORITY
    PSEUDO_PATH
    PSEUDO_COUNT


cdef struct Span:
    Py_ssize_t off
    Py_ssize_t len


cdef struct Stream:
    int32_t id
    Stream* prev                # the session's list of open streams (freed at the end)
    Stream* next
    # the request head: pseudo-header values, then header names and values, in `head`
    Buf head
    Buf spans                   # Span pairs (name, value) of the regular headers
    Span pseudo[<int>PSEUDO_COUNT]
    Py_ssize_t head_size        # RFC 9113's header list size so far
    bint too_large              # over max_header_list_size: answered 431, body dropped
    bint reported               # its REQUEST event was made
    # the request body: bytes not yet taken, and whether DATA was reported for them
    Buf body_in
    bint body_reported
    # the response body: bytes queued for the data provider, from `out_sent` on
    Buf body_out
    Py_ssize_t out_sent
    bint responded              # its response head is submitted
    bint out_ended
    bint out_deferred           # the provider ran dry: resume it when bytes come
    bint out_trailers           # trailer fields end it (ServerSession.trailer_fields)


cdef void _stream_free(Stream* s) noexcept:
    buf_free(&s.head)
    buf_free(&s.spans)
    buf_free(&s.body_in)
    buf_free(&s.body_out)
    free(s)


cdef inline bytes _span_bytes(Stream* s, Span span):
    return PyBytes_FromStringAndSize(s.head.data + span.off, span.len)


cdef inline object _pseudo(Stream* s, int which):
    """The pseudo-header's value, or None when the request had none (CONNECT)."""
    if s.pseudo[which].off < 0:
        return None
    return _span_bytes(s, s.pseudo[which])


cdef list _headers_of(Stream* s):
    cdef Span* spans = <Span*>s.spans.data
    cdef Py_ssize_t i, count = s.spans.len // sizeof(Span)
    cdef list headers = []
    for i in range(0, count, 2):
        headers.append((_span_bytes(s, spans[i]), _span_bytes(s, spans[i + 1])))
    return headers


cdef inline int _add_span(Stream* s, const uint8_t* data, size_t length, Span* span) noexcept:
    span.off = s.head.len
    span.len = length
    return buf_add(&s.head, <const char*>data, length)


cdef int _pseudo_index(const uint8_t* name, size_t namelen) noexcept:
    """Which pseudo-header a name is (nghttp2 checked it is a request's), -1: another."""
    if namelen == 7 and memcmp(name, b":method", 7) == 0:
        return PSEUDO_METHOD
    if namelen == 7 and memcmp(name, b":scheme", 7) == 0:
        return PSEUDO_SCHEME
    if namelen == 10 and memcmp(name, b":authority", 10) == 0:
        return PSEUDO_AUTHORITY
    if namelen == 5 and memcmp(name, b":path", 5) == 0:
        return PSEUDO_PATH
    return -1


cdef int _store_header(Stream* s, const uint8_t* name, size_t namelen,
                       const uint8_t* value, size_t valuelen) noexcept:
    """A field of the request head into the stream's buffers; -1: out of memory."""
    cdef Span pair[2]
    cdef int which
    if name[0] == 58:  # ':'
        which = _pseudo_index(name, namelen)
        if which < 0:
            return 0  # :protocol is refused by nghttp2 (no extended CONNECT)
        return _add_span(s, value, valuelen, &s.pseudo[which])
    if _add_span(s, name, namelen, &pair[0]) < 0 or _add_span(s, value, valuelen, &pair[1]) < 0:
        return -1
    return buf_add(&s.spans, <const char*>pair, sizeof(pair))


# -- nghttp2's callbacks ---------------------------------------------------------------

cdef inline Stream* _stream(ng.nghttp2_session* session, int32_t stream_id) noexcept:
    return <Stream*>ng.nghttp2_session_get_stream_user_data(session, stream_id)


cdef int on_begin_headers(ng.nghttp2_session* session, const ng.nghttp2_frame* frame,
                          void* user_data) noexcept:
    cdef ServerSession self = <ServerSession>user_data
    cdef Stream* s
    cdef int which
    if frame.hd.type != ng.NGHTTP2_HEADERS or frame.headers.cat != ng.NGHTTP2_HCAT_REQUEST:
        return 0
    s = <Stream*>calloc(1, sizeof(Stream))
    if s == NULL:
        return ng.NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # RST_STREAM INTERNAL_ERROR
    s.id = frame.hd.stream_id
    for which in range(<int>PSEUDO_COUNT):
        s.pseudo[which].off = -1
    s.next = self.streams
    if self.streams != NULL:
        self.streams.prev = s
    self.streams = s
    ng.nghttp2_session_set_stream_user_data(session, s.id, s)
    return 0


cdef int on_header(ng.nghttp2_session* session, const ng.nghttp2_frame* frame,
                   const uint8_t* name, size_t namelen, const uint8_t* value, size_t valuelen,
                   uint8_t flags, void* user_data) noexcept:
    cdef ServerSession self = <ServerSession>user_data
    cdef Stream* s
    if frame.hd.type != ng.NGHTTP2_HEADERS or frame.headers.cat != ng.NGHTTP2_HCAT_REQUEST:
        return 0  # trailer fields: ASGI has no request trailers
    s = _stream(session, frame.hd.stream_id)
    if s == NULL or s.too_large:
        return 0
    s.head_size += namelen + valuelen + FIELD_OVERHEAD
    if s.head_size > self.max_header_list_size:
        s.too_large = True
        return 0
    if _store_header(s, name, namelen, value, valuelen) < 0:
        return ng.NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    return 0


cdef int on_invalid_header(ng.nghttp2_session* session, const ng.nghttp2_frame* frame,
                           const uint8_t* name, size_t namelen, const uint8_t* value,
                           size_t valuelen, uint8_t flags, void* user_data) noexcept:
    """A regular field nghttp2 would drop by default (a bad name or value character,
    a bad Host): RFC 9113 8.2.1 makes the request malformed, as the HTTP/1.1 mode's
    400 does. This return has nghttp2 reset the stream (PROTOCOL_ERROR)."""
    return ng.NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef int on_data_chunk_recv(ng.nghttp2_session* session, uint8_t flags, int32_t stream_id,
                            const uint8_t* data, size_t length, void* user_data) noexcept:
    cdef ServerSession self = <ServerSession>user_data
    cdef Stream* s = _stream(session, stream_id)
    if length == 0:
        return 0  # (a DATA report with no bytes would never be taken)
    if s == NULL or s.too_large:
        # A refused request's body: dropped, its window given back at once.
        ng.nghttp2_session_consume(session, stream_id, length)
        return 0
    if buf_add(&s.body_in, <const char*>data, length) < 0:
        return ng.NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
    if not s.body_reported:
        s.body_reported = True
        return self._event(EV_DATA, stream_id, NO_CODE)
    return 0


cdef int on_frame_recv(ng.nghttp2_session* session, const ng.nghttp2_frame* frame,
                       void* user_data) noexcept:
    cdef ServerSession self = <ServerSession>user_data
    cdef Stream* s
    if frame.hd.type == ng.NGHTTP2_GOAWAY:
        return self._event(EV_GOAWAY, frame.goaway.last_stream_id, frame.goaway.error_code)
    if frame.hd.type == ng.NGHTTP2_PING or frame.hd.type == ng.NGHTTP2_SETTINGS:
        if not frame.hd.flags & ng.NGHTTP2_FLAG_ACK:
            return self._spend(FLOOD_CONTROL_FRAMES)  # (nghttp2 answers it: counted)
        if frame.hd.type == ng.NGHTTP2_PING and \
                memcmp(frame.ping.opaque_data, PyBytes_AS_STRING(_SERVER_PING), 8) == 0:
            return self._event(EV_PING_ACK, 0, NO_CODE)
        return 0
    if frame.hd.type == ng.NGHTTP2_RST_STREAM:
        return self._spend(FLOOD_STREAM_RESETS)
    if frame.hd.type != ng.NGHTTP2_HEADERS and frame.hd.type != ng.NGHTTP2_DATA:
        return 0
    s = _stream(session, frame.hd.stream_id)
    if s == NULL:
        return 0
    if frame.hd.type == ng.NGHTTP2_HEADERS and frame.headers.cat == ng.NGHTTP2_HCAT_REQUEST:
        return self._head_complete(s, frame.hd.flags & ng.NGHTTP2_FLAG_END_STREAM)
    if frame.hd.flags & ng.NGHTTP2_FLAG_END_STREAM and s.reported:
        return self._event(EV_END, s.id, NO_CODE)
    return 0


cdef int on_begin_frame(ng.nghttp2_session* session, const ng.nghttp2_frame_hd* hd,
                        void* user_data) noexcept:
    """What nghttp2 lets through of RFC 9113 6.3 and 5.1 (it ignores PRIORITY, and
    forgets a closed stream): a PRIORITY on stream 0 is a PROTOCOL_ERROR; HEADERS on a
    stream that is not open, ServerSession._on_closed_stream (DATA: at receive, as
    nghttp2 calls this for no DATA frame it ignores)."""
    cdef ServerSession self = <ServerSession>user_data
    if hd.type == ng.NGHTTP2_PRIORITY:
        if hd.stream_id == 0:
            ng.nghttp2_session_terminate_session(session, ng.NGHTTP2_PROTOCOL_ERROR)
        return 0
    if hd.type == ng.NGHTTP2_HEADERS:
        return self._on_closed_stream(hd.stream_id)
    return 0


cdef inline bint _in_ring(int32_t* ring, int32_t stream_id) noexcept:
    cdef int i
    for i in range(<int>RING_SIZE):
        if ring[i] == stream_id:
            return True
    return False


cdef int on_frame_send(ng.nghttp2_session* session, const ng.nghttp2_frame* frame,
                       void* user_data) noexcept:
    """A RST_STREAM nghttp2 sent for the client's frames (a stream error it provoked,
    a stream refused) counts as the client's own reset (MadeYouReset); the protocol's
    (NO_ERROR, INTERNAL_ERROR, CANCEL) do not."""
    cdef ServerSession self = <ServerSession>user_data
    cdef uint32_t code
    if frame.hd.type != ng.NGHTTP2_RST_STREAM:
        return 0
    self.reset_ids[self.reset_at] = frame.hd.stream_id
    self.reset_at = (self.reset_at + 1) % RING_SIZE
    code = frame.rst_stream.error_code
    if code == ng.NGHTTP2_NO_ERROR or code == ng.NGHTTP2_INTERNAL_ERROR or \
            code == ng.NGHTTP2_CANCEL:
        return 0
    return self._spend(FLOOD_STREAM_RESETS)


cdef int on_stream_close(ng.nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                         void* user_data) noexcept:
    cdef ServerSession self = <ServerSession>user_data
    cdef Stream* s = _stream(session, stream_id)
    cdef int rv = 0
    self.closed_ids[self.closed_at] = stream_id
    self.closed_at = (self.closed_at + 1) % RING_SIZE
    if s == NULL:
        return 0
    if s.body_in.len:
        # Body bytes never taken: their connection window comes back.
        ng.nghttp2_session_consume_connection(session, s.body_in.len)
    if s.reported:
        rv = self._event(EV_CLOSED, stream_id, error_code)
    if s.out_trailers:
        self._forget_trailers(stream_id)
    ng.nghttp2_session_set_stream_user_data(session, stream_id, NULL)
    self._unlink(s)
    _stream_free(s)
    return rv


cdef ng.nghttp2_ssize read_body(ng.nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                                size_t length, uint32_t* data_flags,
                                ng.nghttp2_data_source* source, void* user_data) noexcept:
    """The data provider: DATA from the stream's response buffer; deferred while it is
    empty and the response goes on."""
    cdef Stream* s = <Stream*>source.ptr
    cdef Py_ssize_t n = s.body_out.len - s.out_sent
    if n == 0 and not s.out_ended:
        s.out_deferred = True
        return ng.NGHTTP2_ERR_DEFERRED
    if n > <Py_ssize_t>length:
        n = length
    if n:  # (an empty buffer may have no memory: memcpy takes no NULL, even for 0 bytes)
        memcpy(buf, s.body_out.data + s.out_sent, n)
    s.out_sent += n
    if s.out_sent == s.body_out.len:
        s.out_sent = s.body_out.len = 0
        if s.out_ended:
            data_flags[0] |= ng.NGHTTP2_DATA_FLAG_EOF
            if s.out_trailers:
                # the stream ends with the trailers' HEADERS, queued now (after this DATA)
                data_flags[0] |= ng.NGHTTP2_DATA_FLAG_NO_END_STREAM
                return n if (<ServerSession>user_data)._submit_trailers(s) == 0 \
                    else ng.NGHTTP2_ERR_CALLBACK_FAILURE
    return n


cdef ng.nghttp2_session_callbacks* _CALLBACKS = NULL


cdef ng.nghttp2_session_callbacks* _callbacks() except NULL:
    """One callbacks table for every session (nghttp2 copies it into each)."""
    global _CALLBACKS
    if _CALLBACKS == NULL:
        _check(ng.nghttp2_session_callbacks_new(&_CALLBACKS))
        ng.nghttp2_session_callbacks_set_on_begin_headers_callback(_CALLBACKS, on_begin_headers)
        ng.nghttp2_session_callbacks_set_on_header_callback(_CALLBACKS, on_header)
        ng.nghttp2_session_callbacks_set_on_invalid_header_callback(_CALLBACKS, on_invalid_header)
        ng.nghttp2_session_callbacks_set_on_frame_recv_callback(_CALLBACKS, on_frame_recv)
        ng.nghttp2_session_callbacks_set_on_frame_send_callback(_CALLBACKS, on_frame_send)
        ng.nghttp2_session_callbacks_set_on_begin_frame_callback(_CALLBACKS, on_begin_frame)
        ng.nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_CALLBACKS, on_data_chunk_recv)
        ng.nghttp2_session_callbacks_set_on_stream_close_callback(_CALLBACKS, on_stream_close)
    return _CALLBACKS


# -- the session -----------------------------------------------------------------------

@cython.final
cdef class ServerSession:
    """One HTTP/2 server connection's nghttp2 session, fed and drained in memory."""

    cdef ng.nghttp2_session* session
    cdef Stream* streams        # every stream with a request head begun, until closed
    cdef list events
    cdef object cb_exc          # an exception raised inside a callback, re-raised after
    cdef Buf out                # what data_to_send() gathers
    cdef Buf nv_text            # submit_response's lowercased names and values
    cdef dict trailer_fields    # stream id -> the trailer fields its provider submits
    cdef readonly Py_ssize_t max_header_list_size
    cdef object limits          # the connection's limits.FloodLimits (None: not counted)
    cdef readonly bint flooded  # a flood bound was crossed: GOAWAY ENHANCE_YOUR_CALM
    # the ids of the streams closed lately, and of those the server reset (on_begin_frame)
    cdef int32_t closed_ids[<int>RING_SIZE]
    cdef int32_t reset_ids[<int>RING_SIZE]
    cdef int closed_at, reset_at
    # the frame headers followed by receive(): bytes to the next one, a partial one
    cdef Py_ssize_t scan_skip
    cdef uint8_t scan_hdr[<int>FRAME_HEADER]
    cdef int scan_hdr_len

    def __cinit__(self, *args, **kwargs):
        self.session = NULL
        self.streams = NULL
        self.events = []
        self.trailer_fields = {}
        self.scan_skip = CLIENT_MAGIC  # the preface's first 24 bytes come before frames

    def __init__(self, *, int max_concurrent_streams=MAX_CONCURRENT_STREAMS,
                 int stream_window=STREAM_WINDOW, int connection_window=CONNECTION_WINDOW,
                 int max_frame_size=MAX_FRAME_SIZE,
                 int max_header_list_size=MAX_HEADER_LIST_SIZE, object limits=None):
        cdef ng.nghttp2_option* option
        cdef ng.nghttp2_settings_entry settings[SETTINGS_COUNT]
        if self.session != NULL:
            raise RuntimeError("ServerSession is initialised once")
        self.max_header_list_size = max_header_list_size
        self.limits = limits
        _check(ng.nghttp2_option_new(&option))
        # Windows reopen only as the protocol takes body bytes (take_body).
        ng.nghttp2_option_set_no_auto_window_update(option, 1)
        # nghttp2's limiters, at limits.py's bounds (the module doc)
        ng.nghttp2_option_set_stream_reset_rate_limit(
            option, _limits.STREAM_RESET_BURST, _limits.STREAM_RESET_RATE)
        ng.nghttp2_option_set_glitch_rate_limit(
            option, _limits.EMPTY_FRAME_BURST, _limits.EMPTY_FRAME_RATE)
        ng.nghttp2_option_set_max_outbound_ack(option, _limits.CONTROL_FRAME_BURST)
        ng.nghttp2_option_set_max_continuations(option, _limits.CONTINUATION_FRAMES_MAX)
        try:
            _check(ng.nghttp2_session_server_new2(&self.session, _callbacks(), <void*>self, option))
        finally:
            ng.nghttp2_option_del(option)
        _setting(&settings[0], ng.NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams)
        _setting(&settings[1], ng.NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window)
        _setting(&settings[2], ng.NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list_size)
        _setting(&settings[3], ng.NGHTTP2_SETTINGS_MAX_FRAME_SIZE, max_frame_size)
        _check(ng.nghttp2_submit_settings(self.session, ng.NGHTTP2_FLAG_NONE, settings,
                                          SETTINGS_COUNT))
        _check(ng.nghttp2_session_set_local_window_size(
            self.session, ng.NGHTTP2_FLAG_NONE, 0, connection_window))

    def __dealloc__(self):
        cdef Stream* s
        if self.session != NULL:
            ng.nghttp2_session_del(self.session)  # calls no on_stream_close
        while self.streams != NULL:
            s = self.streams
            self.streams = s.next
            _stream_free(s)
        buf_free(&self.out)
        buf_free(&self.nv_text)

    # -- bytes in, events out ----------------------------------------------------------

    def receive(self, data) -> list:
        """Feed the transport's bytes; the events since the last take. A connection
        error is answered by nghttp2 (GOAWAY in data_to_send(), then want_close)."""
        cdef const uint8_t[::1] view = data
        cdef Py_ssize_t n = view.shape[0], pos = 0, fed = 0, take
        cdef const uint8_t* h = self.scan_hdr
        if n == 0:
            return self.take_events()
        # Frame headers are followed here (scan_*) so that a DATA frame's stream is
        # looked at once what came before it is processed (_on_closed_stream): nghttp2
        # is fed up to the header's last byte first.
        while pos < n:
            if self.scan_skip:
                take = min(self.scan_skip, n - pos)
                pos += take
                self.scan_skip -= take
                continue
            take = min(FRAME_HEADER - self.scan_hdr_len, n - pos)
            memcpy(self.scan_hdr + self.scan_hdr_len, &view[pos], take)
            self.scan_hdr_len += take
            pos += take
            if self.scan_hdr_len < FRAME_HEADER:
                break
            self.scan_hdr_len = 0
            self.scan_skip = (h[0] << 16) | (h[1] << 8) | h[2]
            if h[3] == ng.NGHTTP2_DATA:
                if not self._feed(view, fed, pos - 1):
                    return self.take_events()
                fed = pos - 1
                self._on_closed_stream(
                    ((h[5] & 0x7F) << 24) | (h[6] << 16) | (h[7] << 8) | h[8])
        self._feed(view, fed, n)
        return self.take_events()

    cdef bint _feed(self, const uint8_t[::1] view, Py_ssize_t start, Py_ssize_t end) except -1:
        """view[start:end] to nghttp2; False: the connection failed."""
        cdef ng.nghttp2_ssize rv
        if end <= start:
            return True
        rv = ng.nghttp2_session_mem_recv2(self.session, &view[start], end - start)
        if rv < 0:
            self._recv_failed(<int>rv)
            return False
        return True

    cdef int _on_closed_stream(self, int32_t stream_id) noexcept:
        """What nghttp2 lets through of RFC 9113 5.1 (it forgets a closed stream): DATA
        or HEADERS on a stream below the last one opened and not open is ignored if the
        server reset that stream (5.1: MUST ignore), a connection error STREAM_CLOSED if
        it is one of the streams closed lately, else PROTOCOL_ERROR (a stream id going
        backwards, or a frame long after its stream's end: 5.1 lets that be an error)."""
        if stream_id == 0 or not stream_id & 1 or \
                stream_id > ng.nghttp2_session_get_last_proc_stream_id(self.session) or \
                ng.nghttp2_session_find_stream(self.session, stream_id) != NULL or \
                _in_ring(self.reset_ids, stream_id):
            return 0  # (nghttp2's own checks)
        ng.nghttp2_session_terminate_session(
            self.session,
            ng.NGHTTP2_STREAM_CLOSED if _in_ring(self.closed_ids, stream_id)
            else ng.NGHTTP2_PROTOCOL_ERROR)
        return 0

    def take_events(self) -> list:
        """The events made since the last take (data_to_send() can make CLOSED ones)."""
        cdef list events = self.events
        self.events = []
        return events

    def data_to_send(self) -> bytes:
        """The frames nghttp2 has queued, serialized, as one bytes for the transport."""
        cdef const uint8_t* chunk
        cdef ng.nghttp2_ssize n
        cdef bytes result
        while True:
            n = ng.nghttp2_session_mem_send2(self.session, &chunk)
            if n < 0:
                self._reraise_callback_error()
                _check(<int>n)
            if n == 0:
                break
            if buf_add(&self.out, <const char*>chunk, n) < 0:
                raise MemoryError()
        result = PyBytes_FromStringAndSize(self.out.data, self.out.len)
        self.out.len = 0
        if self.out.cap > BUFFER_SHRINK_ABOVE:
            buf_free(&self.out)
        return result

    @property
    def want_close(self) -> bool:
        """Neither side has more to say (GOAWAY exchanged, or a connection error):
        close the transport once data_to_send() is written."""
        return not ng.nghttp2_session_want_read(self.session) and \
            not ng.nghttp2_session_want_write(self.session)

    # -- request bodies ----------------------------------------------------------------

    def take_body(self, int32_t stream_id, bint reopen=True) -> bytes:
        """The request body bytes received since the last take (b"": none, or the stream
        is gone); their flow-control windows reopen, unless `reopen` is False: then
        they stay shut until `consume` (the app has not read the bytes yet)."""
        cdef Stream* s = _stream(self.session, stream_id)
        cdef bytes body
        if s == NULL or s.body_in.len == 0:
            return b""
        body = PyBytes_FromStringAndSize(s.body_in.data, s.body_in.len)
        if reopen:
            _check(ng.nghttp2_session_consume(self.session, stream_id, s.body_in.len))
        s.body_in.len = 0
        s.body_reported = False
        if s.body_in.cap > BUFFER_SHRINK_ABOVE:
            buf_free(&s.body_in)
        return body

    def consume(self, int32_t stream_id, size_t n):
        """`n` body bytes taken with take_body(reopen=False) are read: their windows
        reopen (the connection's alone once the stream is gone)."""
        _check(ng.nghttp2_session_consume(self.session, stream_id, n))

    # -- responses ---------------------------------------------------------------------

    def submit_response(self, int32_t stream_id, int status, list headers,
                        bytes body=b"", bint end_stream=True) -> bool:
        """Queue the response head (names lowercased) and, unless the response ends
        with no body, a data provider over the stream's response buffer, which starts
        with `body`. False: the stream is gone (reset by the client)."""
        cdef Stream* s = _stream(self.session, stream_id)
        if s == NULL:
            return False
        if not 100 <= status <= 999:
            raise ValueError(f"HTTP status {status} is not three digits")
        self._submit(s, b"%d" % status, headers, body, end_stream)
        return True

    def send_body(self, int32_t stream_id, bytes data, bint end_stream=False) -> bool:
        """More response body for a stream whose response goes on; False: the stream
        is gone."""
        cdef Stream* s = _stream(self.session, stream_id)
        if s == NULL:
            return False
        if not s.responded or s.out_ended:
            raise HTTP2Error(f"stream {stream_id} has no response going on")
        if s.out_sent and s.out_sent * 2 >= s.body_out.len:
            # Most of the buffer is sent: move the rest to its start before it grows.
            memmove(s.body_out.data, s.body_out.data + s.out_sent, s.body_out.len - s.out_sent)
            s.body_out.len -= s.out_sent
            s.out_sent = 0
        _add_body(s, data)
        s.out_ended = end_stream
        if s.out_deferred:
            s.out_deferred = False
            _check(ng.nghttp2_session_resume_data(self.session, stream_id))
        return True

    def send_trailers(self, int32_t stream_id, list fields) -> bool:
        """End a stream's response with trailer fields (names lowercased, no
        pseudo-header): a HEADERS frame with END_STREAM once its response buffer is
        framed whole. False: the stream is gone."""
        cdef Stream* s = _stream(self.session, stream_id)
        if s == NULL:
            return False
        if not s.responded or s.out_ended:
            raise HTTP2Error(f"stream {stream_id} has no response going on")
        self.trailer_fields[stream_id] = fields
        s.out_ended = True
        s.out_trailers = True
        if s.out_deferred:
            s.out_deferred = False
            _check(ng.nghttp2_session_resume_data(self.session, stream_id))
        return True

    def submit_informational(self, int32_t stream_id, int status, list headers) -> bool:
        """Queue a 1xx response's HEADERS (an early hint), before the response's own;
        False: the stream is gone."""
        cdef Stream* s = _stream(self.session, stream_id)
        cdef ng.nghttp2_nv* nva
        cdef Py_ssize_t count = 1 + len(headers)
        cdef bytes status_text = b"%d" % status  # (nva points into it until submitted)
        if s == NULL:
            return False
        if s.responded or not 100 <= status <= 199:
            raise HTTP2Error(f"stream {stream_id}: no informational response {status} now")
        nva = <ng.nghttp2_nv*>calloc(count, sizeof(ng.nghttp2_nv))
        if nva == NULL:
            raise MemoryError()
        try:
            self._fill_nv(nva, status_text, headers)
            _check(ng.nghttp2_submit_headers(self.session, ng.NGHTTP2_FLAG_NONE, stream_id,
                                             NULL, nva, count, NULL))
        finally:
            free(nva)
            self.nv_text.len = 0
        return True

    def pending_body(self, int32_t stream_id) -> int:
        """Response body bytes of a stream not yet framed (the protocol pauses the app
        above its high-water mark); 0 when the stream is gone."""
        cdef Stream* s = _stream(self.session, stream_id)
        return 0 if s == NULL else s.body_out.len - s.out_sent

    def reset_stream(self, int32_t stream_id, uint32_t error_code=ng.NGHTTP2_CANCEL):
        _check(ng.nghttp2_submit_rst_stream(self.session, ng.NGHTTP2_FLAG_NONE, stream_id,
                                            error_code))

    def shutdown_notice(self):
        """The first step of a graceful shutdown (RFC 9113 6.8): GOAWAY for any stream.
        Then ping(), once the GOAWAY is written (nghttp2 sends a PING first): at its
        ack every stream the client opened before it saw the GOAWAY is here, and
        goaway() names the last."""
        _check(ng.nghttp2_submit_shutdown_notice(self.session))

    def ping(self):
        """A PING whose ack is reported (a PING_ACK event)."""
        _check(ng.nghttp2_submit_ping(self.session, ng.NGHTTP2_FLAG_NONE,
                                      <const uint8_t*>PyBytes_AS_STRING(_SERVER_PING)))

    def goaway(self, uint32_t error_code=ng.NGHTTP2_NO_ERROR):
        """GOAWAY naming the last stream nghttp2 handed over: the streams up to it go on."""
        cdef int32_t last = ng.nghttp2_session_get_last_proc_stream_id(self.session)
        _check(ng.nghttp2_submit_goaway(self.session, ng.NGHTTP2_FLAG_NONE, last, error_code,
                                        NULL, 0))

    # -- inside ------------------------------------------------------------------------

    cdef int _event(self, EventKind kind, int32_t stream_id, int64_t code) noexcept:
        """An event from a callback, `code` its third item unless NO_CODE; an exception
        (MemoryError) fails the session."""
        try:
            if code == NO_CODE:
                self.events.append((kind, stream_id))
            else:
                self.events.append((kind, stream_id, code))
        except BaseException as exc:
            return self._callback_failed(exc)
        return 0

    cdef int _spend(self, int which) noexcept:
        """Inside a callback: one frame against a bound of the connection's
        FloodLimits; over it, GOAWAY ENHANCE_YOUR_CALM and the session's end."""
        cdef object limit
        if self.limits is None or self.flooded:
            return 0
        try:
            if which == FLOOD_CONTROL_FRAMES:
                limit = self.limits.control_frames
            else:
                limit = self.limits.stream_resets
            if limit.spend(monotonic()):
                return 0
        except BaseException as exc:
            return self._callback_failed(exc)
        self.flooded = True
        ng.nghttp2_session_terminate_session(self.session, ng.NGHTTP2_ENHANCE_YOUR_CALM)
        return 0

    cdef int _callback_failed(self, exc) noexcept:
        """Inside a callback: keep the exception for receive() to raise."""
        self.cb_exc = exc
        return ng.NGHTTP2_ERR_CALLBACK_FAILURE

    cdef int _head_complete(self, Stream* s, bint end_stream) noexcept:
        """A request head is complete: its REQUEST event (Python objects made once),
        or the 431 answer of a head over the size limit."""
        try:
            if s.too_large:
                self._submit(s, _HEAD_TOO_LARGE, [], b"", True)
                return 0
            self.events.append((
                EV_REQUEST, s.id, _pseudo(s, PSEUDO_METHOD), _pseudo(s, PSEUDO_SCHEME),
                _pseudo(s, PSEUDO_AUTHORITY), _pseudo(s, PSEUDO_PATH), _headers_of(s),
                end_stream))
        except BaseException as exc:
            return self._callback_failed(exc)
        s.reported = True
        buf_free(&s.head)  # the head lives on as Python objects
        buf_free(&s.spans)
        return 0

    cdef int _submit(self, Stream* s, bytes status, list headers, bytes body,
                     bint end_stream) except -1:
        cdef ng.nghttp2_nv* nva
        cdef ng.nghttp2_data_provider2 provider
        cdef Py_ssize_t count = 1 + len(headers)
        nva = <ng.nghttp2_nv*>calloc(count, sizeof(ng.nghttp2_nv))
        if nva == NULL:
            raise MemoryError()
        s.responded = True
        try:
            self._fill_nv(nva, status, headers)
            provider.source.ptr = s
            provider.read_callback = read_body
            if body or not end_stream:
                _add_body(s, body)
                s.out_ended = end_stream
                _check(ng.nghttp2_submit_response2(self.session, s.id, nva, count, &provider))
            else:
                s.out_ended = True
                _check(ng.nghttp2_submit_response2(self.session, s.id, nva, count, NULL))
        finally:
            free(nva)
            self.nv_text.len = 0
        return 0

    cdef int _submit_trailers(self, Stream* s) noexcept:
        """Inside the data provider, at its last DATA: the stream's trailer fields
        as its last HEADERS frame (END_STREAM); -1: it failed (the exception kept)."""
        cdef ng.nghttp2_nv* nva = NULL
        cdef list fields
        cdef int rv
        s.out_trailers = False
        try:
            fields = self.trailer_fields.pop(s.id)
            nva = <ng.nghttp2_nv*>calloc(len(fields) + 1, sizeof(ng.nghttp2_nv))
            if nva == NULL:
                raise MemoryError()
            self._fill_fields(nva, fields)
            rv = ng.nghttp2_submit_trailer(self.session, s.id, nva, len(fields))
        except BaseException as exc:
            rv = self._callback_failed(exc)
        free(nva)
        self.nv_text.len = 0
        return 0 if rv == 0 else -1

    cdef void _forget_trailers(self, int32_t stream_id) noexcept:
        """A stream closed before its provider submitted its trailer fields."""
        try:
            self.trailer_fields.pop(stream_id, None)
        except BaseException:
            pass

    cdef int _fill_nv(self, ng.nghttp2_nv* nva, bytes status, list headers) except -1:
        """nva's names and values: ":status", then the headers (_fill_fields)."""
        _nv_static(&nva[0], b":status", status)
        return self._fill_fields(nva + 1, headers)

    cdef int _fill_fields(self, ng.nghttp2_nv* nva, list headers) except -1:
        """nva's names and values from the headers, names lowercased (HTTP/2 requires
        it) into nv_text; nghttp2 copies them when the frame is queued."""
        cdef Py_ssize_t i, j, offset, text_len = 0
        cdef const char* name
        cdef bytes name_obj, value
        for header in headers:
            text_len += PyBytes_GET_SIZE(<bytes?>header[0])
        # Grown once, then filled: the pointers into nv_text stay valid.
        if buf_reserve(&self.nv_text, text_len) < 0:
            raise MemoryError()
        for i in range(len(headers)):
            name_obj, value = headers[i]
            _nv_static(&nva[i], name_obj, value)
            name = PyBytes_AS_STRING(name_obj)
            offset = self.nv_text.len
            for j in range(PyBytes_GET_SIZE(name_obj)):
                self.nv_text.data[offset + j] = <char>_LOWER[<unsigned char>name[j]]
            self.nv_text.len += PyBytes_GET_SIZE(name_obj)
            nva[i].name = <uint8_t*>self.nv_text.data + offset
        return 0

    cdef void _unlink(self, Stream* s) noexcept:
        if s.prev != NULL:
            s.prev.next = s.next
        else:
            self.streams = s.next
        if s.next != NULL:
            s.next.prev = s.prev

    cdef int _reraise_callback_error(self) except -1:
        cdef object exc = self.cb_exc
        if exc is not None:
            self.cb_exc = None
            raise exc
        return 0

    cdef int _recv_failed(self, int rv) except -1:
        """mem_recv2 failed for the whole connection: a bad client preface, a flood
        of frames to answer, no memory, or a callback's exception. GOAWAY is queued
        (nghttp2 ignores what follows), then a callback's exception is raised."""
        cdef uint32_t code = ng.NGHTTP2_PROTOCOL_ERROR
        if rv == ng.NGHTTP2_ERR_FLOODED or rv == ng.NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
            code = ng.NGHTTP2_ENHANCE_YOUR_CALM
        elif rv == ng.NGHTTP2_ERR_NOMEM or rv == ng.NGHTTP2_ERR_CALLBACK_FAILURE:
            code = ng.NGHTTP2_INTERNAL_ERROR
        ng.nghttp2_session_terminate_session(self.session, code)
        return self._reraise_callback_error()


cdef int _add_body(Stream* s, bytes data) except -1:
    """Response body bytes into the stream's buffer (none: no copy, so an empty
    buffer's NULL is never given to memcpy)."""
    if PyBytes_GET_SIZE(data) and \
            buf_add(&s.body_out, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) < 0:
        raise MemoryError()
    return 0


cdef inline void _setting(ng.nghttp2_settings_entry* entry, int32_t settings_id,
                          uint32_t value) noexcept:
    entry.settings_id = settings_id
    entry.value = value


cdef inline void _nv_static(ng.nghttp2_nv* nv, bytes name, bytes value) noexcept:
    nv.name = <uint8_t*>PyBytes_AS_STRING(name)
    nv.namelen = PyBytes_GET_SIZE(name)
    nv.value = <uint8_t*>PyBytes_AS_STRING(value)
    nv.valuelen = PyBytes_GET_SIZE(value)
