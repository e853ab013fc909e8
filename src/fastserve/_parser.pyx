# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C mode (``--http c``): an asyncio Protocol driving llhttp directly.

One request, as the code runs it:

1. ``data_received`` hands the bytes to ``llhttp_execute``. llhttp's callbacks are
   ``cdef`` functions (``parser.data`` is the protocol): they copy the request
   target and the header names (lowercased) / values into one C buffer and record
   offsets, count head bytes against the limits, and append body bytes to a second
   C buffer. No Python object is made per callback.
2. ``on_headers_complete`` makes the Python objects once: method (interned, from a
   table indexed by llhttp's method number), raw_path / query_string, path, the
   headers list, and the scope (a copy of a per-connection template). It applies
   the shared rules (Host, limits, concurrency, proxy headers), then starts the app
   in its own Task for a ``RequestCycle`` (``receive``/``send`` are its methods).
3. Body bytes gathered during one ``llhttp_execute`` become one ``bytes`` chunk
   queued on the cycle; reading pauses above ``HIGH_WATER_LIMIT`` of unread body.
4. ``on_message_complete`` pauses llhttp (``HPE_PAUSED``): bytes the client
   pipelined stay unparsed until the response is complete, then parsing resumes.
5. ``send`` checks the app's headers in C (tables from ``protocols/http/headers.py``),
   builds the head in one C buffer (status line, the server's cached Date/Server
   lines, app headers, the framing ``choose_framing`` picked) and, when the body
   is complete in the first body message, writes head and body with one
   ``transport.write``.
6. Responses to a pipelined batch are held back while the next request of the
   batch is already parsed, and written together (one write per batch); so are
   the chunks of a streamed body that the app sends in one loop pass.

The llhttp state, callbacks and header building live in ``_ParserCore``, which
HttpProtocol extends; ``parse_requests(data)`` runs the same core with no protocol
(parse only: the parser micro-benchmarks in bench/, the llhttp fuzz harness in
tests/fuzz/, which feeds it a connection's reads).

Behaviour is identical to the pure-Python protocol
(``protocols/http/h11_impl.py``), and the two read side by side: the same class,
attribute and method names for the same things. What is not hot-path code --
the framing decision, error answers and messages, the access-log call, flow
control, the ASGI checks, what a failure, a timeout or a pathsend does
(``protocols/http/cycle.py``) -- is shared once, in ``fastserve.protocols``. The
byte buffer (``_buffer.pxd``) and the clock (``_clock.pxd``) are cimported.
"""

import asyncio
import itertools

cimport cython
import logging
import sys

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy

from fastserve cimport _llhttp as ll
from fastserve._buffer cimport (
    Buf,
    buf_add,
    buf_bytes,
    buf_chunk_head,
    buf_decimal,
    buf_free,
    buf_reserve,
)
from fastserve._clock cimport monotonic as _monotonic
from fastserve._writer cimport (
    HEADER_BAD,
    HEADER_WRITE,
    HeaderFacts,
    ascii_lower_eq,
    check_header,
    init_tables,
    write_header_line,
)

from fastserve.logging import access_logger, log_access
from fastserve.metrics import DURATION_BUCKETS as _DURATION_BUCKETS
from fastserve.metrics import METHOD_INDEX as _METRIC_METHOD_INDEX
from fastserve.metrics import OTHER_METHOD_INDEX as _OTHER_METHOD_INDEX
from fastserve.metrics import BUCKETS_PER_PROTOCOL, MIN_STATUS, STATUS_SPAN
from fastserve.metrics import PROTOCOL_INDEX as _METRIC_PROTOCOL_INDEX
from fastserve.metrics import REQUESTS_PER_PROTOCOL
from fastserve.protocols import asgi
from fastserve.protocols.http import cycle as cycle_rules
from fastserve.protocols.http import framing as fr
from fastserve.protocols.http.errors import (
    CONTENT_LONGER,
    CONTENT_SHORTER,
    HTTP2_PREFACE_BEFORE_VERSION,
    PROTOCOL_INTERNAL_ERROR,
    error_logger,
    log_invalid_request,
)
from fastserve.protocols.http.flow import HIGH_WATER_LIMIT, FlowControl
from fastserve.protocols.http.headers import (
    FIELD_VALUE_TABLE,
    STATUS_LINES,
    STATUS_RANGE,
    TOKEN_TABLE,
)
from fastserve.protocols.http.proxy import apply_proxy_headers
from fastserve.protocols.http.target import host_error, request_paths, with_root_path
from fastserve.protocols.http2.negotiation import hand_over as hand_over_h2
from fastserve.protocols.tls import TLS, tls_extension
from fastserve.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from fastserve.protocols.websockets.handshake import accept as accept_handshake
from fastserve.protocols.websockets.handshake import hand_over, is_websocket_upgrade
from fastserve.protocols.wsgi import environ as wsgi_environ

LLHTTP_VERSION = f"{ll.LLHTTP_VERSION_MAJOR}.{ll.LLHTTP_VERSION_MINOR}.{ll.LLHTTP_VERSION_PATCH}"

# The shared constants, as C values (read once at import).
cdef Py_ssize_t HIGH_WATER = HIGH_WATER_LIMIT
cdef Py_ssize_t JOIN_MAX = fr.JOIN_MAX
cdef int M_LENGTH = fr.LENGTH
cdef int M_CHUNKED = fr.CHUNKED
cdef int M_UNTIL_CLOSE = fr.UNTIL_CLOSE
cdef int M_NONE = fr.NONE
# A scratch buffer grown past this is freed after use, so an idle connection does
# not keep a big response (or request body) allocated.
cdef Py_ssize_t BUFFER_SHRINK_ABOVE = 1048576
# llhttp numbers its methods 0..HTTP_QUERY.
cdef int METHOD_COUNT = ll.HTTP_QUERY + 1

cdef object _Task = asyncio.Task
cdef bint _TASK_TAKES_CONTEXT = asgi.TASK_TAKES_CONTEXT
cdef str _REQUEST_TASK_NAME = asgi.REQUEST_TASK_NAME
cdef object _start_task = asgi.start_task
cdef object _connection_context = asgi.connection_context
cdef object _ASGIMessageError = asgi.ASGIMessageError
cdef object _ClientDisconnected = asgi.ClientDisconnected
cdef str _DISCONNECTED = asgi.DISCONNECTED
cdef object _after_complete = asgi.after_complete
cdef object _response_start = asgi.response_start
cdef object _response_body = asgi.response_body
cdef object _message_type_of = asgi.message_type_of
cdef object _fail_connection = cycle_rules.fail_connection
cdef object _fail_cycle = cycle_rules.fail_cycle
cdef object _app_raised = cycle_rules.app_raised
cdef object _app_finished = cycle_rules.app_finished
cdef object _timed_out = cycle_rules.timed_out
cdef object _broken_length = cycle_rules.broken_length
cdef object _send_path = cycle_rules.send_path
cdef object _lose_connection = cycle_rules.lose_connection
cdef object _shut_down = cycle_rules.shut_down
cdef object _skip_body = cycle_rules.skip_body
cdef object _send_extension = cycle_rules.send_extension
cdef object _trailers_follow = cycle_rules.trailers_follow
cdef object _trailer_mode = fr.trailer_mode
cdef object _announces_trailers = asgi.announces_trailers
cdef object _bad_header = asgi.bad_header
cdef object _malformed_header = asgi.malformed_header
cdef object _is_chunked_only = fr.is_chunked_only
cdef object _request_paths = request_paths
cdef object _with_root_path = with_root_path
cdef object _host_error = host_error
cdef object _apply_proxy_headers = apply_proxy_headers
cdef object _log_access = log_access
cdef object _is_websocket_upgrade = is_websocket_upgrade
cdef object _accept_handshake = accept_handshake
cdef object _hand_over = hand_over
cdef object _hand_over_h2 = hand_over_h2
cdef bytes _CONTINUE = fr.CONTINUE_RESPONSE
cdef bytes _LAST_CHUNK = fr.LAST_CHUNK
cdef bytes _CHUNK_END = fr.CHUNK_END
cdef bytes _CHUNK_END_LAST = fr.CHUNK_END + fr.LAST_CHUNK
cdef bytes _CHUNKED_LINE = fr.CHUNKED_LINE
cdef bytes _CLOSE_LINE = fr.CLOSE_LINE
cdef bytes _KEEP_ALIVE_LINE = fr.KEEP_ALIVE_LINE
cdef str _START = "http.response.start"
cdef str _BODY = "http.response.body"
cdef str _PATHSEND = asgi.PATHSEND
cdef str _TRAILERS = asgi.TRAILERS
cdef str _EARLY_HINT = asgi.EARLY_HINT
cdef dict _ASGI_VERSION = asgi.ASGI_VERSION
cdef str _TLS = TLS
cdef str _V11 = "1.1"
cdef str _V10 = "1.0"
cdef str _PROTOCOL_11 = "HTTP/1.1"
cdef str _PROTOCOL_10 = "HTTP/1.0"
cdef str _ENVIRON_EXTENSION = wsgi_environ.ENVIRON_EXTENSION
cdef dict _HEADER_KEYS = wsgi_environ.HEADER_KEYS
cdef object _header_key = wsgi_environ.header_key
cdef object _join_values = wsgi_environ.join_values
cdef object _path_info = wsgi_environ.path_info

# -- tables read once from protocols/http/headers.py ---------------------------------

cdef unsigned char _LOWER[256]
cdef int _i
for _i in range(256):
    _LOWER[_i] = (_i + 32) if 65 <= _i <= 90 else _i
init_tables(TOKEN_TABLE, FIELD_VALUE_TABLE)

# status line per code (index = status; ASGI checks that an app's status is in range)
cdef list _STATUS_LINES = [STATUS_LINES.get(_i) for _i in range(STATUS_RANGE.stop)]

# fr.choose_framing as a table: it reads the status only through whether the status
# has a body, and the app's content-length only through whether there is one, so
# its answer for every response is one of these 32, computed once from it.
cdef enum:
    STATUS_END = 600  # STATUS_RANGE.stop: statuses an app may send are below it
assert STATUS_RANGE.stop == STATUS_END
cdef unsigned char _NO_BODY[STATUS_END]
for _i in range(STATUS_END):
    _NO_BODY[_i] = fr.status_has_no_body(_i)
cdef unsigned char _FRAMING[2][2][2][2][2]  # [no body][has length][app chunked][more body][1.0]
for _no_body, _has_length, _app_chunked, _more_body, _http10 in itertools.product((0, 1), repeat=5):
    _FRAMING[_no_body][_has_length][_app_chunked][_more_body][_http10] = fr.choose_framing(
        204 if _no_body else 200, 0 if _has_length else -1, bool(_app_chunked),
        bool(_more_body), bool(_http10),
    )

# method names per llhttp method number, interned
cdef list _METHODS = []
for _i in range(METHOD_COUNT):
    _name = (<bytes>ll.llhttp_method_name(<ll.llhttp_method_t>_i)).decode("ascii")
    _METHODS.append(sys.intern(_name))

# --metrics-port: the metrics row (metrics.METHOD_LABELS) per llhttp method number,
# and the duration histogram's bounds (metrics.ProcessMetrics counts the same way)
cdef enum:
    MAX_METHODS = 64
    MAX_BUCKETS = 32
cdef int _MIN_STATUS = MIN_STATUS
cdef int _STATUS_SPAN = STATUS_SPAN
cdef int _REQUESTS_PER_PROTOCOL = REQUESTS_PER_PROTOCOL
cdef int _BUCKETS_PER_PROTOCOL = BUCKETS_PER_PROTOCOL
cdef int _METRIC_HTTP10 = _METRIC_PROTOCOL_INDEX["1.0"]  # the `protocol` label's index
cdef int _METRIC_HTTP11 = _METRIC_PROTOCOL_INDEX["1.1"]
assert METHOD_COUNT <= MAX_METHODS and len(_DURATION_BUCKETS) <= MAX_BUCKETS
cdef int _METRIC_ROW[MAX_METHODS]
for _i in range(METHOD_COUNT):
    _METRIC_ROW[_i] = _METRIC_METHOD_INDEX.get(_METHODS[_i], _OTHER_METHOD_INDEX)
cdef double _BUCKET_BOUNDS[MAX_BUCKETS]
cdef int _BUCKET_COUNT = len(_DURATION_BUCKETS)
for _i in range(_BUCKET_COUNT):
    _BUCKET_BOUNDS[_i] = _DURATION_BUCKETS[_i]


@cython.final
cdef class _MetricsCounters:
    """C views of one `metrics.ProcessMetrics`' arrays: a response is counted
    with no Python object made."""

    cdef object owner
    cdef long long[::1] requests
    cdef long long[::1] duration_buckets
    cdef double[::1] duration_sum
    cdef long long[::1] response_bytes

    cdef inline void count(self, int protocol, int method, int status, double duration,
                           Py_ssize_t body_bytes) noexcept:
        cdef int bucket = 0
        self.requests[protocol * _REQUESTS_PER_PROTOCOL + _METRIC_ROW[method] * _STATUS_SPAN
                      + status - _MIN_STATUS] += 1
        while bucket < _BUCKET_COUNT and duration > _BUCKET_BOUNDS[bucket]:
            bucket += 1
        self.duration_buckets[protocol * _BUCKETS_PER_PROTOCOL + bucket] += 1
        self.duration_sum[protocol] += duration
        self.response_bytes[0] += body_bytes


cdef _MetricsCounters _counters = None  # of the process's ProcessMetrics (one per Server)


cdef _MetricsCounters _metrics_counters(metrics):
    global _counters
    cdef _MetricsCounters counters
    if _counters is None or _counters.owner is not metrics:
        counters = _MetricsCounters.__new__(_MetricsCounters)
        counters.owner = metrics
        counters.requests = metrics.requests
        counters.duration_buckets = metrics.duration_buckets
        counters.duration_sum = metrics.duration_sum
        counters.response_bytes = metrics.response_bytes
        _counters = counters
    return _counters


cdef struct HeaderSpan:
    Py_ssize_t name_off
    Py_ssize_t name_len
    Py_ssize_t value_off
    Py_ssize_t value_len


# -- the ProtocolSettings (config.py), as C values -------------------------------------

cdef class _Settings:
    """A C-typed copy of one `ProtocolSettings`, made once per settings object."""
    cdef object source                  # the ProtocolSettings itself
    cdef object ws_protocol_class       # None: upgrade requests are plain HTTP
    cdef bint wsgi                      # a WSGI app: the scope carries the environ's head
    cdef object app
    cdef str root_path
    cdef bint proxy_headers
    cdef object proxy_trust
    cdef bint access_log
    cdef Py_ssize_t limit_concurrency   # -1: none
    cdef Py_ssize_t limit_head
    cdef Py_ssize_t limit_line          # 0: none
    cdef Py_ssize_t limit_fields
    cdef Py_ssize_t limit_field_size    # 0: none
    cdef long long limit_body           # -1: none
    cdef double timeout_keep_alive
    cdef double timeout_header
    cdef double timeout_request         # -1: none


cdef object _cached_source = None
cdef _Settings _cached_settings = None


cdef _Settings _c_settings(object settings):
    global _cached_source, _cached_settings
    if settings is _cached_source:
        return _cached_settings
    cdef _Settings s = _Settings.__new__(_Settings)
    s.source = settings
    s.ws_protocol_class = settings.ws_protocol_class
    s.wsgi = settings.wsgi
    s.app = settings.app
    s.root_path = settings.root_path
    s.proxy_headers = settings.proxy_headers
    s.proxy_trust = settings.proxy_trust
    s.access_log = settings.access_log
    s.limit_concurrency = -1 if settings.limit_concurrency is None else settings.limit_concurrency
    s.limit_head = settings.limit_request_head
    s.limit_line = settings.limit_request_line
    s.limit_fields = settings.limit_request_fields
    s.limit_field_size = settings.limit_request_field_size
    s.limit_body = -1 if settings.limit_request_body is None else settings.limit_request_body
    s.timeout_keep_alive = settings.timeout_keep_alive
    s.timeout_header = settings.timeout_request_header
    s.timeout_request = -1 if settings.timeout_request is None else settings.timeout_request
    _cached_source = settings
    _cached_settings = s
    return s


# -- the parsing core shared by HttpProtocol and parse_requests ------------------------

cdef ll.llhttp_settings_t _PARSER_SETTINGS  # filled in below, after the callbacks

cdef class _ParserCore:
    """llhttp plus what its callbacks fill in: the request head (target, then
    lowercased names and values, in one C buffer with offsets), head/body byte
    counts against the limits, and body bytes. ``parser.data`` is this object.

    HttpProtocol and _Collector (parse_requests) subclass it and say what happens
    at headers-complete, for body bytes and at message-complete."""

    cdef ll.llhttp_t parser
    cdef _Settings settings
    cdef object cb_exc
    cdef int error_status
    # request head being parsed
    cdef Buf head               # target, then lowercased names and values
    cdef HeaderSpan* hdrs
    cdef Py_ssize_t nhdrs
    cdef Py_ssize_t hdrs_cap
    cdef Py_ssize_t url_len
    cdef Py_ssize_t method_end  # head offset just past the method (cb_method)
    cdef bint version_seen      # the version's first bytes were checked (cb_version)
    cdef Py_ssize_t preface_at  # HTTP/2's preface: its version's offset in the chunk; -1: none
    cdef int last_cb            # 1 = header field, 2 = header value
    cdef bint in_head
    cdef const char* chunk_ptr  # start of the bytes given to llhttp_execute
    cdef Py_ssize_t msg_start   # offset of the message in that chunk (-1: not seen)
    cdef Py_ssize_t head_carried
    # request body
    cdef Buf body
    cdef uint64_t body_total
    cdef double ka_deadline     # HttpProtocol's idle deadline: cleared when a message begins

    def __cinit__(self, *args, **kwargs):
        ll.llhttp_init(&self.parser, ll.HTTP_REQUEST, &_PARSER_SETTINGS)
        self.parser.data = <void*>self
        self.hdrs = NULL
        self.preface_at = -1

    def __dealloc__(self):
        buf_free(&self.head)
        buf_free(&self.body)
        if self.hdrs != NULL:
            free(self.hdrs)
            self.hdrs = NULL

    cdef int _headers_complete(self) except -2:
        return 0

    cdef int _on_body(self, const char* at, size_t length) noexcept:
        return buf_add(&self.body, at, length)

    cdef int _message_complete(self) except -2:
        return 0

    cdef bint _carry_head(self, Py_ssize_t left) noexcept:
        """llhttp took a whole read and the head goes on: count the read's head bytes
        (offsets in the next read start at 0). True when the head is over the limit."""
        self.head_carried += left - (self.msg_start if self.msg_start > 0 else 0)
        self.msg_start = 0
        return self.head_carried > self.settings.limit_head


cdef struct HeadInfo:
    int host_count
    bint expect_100
    bint forwarded
    bint upgrade


cdef inline bint _version_ok(ll.llhttp_t* p) noexcept:
    return p.http_major == 1 and p.http_minor <= 1


cdef inline list _build_headers(_ParserCore self, bint http10, HeadInfo* info):
    """The scope's headers list from the spans the callbacks recorded (names
    already lowercased, trailing OWS of values dropped), in order; notes what the
    protocol's rules need (Host count, Expect: 100-continue, Forwarded / X-Forwarded-*)."""
    cdef const char* data = self.head.data
    cdef const char* v
    cdef Py_ssize_t i, vlen
    cdef HeaderSpan* h
    cdef list headers = []
    info.host_count = 0
    info.expect_100 = False
    info.forwarded = False
    info.upgrade = False
    for i in range(self.nhdrs):
        h = &self.hdrs[i]
        v = data + h.value_off
        vlen = h.value_len
        while vlen > 0 and (v[vlen - 1] == 32 or v[vlen - 1] == 9):
            vlen -= 1
        name = PyBytes_FromStringAndSize(data + h.name_off, h.name_len)
        headers.append((name, PyBytes_FromStringAndSize(v, vlen)))
        if h.name_len == 4 and memcmp(data + h.name_off, b"host", 4) == 0:
            info.host_count += 1
        elif h.name_len == 6 and memcmp(data + h.name_off, b"expect", 6) == 0:
            if not http10 and ascii_lower_eq(v, vlen, b"100-continue", 12):
                info.expect_100 = True
        # (proxy.PROXY_HEADER_NAMES, inline: x-forwarded-for / -proto, forwarded)
        elif ((h.name_len == 15 or h.name_len == 17) and
                memcmp(data + h.name_off, b"x-forwarded-", 12) == 0) or \
                (h.name_len == 9 and memcmp(data + h.name_off, b"forwarded", 9) == 0):
            info.forwarded = True
        elif h.name_len == 7 and memcmp(data + h.name_off, b"upgrade", 7) == 0:
            info.upgrade = True
    return headers


cdef dict _wsgi_head(dict scope, list headers, bint http10, str root_path):
    """A WSGI app's request: the environ's variables of the head (its headers as
    HTTP_* variables, request line). Hot-path twin of environ.head_variables, which the
    pure mode calls (the same key table, join and PATH_INFO rules): change both;
    tests/test_differential.py binds them."""
    cdef dict variables = {}
    cdef bytes name, value
    cdef bytes raw_path = scope["raw_path"]
    cdef bytes query = scope["query_string"]
    for name, value in headers:
        key = _HEADER_KEYS.get(name)
        if key is None:
            key = _header_key(name)
            if key is None:
                continue  # a name with "_" (environ.header_key says why)
        text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL)
        joined = variables.get(key)
        if joined is not None:
            text = _join_values(name, joined, text)
        variables[key] = text
    variables["REQUEST_METHOD"] = scope["method"]
    variables["SERVER_PROTOCOL"] = _PROTOCOL_10 if http10 else _PROTOCOL_11
    if not root_path and memchr(PyBytes_AS_STRING(raw_path), 37, PyBytes_GET_SIZE(raw_path)) == NULL:
        variables["PATH_INFO"] = PyUnicode_DecodeLatin1(  # no "%": nothing to decode
            PyBytes_AS_STRING(raw_path), PyBytes_GET_SIZE(raw_path), NULL)
    else:
        variables["PATH_INFO"] = _path_info(raw_path, root_path)
    variables["QUERY_STRING"] = PyUnicode_DecodeLatin1(
        PyBytes_AS_STRING(query), PyBytes_GET_SIZE(query), NULL)
    return variables


# -- llhttp callbacks ------------------------------------------------------------------

cdef inline int _out_of_memory(_ParserCore self) noexcept:
    """A buffer could not grow: the request fails with 500 (the server's fault)."""
    self.error_status = 500
    return -1


cdef int cb_message_begin(ll.llhttp_t* p) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    self.head.len = 0
    self.nhdrs = 0
    self.url_len = 0
    self.version_seen = False
    self.last_cb = 0
    self.in_head = True
    self.msg_start = -1
    self.head_carried = 0
    self.body_total = 0
    self.ka_deadline = 0.0  # a request has begun: no longer idle
    return 0


cdef inline int _count_head(_ParserCore self, const char* at, size_t length) noexcept:
    """Bytes of the head so far (at least: the head goes on for >= 4 more bytes)."""
    cdef Py_ssize_t start = at - self.chunk_ptr
    if self.msg_start < 0:
        self.msg_start = start
    if self.head_carried + start + <Py_ssize_t>length - self.msg_start + 4 > self.settings.limit_head:
        self.error_status = 431
        return -1
    return 0


cdef int cb_method(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    if _count_head(self, at, length) < 0:
        return -1
    self.method_end = self.head_carried + (at - self.chunk_ptr) + <Py_ssize_t>length - self.msg_start
    return 0


cdef int cb_url(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    cdef Py_ssize_t within_line
    if self.settings.limit_line and self.url_len + <Py_ssize_t>length > self.settings.limit_line:
        # Over the line limit in this span: answer for whichever limit the bytes
        # cross first (the span's length depends on where the reads were cut).
        within_line = self.settings.limit_line + 1 - self.url_len
        if _count_head(self, at, within_line) == 0:
            self.error_status = 414
        return -1
    if _count_head(self, at, length) < 0:
        return -1
    if self.url_len == 0 and \
            self.head_carried + (at - self.chunk_ptr) - self.msg_start != self.method_end + 1:
        return -1  # more than one SP after the method (llhttp skips them; RFC 9112 3 allows one)
    self.url_len += length
    if buf_add(&self.head, at, length) < 0:
        return _out_of_memory(self)
    return 0


cdef int cb_version(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    if _count_head(self, at, length) < 0:
        return -1
    if not self.version_seen:
        self.version_seen = True
        if p.method == ll.HTTP_PRI:
            # HTTP/2 (its preface, `PRI * HTTP/2.0`): refused at the first line, where
            # llhttp would wait for the rest of the head (the pure mode: _head_end);
            # with --http2, `_execute` hands the connection over (`_http2`)
            if self.url_len == 1 and self.head.data[0] == c'*':
                self.preface_at = at - self.chunk_ptr
            return -1
        # The version span is the digits after "HTTP/" (5 bytes llhttp already checked).
        if self.head_carried + (at - self.chunk_ptr) - self.msg_start != \
                self.method_end + 1 + self.url_len + 1 + 5:
            return -1  # more than one SP after the target (llhttp skips them; RFC 9112 3)
    return 0


cdef int cb_header_field(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    cdef HeaderSpan* h
    cdef Py_ssize_t i
    cdef char* dst
    cdef void* grown
    if not self.in_head:
        return 0  # trailer fields of a chunked body: ignored
    if _count_head(self, at, length) < 0:
        return -1
    if self.last_cb != 1:
        if self.nhdrs >= self.settings.limit_fields:
            self.error_status = 431
            return -1
        if self.nhdrs == self.hdrs_cap:
            grown = realloc(self.hdrs, (self.hdrs_cap * 2 + 16) * sizeof(HeaderSpan))
            if grown == NULL:
                return _out_of_memory(self)
            self.hdrs = <HeaderSpan*>grown
            self.hdrs_cap = self.hdrs_cap * 2 + 16
        h = &self.hdrs[self.nhdrs]
        self.nhdrs += 1
        h.name_off = self.head.len
        h.name_len = 0
        h.value_off = 0
        h.value_len = 0
        self.last_cb = 1
    else:
        h = &self.hdrs[self.nhdrs - 1]
    if buf_reserve(&self.head, length) < 0:
        return _out_of_memory(self)
    dst = self.head.data + self.head.len
    for i in range(<Py_ssize_t>length):
        dst[i] = <char>_LOWER[<unsigned char>at[i]]
    self.head.len += length
    h.name_len += length
    if self.settings.limit_field_size and h.name_len + h.value_len + 2 > self.settings.limit_field_size:
        self.error_status = 431
        return -1
    return 0


cdef int cb_header_value(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    cdef HeaderSpan* h
    if not self.in_head:
        return 0  # trailer fields of a chunked body: ignored
    if _count_head(self, at, length) < 0:
        return -1
    if self.nhdrs == 0:
        return -1
    h = &self.hdrs[self.nhdrs - 1]
    if self.last_cb != 2:
        h.value_off = self.head.len
        self.last_cb = 2
    if buf_add(&self.head, at, length) < 0:
        return _out_of_memory(self)
    h.value_len += length
    if self.settings.limit_field_size and h.name_len + h.value_len + 2 > self.settings.limit_field_size:
        self.error_status = 431
        return -1
    return 0


cdef int cb_headers_complete(ll.llhttp_t* p) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    try:
        return self._headers_complete()
    except BaseException as exc:
        self.cb_exc = exc
        return -1


cdef int cb_body(ll.llhttp_t* p, const char* at, size_t length) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    self.body_total += length
    if self.settings.limit_body >= 0 and self.body_total > <uint64_t>self.settings.limit_body:
        self.error_status = 413
        return -1
    if self._on_body(at, length) < 0:
        return _out_of_memory(self)
    return 0


cdef int cb_message_complete(ll.llhttp_t* p) noexcept:
    cdef _ParserCore self = <_ParserCore>p.data
    try:
        return self._message_complete()
    except BaseException as exc:
        self.cb_exc = exc
        return -1


ll.llhttp_settings_init(&_PARSER_SETTINGS)
_PARSER_SETTINGS.on_message_begin = cb_message_begin
_PARSER_SETTINGS.on_method = cb_method
_PARSER_SETTINGS.on_url = cb_url
_PARSER_SETTINGS.on_version = cb_version
_PARSER_SETTINGS.on_header_field = cb_header_field
_PARSER_SETTINGS.on_header_value = cb_header_value
_PARSER_SETTINGS.on_headers_complete = cb_headers_complete
_PARSER_SETTINGS.on_body = cb_body
_PARSER_SETTINGS.on_message_complete = cb_message_complete


# -- parse only (bench/test_parser_bench.py) -------------------------------------------

@cython.final
cdef class _Collector(_ParserCore):
    """The parsing core with no protocol: collects each complete request."""

    cdef list out
    cdef object method
    cdef bytes target
    cdef list headers

    cdef int _headers_complete(self) except -2:
        cdef ll.llhttp_t* p = &self.parser
        cdef HeadInfo info
        self.in_head = False
        if not _version_ok(p):
            self.error_status = 400
            return -1
        self.method = _METHODS[p.method]
        self.target = PyBytes_FromStringAndSize(self.head.data, self.url_len)
        self.headers = _build_headers(self, p.http_minor == 0, &info)
        return 0

    cdef int _message_complete(self) except -2:
        self.out.append((
            self.method,
            self.target,
            self.headers,
            PyBytes_FromStringAndSize(self.body.data, self.body.len),
        ))
        self.body.len = 0
        return 0

    cdef _feed(self, bytes data):
        """One read, as HttpProtocol._execute parses it (Upgrade requests are parsed
        as plain ones); raises ValueError on a malformed request or one over a limit."""
        cdef const char* ptr = PyBytes_AS_STRING(data)
        cdef Py_ssize_t left = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t consumed
        cdef ll.llhttp_errno_t err
        cdef const char* reason = NULL
        while True:
            self.chunk_ptr = ptr
            err = ll.llhttp_execute(&self.parser, ptr, left)
            if err == ll.HPE_OK:
                if self.in_head and self._carry_head(left):
                    self.error_status = 431
                    break
                return
            if err == ll.HPE_PAUSED_UPGRADE:
                consumed = self.parser.error_pos - ptr
                ll.llhttp_resume_after_upgrade(&self.parser)
                ptr += consumed
                left -= consumed
                continue
            break
        exc = self.cb_exc
        if exc is not None:
            raise exc
        if err != ll.HPE_OK:
            reason = self.parser.reason
        raise ValueError(
            "malformed request: %s (%s)%s" % (
                (<bytes>reason).decode("latin-1") if reason != NULL else "error",
                (<bytes>ll.llhttp_errno_name(err)).decode("ascii"),
                " -> %d" % self.error_status if self.error_status else "",
            )
        )


def parse_requests(data, settings):
    """Parse what one connection delivered -- `data`: bytes, or a list of the reads
    it came in, parsed one by one as HttpProtocol does -- with the llhttp settings,
    callbacks and header building of HttpProtocol, and the limits of `settings`
    (a `fastserve.config.ProtocolSettings`).

    Returns ``[(method: str, target: bytes, headers: [(lowercased name, value)],
    body: bytes)]``, one per complete request (an incomplete one at the end is left
    out). Raises ValueError on a malformed request or one over a limit."""
    cdef _Collector c = _Collector.__new__(_Collector)
    c.settings = _c_settings(settings)
    c.out = []
    for read in ((data,) if isinstance(data, (bytes, bytearray, memoryview)) else data):
        c._feed(read if type(read) is bytes else bytes(read))
    return c.out


# -- the protocol ----------------------------------------------------------------------

cdef class RequestCycle
cdef class HttpProtocol


@cython.final
cdef class _CorkedFlusher:
    """The connections of one loop holding responses back (`HttpProtocol._cork`):
    one loop callback a pass checks them all, rather than one callback each."""

    cdef object loop
    cdef list waiting
    cdef bint scheduled

    cdef add(self, HttpProtocol protocol):
        self.waiting.append(protocol)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._run)

    def _run(self):
        cdef HttpProtocol protocol
        waiting = self.waiting
        self.waiting = []
        self.scheduled = False
        for protocol in waiting:
            try:
                protocol._flush_soon()
            except Exception as exc:  # (one connection's failure holds no other's responses back)
                self.loop.call_exception_handler(
                    {"message": "flushing a connection's responses failed",
                     "exception": exc, "protocol": protocol}
                )


cdef _CorkedFlusher _flusher = None  # of the last loop asked for (one per process, as a rule)


cdef _CorkedFlusher _flusher_of(loop):
    global _flusher
    if _flusher is None or _flusher.loop is not loop:
        _flusher = _CorkedFlusher.__new__(_CorkedFlusher)
        _flusher.loop = loop
        _flusher.waiting = []
    return _flusher


@cython.final
cdef class HttpProtocol(_ParserCore):
    """asyncio Protocol for HTTP/1.1 over llhttp (one per connection).

    (`final`, and the names protocols/http/cycle.py uses `public` or `cpdef`: the
    C code calls those methods directly, the shared Python code through Python.)"""

    cdef readonly object server_state
    cdef readonly _MetricsCounters metrics  # None: --metrics-port is off
    cdef object app_state
    cdef object loop
    cdef readonly object transport
    cdef readonly object flow  # FlowControl: read pauses, write pauses and drain
    cdef object write          # transport.write
    cdef object context        # copy of the context at connection_made
    cdef object connections
    cdef object tasks
    cdef dict template
    cdef readonly RequestCycle cycle
    cdef public bytes pending  # unparsed bytes after a paused message (b"": none)
    cdef dict upgrade_scope    # a valid WebSocket handshake, handed over once parsed
    cdef bytes refusal         # the answer to a refused WebSocket handshake
    cdef const char* body_span  # body bytes of this _execute not copied yet (NULL: none)
    cdef Py_ssize_t body_span_len
    cdef list corked            # responses held back while a pipelined batch is answered
    cdef Py_ssize_t corked_size
    cdef Py_ssize_t started     # requests started on this connection
    cdef Py_ssize_t flush_mark
    cdef bint flush_scheduled     # in the flusher's list
    cdef _CorkedFlusher flusher   # the loop's
    cdef public object timer
    cdef double timer_when
    cdef double header_deadline
    cdef public bint closed
    cdef public bint shutting_down
    cdef readonly bint access_log
    cdef bint eof
    cdef bint ssl
    cdef dict tls              # the `tls` extension every scope references; None: plain TCP
    # response head / chunk scratch
    cdef Buf out

    def __dealloc__(self):
        buf_free(&self.out)  # (the core frees its own buffers)

    def __init__(self, settings, server_state, app_state, _loop=None):
        self.settings = _c_settings(settings)
        self.server_state = server_state
        if server_state.metrics is not None:
            self.metrics = _metrics_counters(server_state.metrics)
        self.app_state = app_state
        if _loop is None:
            try:
                _loop = asyncio.get_running_loop()
            except RuntimeError:
                _loop = asyncio.get_event_loop()
        self.loop = _loop
        self.connections = server_state.connections
        self.flusher = _flusher_of(_loop)
        self.tasks = server_state.tasks
        self.access_log = self.settings.access_log
        self.pending = b""

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.flow = FlowControl(transport, self.loop)
        self.write = transport.write
        self.connections.add(self)
        self.ssl = is_ssl(transport)
        if self.ssl:
            self.tls = tls_extension(transport, self.settings.source.tls_server_cert)
        # Every key a scope has, so that copying it and setting the per-request
        # values never resizes the dict.
        self.template = {
            "type": "http",
            "asgi": None,
            "http_version": _V11,
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "scheme": "https" if self.ssl else "http",
            "method": None,
            "root_path": self.settings.root_path,
            "path": None,
            "raw_path": None,
            "query_string": None,
            "headers": None,
            "state": None,
            "extensions": None,
        }
        # Each request Task is created in a copy of this context: a contextvar set
        # by one request never shows up in another.
        self.context = _connection_context(self.settings.source.reset_contextvars)
        if self.access_log and not access_logger.isEnabledFor(logging.INFO):
            self.access_log = False
        self.header_deadline = _monotonic() + self.settings.timeout_header
        self._arm(self.header_deadline)

    def connection_lost(self, exc):
        _lose_connection(self)
        self.corked = None

    def eof_received(self):
        # The client half-closed: like uvicorn, the connection ends (the transport
        # closes once buffered writes are out) and a running app sees
        # http.disconnect -- a client that closes its socket sends just this EOF.
        self.eof = True
        return None

    def pause_writing(self):
        self.flow.pause_writing()

    def resume_writing(self):
        self.flow.resume_writing()

    def data_received(self, data):
        if self.closed:
            return
        if type(data) is not bytes:
            data = bytes(data)
        cdef int err = self.parser.error
        if err == ll.HPE_PAUSED or err == ll.HPE_PAUSED_UPGRADE:
            # The current request is complete and its response is not: keep what
            # the client pipelined and read no more until the response is done.
            if not self.pending:
                self.pending = data
            else:
                self.pending += data
            self._pause_reading()
            return
        self._execute(<bytes>data, 0)

    # -- server -------------------------------------------------------------------

    def shutdown(self):
        _shut_down(self)

    def abort(self):
        """Past the graceful-shutdown bound: drop the connection now (a running app
        sees http.disconnect)."""
        if not self.closed:
            self.transport.abort()

    # -- parsing -------------------------------------------------------------------

    cdef _execute(self, bytes data, Py_ssize_t start):
        cdef const char* base = PyBytes_AS_STRING(data)
        cdef const char* ptr = base + start
        cdef Py_ssize_t left = PyBytes_GET_SIZE(data) - start
        cdef Py_ssize_t consumed
        cdef ll.llhttp_errno_t err
        while True:
            self.chunk_ptr = ptr
            err = ll.llhttp_execute(&self.parser, ptr, left)
            if self.body.len or self.body_span != NULL:
                self._flush_body()
            if err == ll.HPE_OK:
                if self.in_head and self._carry_head(left):
                    self._fail(431)
                return
            if self.upgrade_scope is not None and (err == ll.HPE_PAUSED or err == ll.HPE_PAUSED_UPGRADE):
                consumed = self.parser.error_pos - ptr
                self._upgrade(self.upgrade_scope, data[(ptr - base) + consumed:])
                return
            if err == ll.HPE_PAUSED_UPGRADE and self.cycle is None:
                # An Upgrade request already answered as plain HTTP: go on parsing.
                consumed = self.parser.error_pos - ptr
                ll.llhttp_resume_after_upgrade(&self.parser)
                ptr += consumed
                left -= consumed
                continue
            if err == ll.HPE_PAUSED or err == ll.HPE_PAUSED_UPGRADE:
                consumed = self.parser.error_pos - ptr
                if consumed < left:
                    self.pending = data[(ptr - base) + consumed:]
                    self._pause_reading()
                return
            break
        exc = self.cb_exc
        if exc is not None:
            self.cb_exc = None
            error_logger.error(PROTOCOL_INTERNAL_ERROR, exc_info=exc)
            self._fail(500)
        elif self.refusal is not None:
            self._fail(400, self.refusal)
        elif self.error_status:
            self._fail(self.error_status)
        elif self.preface_at >= 0 and self.settings.source.h2_protocol_class is not None:
            self._http2(HTTP2_PREFACE_BEFORE_VERSION + data[(ptr - base) + self.preface_at:])
        else:
            log_invalid_request(data[start:])
            self._fail(400)

    cdef int _headers_complete(self) except -2:
        cdef ll.llhttp_t* p = &self.parser
        cdef HeadInfo info
        cdef bint http10
        cdef int status
        cdef list headers
        cdef dict scope
        self.in_head = False
        self.header_deadline = 0.0
        if not _version_ok(p):
            self.error_status = 400
            return -1
        http10 = p.http_minor == 0
        headers = _build_headers(self, http10, &info)
        status = self._head_error(p, &info, headers, http10)
        if status:
            self.error_status = status
            return -1
        scope = self._scope(p, headers, http10)
        if info.upgrade and self.settings.ws_protocol_class is not None and \
                _is_websocket_upgrade(headers):
            return self._upgrade_head(scope, p)
        if info.forwarded and self.settings.proxy_headers:
            # (without a Forwarded or X-Forwarded-For/-Proto header it would change nothing,
            # and its trust check costs more than the rest of the request)
            _apply_proxy_headers(scope, self.settings.proxy_trust)
        self._start_request(scope, p, info.expect_100, http10)
        return 0

    cdef inline int _head_error(self, ll.llhttp_t* p, HeadInfo* info, list headers,
                                bint http10) except -1:
        """The shared rules of a parsed head: the status that refuses it, or 0."""
        cdef Py_ssize_t limit
        if info.host_count != 1 and _host_error(_V10 if http10 else _V11, headers) is not None:
            return 400
        if (p.flags & ll.F_TRANSFER_ENCODING) and not _is_chunked_only(headers):
            return 400  # (the pure mode: h11 has this rule)
        if self.settings.limit_body >= 0 and (p.flags & ll.F_CONTENT_LENGTH) and \
                p.content_length > <uint64_t>self.settings.limit_body:
            return 413
        limit = self.settings.limit_concurrency
        if limit >= 0 and (len(self.connections) > limit or len(self.tasks) >= limit):
            return 503
        return 0

    cdef inline dict _scope(self, ll.llhttp_t* p, list headers, bint http10):
        cdef dict scope = self.template.copy()
        scope["asgi"] = _ASGI_VERSION.copy()  # a new dict per scope
        if http10:
            scope["http_version"] = _V10
        scope["method"] = <str>_METHODS[p.method]
        self._request_target(scope)
        scope["headers"] = headers
        scope["state"] = self.app_state.copy()
        # a new dict per scope, as "asgi"; the tls extension is the connection's
        if self.tls is None:
            scope["extensions"] = {_PATHSEND: {}, _TRAILERS: {}, _EARLY_HINT: {}}
        else:
            scope["extensions"] = {_PATHSEND: {}, _TRAILERS: {}, _EARLY_HINT: {}, _TLS: self.tls}
        if self.settings.wsgi:
            scope["extensions"][_ENVIRON_EXTENSION] = _wsgi_head(
                scope, headers, http10, self.settings.root_path)
        return scope

    cdef inline int _request_target(self, dict scope) except -1:
        """The target as the scope has it: raw_path, query_string, path, --root-path
        before them. (Hot-path twin of `target.request_paths`, which the pure mode
        calls: an origin-form target without "%" in its path is done here.)"""
        cdef const char* data = self.head.data
        cdef Py_ssize_t n = self.url_len
        cdef Py_ssize_t path_len
        cdef const char* q
        if n > 0 and data[0] == 47:  # '/'
            q = <const char*>memchr(data, 63, n)  # '?'
            path_len = n if q == NULL else q - data
            if memchr(data, 37, path_len) == NULL:  # '%'
                raw_path = PyBytes_FromStringAndSize(data, path_len)
                path = PyUnicode_DecodeLatin1(data, path_len, NULL)
                if self.settings.root_path:  # (only a test of the string's length when empty)
                    raw_path, path = _with_root_path(self.settings.root_path, raw_path, path)
                scope["raw_path"] = raw_path
                scope["path"] = path
                scope["query_string"] = b"" if q == NULL else \
                    PyBytes_FromStringAndSize(q + 1, n - path_len - 1)
                return 0
        raw_path, query, path = _request_paths(PyBytes_FromStringAndSize(data, n),
                                               self.settings.root_path)
        scope["raw_path"] = raw_path
        scope["path"] = path
        scope["query_string"] = query
        return 0

    cdef inline _start_request(self, dict scope, ll.llhttp_t* p, bint expect_100, bint http10):
        """The head is good: a cycle for it, and the app's Task."""
        cdef RequestCycle cycle = RequestCycle.__new__(RequestCycle)
        cycle.protocol = self
        cycle.scope = scope
        # CONNECT has no body (llhttp reads none); what follows its head would be a
        # tunnel, which we do not offer: the connection closes after the response,
        # and those bytes are never read as requests (the pure mode does the same).
        cycle.keep_alive = ll.llhttp_should_keep_alive(p) and not self.shutting_down and \
            p.method != ll.HTTP_CONNECT
        cycle.http10 = http10
        cycle.head_request = p.method == ll.HTTP_HEAD
        cycle.expect_100 = expect_100
        cycle.content_length = -1
        cycle.method_id = p.method
        cycle.started = _monotonic()
        self.cycle = cycle
        self.started += 1

        self.server_state.total_requests += 1
        if _TASK_TAKES_CONTEXT and self.loop.get_task_factory() is None:
            # (asgi.start_task, inline)
            task = _Task(cycle.run(), loop=self.loop, context=self.context.copy(),
                         name=_REQUEST_TASK_NAME)
        else:
            task = _start_task(self.loop, self.context, cycle.run(), _REQUEST_TASK_NAME)
        cycle.task = task
        self.tasks[task] = scope

    cdef int _upgrade_head(self, dict scope, ll.llhttp_t* p) except -2:
        """A WebSocket handshake: refuse it (400 / 426), or keep its scope to hand
        the connection over once llhttp has parsed the whole request."""
        has_body = (p.flags & ll.F_CHUNKED) or \
            ((p.flags & ll.F_CONTENT_LENGTH) and p.content_length > 0)
        ws_scope, refused = _accept_handshake(scope, has_body, self.ssl, self.settings.source,
                                              self.server_state)
        if refused is not None:
            self.refusal = refused
            return -1
        self.upgrade_scope = ws_scope
        return 0

    cdef _upgrade(self, dict ws_scope, bytes rest):
        """Give the connection to the WebSocket protocol with the bytes that
        followed the handshake; this one is done."""
        self.upgrade_scope = None
        self._flush()  # responses to requests pipelined before the handshake
        self._let_go()
        _hand_over(self.transport, self.settings.source, self.server_state, ws_scope, rest, self.loop)

    cdef _http2(self, bytes preface):
        """HTTP/2 with prior knowledge (--http2): give the connection to the HTTP/2
        protocol with what came of it (the preface on); this one is done."""
        self._let_go()
        _hand_over_h2(self.transport, self.settings.source, self.server_state, self.app_state,
                      self.template["client"], self.template["server"], preface, self.loop)

    cdef _let_go(self):
        """Another protocol takes the connection: forget it, reading on."""
        self.closed = True
        self.connections.discard(self)
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        self.flow.resume_reading()

    cdef int _on_body(self, const char* at, size_t length) noexcept:
        cdef RequestCycle cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.disconnected:
            return 0  # answered already (or gone): the rest of the body is discarded
        if self.body_span == NULL and self.body.len == 0:
            # The bytes being parsed are alive until _execute returns, and the body is
            # flushed before that: one span (a Content-Length body, as a rule) is
            # copied once, into its chunk, not first into self.body.
            self.body_span = at
            self.body_span_len = length
            return 0
        if self.body_span != NULL:
            if buf_add(&self.body, self.body_span, self.body_span_len) < 0:
                return -1
            self.body_span = NULL
        return buf_add(&self.body, at, length)

    cdef int _message_complete(self) except -2:
        cdef RequestCycle cycle = self.cycle
        if self.upgrade_scope is not None:
            return ll.HPE_PAUSED  # the rest of the bytes are the WebSocket's
        if cycle is None:
            return 0
        if self.body.len or self.body_span != NULL:
            self._flush_body()
        cycle.message_complete = True
        cycle.expect_100 = False
        if cycle.response_complete:
            if cycle.keep_alive and not self.shutting_down and not self.closed:
                self._cycle_done()
                return 0  # answered already: parse the next request now
            return ll.HPE_PAUSED
        cycle.wake()
        return ll.HPE_PAUSED  # parse no further until the response is complete

    cdef _flush_body(self):
        cdef RequestCycle cycle = self.cycle
        if self.body_span != NULL:
            chunk = PyBytes_FromStringAndSize(self.body_span, self.body_span_len)
            self.body_span = NULL
        else:
            chunk = PyBytes_FromStringAndSize(self.body.data, self.body.len)
            self.body.len = 0
            if self.body.cap > BUFFER_SHRINK_ABOVE:
                buf_free(&self.body)
        if cycle is None or cycle.response_complete or cycle.disconnected:
            return
        if cycle.body_chunks is None:
            cycle.body_chunks = [chunk]
        else:
            cycle.body_chunks.append(chunk)
        cycle.body_buffered += PyBytes_GET_SIZE(chunk)
        cycle.expect_100 = False
        cycle.wake()
        if cycle.body_buffered > HIGH_WATER:
            self._pause_reading()

    cdef _resume_parsing(self):
        """The response is complete: parse what the client pipelined meanwhile."""
        cdef int err = self.parser.error
        if err == ll.HPE_PAUSED:
            ll.llhttp_resume(&self.parser)
        elif err == ll.HPE_PAUSED_UPGRADE:
            ll.llhttp_resume_after_upgrade(&self.parser)
        data = self.pending
        if data:
            self.pending = b""
            self._execute(<bytes>data, 0)
        if self.closed:
            return
        if self.eof and self.cycle is None:
            self._close()
            return
        if not self.pending:
            if self.cycle is None or self.cycle.body_buffered <= HIGH_WATER:
                self._resume_reading()

    # -- response done / next request -------------------------------------------

    cdef _response_complete(self, RequestCycle cycle):
        """Called by the cycle once the last response byte is written."""
        cdef Py_ssize_t started
        if self.metrics is not None:
            self._count_response(cycle)
        if not cycle.keep_alive or self.shutting_down or self.closed:
            self._close()
            return
        if cycle is not self.cycle:
            return
        if not cycle.message_complete:
            _skip_body(self, cycle)
            return
        self._cycle_done()
        started = self.started
        self._resume_parsing()
        if self.cycle is None and not self.pending and not self.in_head \
                and self.corked is None and not self.closed:
            self._release_buffers()
        elif self.started != started and self.cycle is not None and not self.closed:
            # The client had pipelined the next request already: hold its
            # response (and those after it) back, and write the batch at once
            # when no request is left or an app has to wait.
            self._cork()
        elif self.corked is not None:
            self._flush()

    cdef inline void _release_buffers(self) noexcept:
        """The connection is idle (keep-alive, nothing read of a next request): give
        its buffers back. An idle connection then holds no buffer of its own (a few
        KiB each, many thousands of connections), and the next request allocates
        them again -- one malloc each, against the microseconds a request costs."""
        buf_free(&self.head)
        buf_free(&self.body)
        buf_free(&self.out)
        if self.hdrs != NULL:
            free(self.hdrs)
            self.hdrs = NULL
            self.hdrs_cap = 0

    cpdef void _count_response(self, RequestCycle cycle) noexcept:
        """--metrics-port: one more response (complete, or the 500 for a failed app)."""
        self.metrics.count(_METRIC_HTTP10 if cycle.http10 else _METRIC_HTTP11, cycle.method_id,
                           cycle.status, _monotonic() - cycle.started, cycle.body_bytes)

    cdef _cork(self):
        """Hold writes back until the end of this loop pass (or HIGH_WATER bytes):
        the responses to a pipelined batch, or the chunks an app streams without
        waiting in between, then leave in one write."""
        if self.corked is None:
            self.corked = []
            self.corked_size = 0
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.flush_mark = self.started
            self.flusher.add(self)

    cpdef _out(self, data):
        if self.corked is None:
            self.write(data)
        else:
            self.corked.append(data)
            self.corked_size += len(data)
            if self.corked_size > HIGH_WATER:
                self._flush()

    cdef _out_parts(self, bytes head, bytes body, bytes tail):
        """A head (or size line), a body bigger than JOIN_MAX and its tail (None:
        none): one `transport.writelines`, the body not copied."""
        if self.corked is not None:
            self._out(head)
            self._out(body)
            if tail is not None:
                self._out(tail)
        elif tail is None:
            self.transport.writelines((head, body))
        else:
            self.transport.writelines((head, body, tail))

    cdef _flush(self):
        corked = self.corked
        if corked is not None:
            self.corked = None
            if corked and not self.closed:
                if len(corked) == 1:
                    self.write(corked[0])
                elif self.corked_size <= JOIN_MAX:
                    self.write(b"".join(corked))
                else:
                    self.transport.writelines(corked)

    cdef _flush_soon(self):
        """Called by the flusher a loop pass after `_cork`."""
        self.flush_scheduled = False
        if self.corked is None:
            return
        cycle = self.cycle
        if not self.closed and (self.started != self.flush_mark or
                                (cycle is not None and not cycle.running)):
            # a new request of the batch started meanwhile, or its Task has not run
            # yet (the flusher's callback may come first in a pass): its response
            # may come in this next loop pass
            self.flush_mark = self.started
            self.flush_scheduled = True
            self.flusher.add(self)
            return
        self._flush()

    cdef _cycle_done(self):
        """The request and its response are done: forget it, start the wait for the
        next head (its deadline and the keep-alive one; the timer re-armed lazily)."""
        cdef double now = _monotonic()
        self.cycle = None
        self.ka_deadline = now + self.settings.timeout_keep_alive
        self.header_deadline = now + self.settings.timeout_header
        self._arm(self.ka_deadline if self.ka_deadline < self.header_deadline else self.header_deadline)

    # -- timers: one TimerHandle, re-armed lazily ---------------------------------

    cdef _arm(self, double when):
        timer = self.timer
        if timer is not None:
            if self.timer_when <= when + 0.001:
                return  # fires earlier, and re-arms itself then
            timer.cancel()
        self.timer_when = when
        self.timer = self.loop.call_later(max(when - _monotonic(), 0.0), self._on_timer)

    def _on_timer(self):
        self.timer = None
        if self.closed:
            return
        cdef double now = _monotonic() + 0.001
        cdef double ka = self.ka_deadline
        cdef double hd = self.header_deadline
        if self.cycle is None and ((ka and now >= ka) or (hd and now >= hd)):
            self._close()
            return
        if ka and hd:
            self._arm(ka if ka < hd else hd)
        elif ka or hd:
            self._arm(ka if ka else hd)

    # -- helpers --------------------------------------------------------------------

    cdef _pause_reading(self):
        if not self.closed:
            self.flow.pause_reading()

    cpdef _resume_reading(self):
        if not self.closed:
            self.flow.resume_reading()

    cdef _fail(self, int status, bytes response=None):
        """A request the server answers itself (parse error, limit, refused
        handshake): answer with `response` or the canned one for `status`, close."""
        _fail_connection(self, status, response)

    cpdef _close(self):
        if not self.closed:
            self._flush()
            self.closed = True
            self.transport.close()
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()


cdef dict _disconnect():
    return {"type": "http.disconnect"}


@cython.final
cdef class RequestCycle:
    """One request: the app's `receive` and `send`, and the response state."""

    cdef readonly HttpProtocol protocol
    cdef readonly dict scope
    cdef object task
    cdef object waiter
    cdef public object message_error
    # request body
    cdef public list body_chunks
    cdef public Py_ssize_t body_buffered
    cdef bint message_complete
    cdef bint final_delivered
    cdef public bint disconnected
    cdef public bint expect_100
    cdef public bint keep_alive
    cdef readonly bint http10
    cdef bint head_request
    cdef bint running            # the app's Task has begun
    # response
    cdef public bint response_started
    cdef public bint head_pending  # started, head in protocol.out, not written yet
    cdef public bint response_complete
    cdef bint app_chunked
    cdef bint app_close
    cdef public int status
    cdef int method_id                # llhttp's method number (--metrics-port)
    cdef readonly int framing
    cdef readonly long long content_length  # the app's, or computed; -1: none
    cdef long long written
    cdef object response_headers   # the app's, for the access log
    # time.monotonic() when the head was complete; body bytes handed to the transport
    cdef readonly double started
    cdef public Py_ssize_t body_bytes
    # the Trailers extension (rare; cycle.py's send_extension): framing.py's trailer
    # mode, whether the last body message is out and the trailers not yet, their lines
    cdef public int trailers
    cdef public bint trailers_due
    cdef public bytes trailer_lines

    cpdef void wake(self) noexcept:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            try:
                if not waiter.done():
                    waiter.set_result(None)
            except BaseException:
                pass

    # -- the app ------------------------------------------------------------------

    async def run(self):
        # Hot-path twin of h11_impl.py's `run` (the app's call; how it ended is
        # cycle.py's); change both.
        cdef HttpProtocol protocol = self.protocol
        cdef double timeout = protocol.settings.timeout_request
        self.running = True
        timer = None
        if timeout > 0:
            timer = protocol.loop.call_later(timeout, _timed_out, self, self.task, timeout)
        try:
            result = await protocol.settings.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if _app_raised(self, exc):
                raise
        else:
            if result is not None or self.message_error is not None or \
                    not self.response_complete:
                _app_finished(self, result)  # (the common case is decided here, in C)
        finally:
            if timer is not None:
                timer.cancel()
            protocol.tasks.pop(self.task, None)
            self.task = None

    cpdef _fail(self, int status=500):
        _fail_cycle(self, status)

    async def receive(self):
        # Hot-path twin: the wait loop and the body handed out are written again in
        # h11_impl.py's `receive`; change both (the parity tests bind them).
        cdef HttpProtocol protocol = self.protocol
        if self.disconnected or self.response_complete:
            return _disconnect()
        if self.body_chunks is None and (not self.message_complete or self.final_delivered):
            if self.expect_100 and not self.message_complete:
                self.expect_100 = False
                if not self.response_started and not protocol.closed:
                    protocol._out(_CONTINUE)
                    protocol._flush()
            while self.body_chunks is None and (not self.message_complete or self.final_delivered):
                if not self.message_complete and not protocol.pending:
                    protocol._resume_reading()
                waiter = self.waiter = protocol.loop.create_future()
                try:
                    await waiter
                finally:
                    self.waiter = None
                if self.disconnected or self.response_complete:
                    return _disconnect()
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
        elif not protocol.pending:
            protocol._resume_reading()
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def send(self, message):
        # Hot-path twin (with `_send`) of h11_impl.py's `send`; change both.
        # A real coroutine function (not a cheaper ready-made awaitable), so that
        # apps may hand send(...) to create_task() and see errors when they await.
        cdef HttpProtocol protocol = self.protocol
        flow = protocol.flow
        if flow.write_paused and not self.disconnected and not protocol.closed:
            await flow.drain()
        if self._send(message):
            try:
                await self._pathsend(message)
            except _ASGIMessageError as exc:
                self.message_error = exc
                raise

    cdef int _send(self, message) except -1:
        """Handle a message; 1 when it is a pathsend, for `_pathsend`."""
        cdef HttpProtocol protocol = self.protocol
        cdef int pathsend = 0
        if self.disconnected or protocol.closed:
            # ASGI 2.4: send() on a closed connection raises an OSError subclass
            # (Starlette's StreamingResponse stops on it).
            self.disconnected = True
            raise _ClientDisconnected(_DISCONNECTED)
        try:
            if not self.response_started:
                self._start(message)
            elif self.response_complete:
                raise _after_complete(message)
            elif self.trailers_due:
                _send_extension(self, message)
            else:
                pathsend = self._body(message)
        except _ASGIMessageError as exc:
            self.message_error = exc
            raise
        return pathsend

    # -- response -------------------------------------------------------------------

    cdef int _start(self, message) except -1:
        # Hot-path twin of h11_impl.py's `_start` (which checks and encodes the
        # headers through headers.encode_response_headers); change both.
        cdef HttpProtocol protocol = self.protocol
        cdef Buf* out = &protocol.out
        cdef const unsigned char* s
        cdef const char* vs
        cdef Py_ssize_t n, vn
        cdef int verdict
        cdef HeaderFacts facts
        status = None
        headers = None
        announced = None
        if type(message) is dict:
            if (<dict>message).get("type") == _START:
                status = (<dict>message).get("status")
                headers = (<dict>message).get("headers", ())
                announced = (<dict>message).get("trailers")
        if type(status) is not int or not (100 <= status <= 599) or \
                (type(headers) is not list and type(headers) is not tuple):
            if _message_type_of(message) != _START and _send_extension(self, message):
                return 0  # (an early hint)
            status, headers = _response_start(message)
            announced = _announces_trailers(message)
        out.len = 0
        buf_bytes(out, <bytes>_STATUS_LINES[<long>status])
        default_head = protocol.server_state.default_head
        if default_head:
            buf_bytes(out, <bytes>default_head)
        facts.content_length = -1
        facts.chunked = False
        facts.close = False
        for item in headers:
            if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
                name = (<tuple>item)[0]
                value = (<tuple>item)[1]
            else:
                try:
                    name, value = item
                except (TypeError, ValueError):
                    raise _malformed_header(item) from None
            if not PyBytes_Check(name) or not PyBytes_Check(value):
                raise _bad_header(name, value)
            s = <const unsigned char*>PyBytes_AS_STRING(name)
            n = PyBytes_GET_SIZE(name)
            vs = PyBytes_AS_STRING(value)
            vn = PyBytes_GET_SIZE(value)
            verdict = check_header(s, n, vs, vn, value, self.http10, &facts)
            if verdict == HEADER_WRITE:
                write_header_line(out, s, n, vs, vn)
            elif verdict == HEADER_BAD:
                raise _bad_header(name, value)
        self.response_started = True
        self.head_pending = True
        self.status = status
        self.response_headers = headers
        self.content_length = facts.content_length
        self.app_chunked = facts.chunked
        if facts.close:
            self.keep_alive = False
            self.app_close = True
        if announced:
            self.trailers = _trailer_mode(self.scope["headers"], status, facts.content_length,
                                          self.http10, self.head_request)
        return 0

    cdef int _body(self, message) except -1:
        cdef bint more_body = False
        cdef bint ok = False
        body = None
        if type(message) is dict:
            if (<dict>message).get("type") == _BODY:
                body = (<dict>message).get("body", b"")
                more_body = (<dict>message).get("more_body", False)
                if type(body) is bytes:
                    ok = True
        if not ok:
            message_type = _message_type_of(message)
            if message_type == _PATHSEND:
                return 1
            if message_type != _BODY and _send_extension(self, message):
                return 0
            body, more_body = _response_body(message)
            if type(body) is not bytes:
                body = bytes(body)
        if not more_body and self.trailers:  # (rare) trailers follow this message
            more_body = _trailers_follow(self)
        if more_body:
            # more to come, perhaps at once: one write for what the app sends in this pass
            self.protocol._cork()
        if self.head_pending:
            self._first_body(<bytes>body, more_body)
        else:
            self._more_body(<bytes>body, more_body)
        return 0

    async def _pathsend(self, message):
        await _send_path(self, message)

    cpdef int _framing(self, Py_ssize_t n, bint more_body) except -1:
        """Choose the framing at the first body message; end the head in protocol.out."""
        cdef HttpProtocol protocol = self.protocol
        cdef Buf* out = &protocol.out
        cdef int framing = _FRAMING[_NO_BODY[self.status]][self.content_length >= 0][
            self.app_chunked][more_body][self.http10]
        self.head_pending = False
        if framing == M_LENGTH and self.content_length < 0:
            self.content_length = n
            buf_bytes(out, b"content-length: ")
            buf_decimal(out, n)
            buf_bytes(out, b"\r\n")
        elif framing == M_CHUNKED and not self.app_chunked:
            buf_bytes(out, _CHUNKED_LINE)
        elif framing == M_UNTIL_CLOSE and not self.head_request:
            self.keep_alive = False
        if self.head_request:
            framing = M_NONE  # the headers of a GET, no body bytes
        self.framing = framing
        if protocol.shutting_down:
            self.keep_alive = False
        if not self.keep_alive:
            if not self.app_close:
                buf_bytes(out, _CLOSE_LINE)
        elif self.http10:
            buf_bytes(out, _KEEP_ALIVE_LINE)
        buf_bytes(out, b"\r\n")
        return 0

    cpdef _write_head(self, bytes extra):
        """Write the head `_framing` ended (in protocol.out), and `extra` after it;
        responses held back for a pipelined batch go first."""
        cdef HttpProtocol protocol = self.protocol
        buf_bytes(&protocol.out, extra)
        protocol._out(PyBytes_FromStringAndSize(protocol.out.data, protocol.out.len))
        protocol._flush()

    cdef _first_body(self, bytes body, bint more_body):
        # Hot-path twin of h11_impl.py's `_first_body` (the framing of the first body
        # message, written again there over Python bytes); change both.
        cdef HttpProtocol protocol = self.protocol
        cdef Buf* out = &protocol.out
        cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
        cdef Py_ssize_t head_len
        cdef str error = None
        cdef int framing
        self._framing(n, more_body)
        framing = self.framing
        data = None
        tail = None
        if framing == M_LENGTH:
            self.written = n
            if n > self.content_length:
                error = CONTENT_LONGER
            else:
                data = body
                self.body_bytes = n
                if not more_body and n < self.content_length:
                    error = CONTENT_SHORTER
        elif framing == M_CHUNKED:
            self.body_bytes = n
            if n:
                buf_chunk_head(out, n)
                if n <= JOIN_MAX:
                    buf_bytes(out, body)
                    buf_bytes(out, _CHUNK_END_LAST if not more_body else _CHUNK_END)
                else:
                    data = body
                    tail = _CHUNK_END_LAST if not more_body else _CHUNK_END
            elif not more_body:
                buf_bytes(out, _LAST_CHUNK)
        elif framing == M_UNTIL_CLOSE:
            data = body
            self.body_bytes = n
        # one write: head (+ body)
        head_len = out.len
        if data is None or PyBytes_GET_SIZE(data) == 0:
            protocol._out(PyBytes_FromStringAndSize(out.data, head_len))
        elif PyBytes_GET_SIZE(data) <= JOIN_MAX:
            n = PyBytes_GET_SIZE(data)
            joined = PyBytes_FromStringAndSize(NULL, head_len + n)
            memcpy(PyBytes_AS_STRING(joined), out.data, head_len)
            memcpy(PyBytes_AS_STRING(joined) + head_len, PyBytes_AS_STRING(data), n)
            protocol._out(joined)
        else:
            protocol._out_parts(PyBytes_FromStringAndSize(out.data, head_len), data, tail)
        if out.cap > BUFFER_SHRINK_ABOVE:
            buf_free(out)
        if error is not None:
            self._length_error(error)
        elif not more_body:
            self._complete()

    cdef _more_body(self, bytes body, bint more_body):
        # Hot-path twin of h11_impl.py's `_more_body`; change both.
        cdef HttpProtocol protocol = self.protocol
        cdef Buf* out
        cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
        cdef int framing = self.framing
        if framing == M_LENGTH:
            self.written += n
            if self.written > self.content_length:
                self._length_error(CONTENT_LONGER)
                return
            if n:
                protocol._out(body)
                self.body_bytes += n
            if not more_body and self.written < self.content_length:
                self._length_error(CONTENT_SHORTER)
                return
        elif framing == M_CHUNKED:
            self.body_bytes += n
            if n:
                out = &protocol.out
                out.len = 0
                buf_chunk_head(out, n)
                tail = _CHUNK_END_LAST if not more_body else _CHUNK_END
                if n <= JOIN_MAX:
                    buf_bytes(out, body)
                    buf_bytes(out, tail)
                    protocol._out(PyBytes_FromStringAndSize(out.data, out.len))
                else:
                    protocol._out_parts(PyBytes_FromStringAndSize(out.data, out.len), body, tail)
            elif not more_body:
                protocol._out(_LAST_CHUNK)
        elif framing == M_UNTIL_CLOSE:
            self.body_bytes += n
            if n:
                protocol._out(body)
        if not more_body:
            self._complete()

    cpdef _complete(self):
        # Hot-path twin of h11_impl.py's `_complete`; change both.
        cdef HttpProtocol protocol = self.protocol
        if self.trailers_due:
            return  # the body is out; the last trailers message completes the response
        self.response_complete = True
        if protocol.access_log:
            _log_access(
                self.scope, self.status, self.started, self.body_bytes, self.response_headers
            )
        self.wake()
        protocol._response_complete(self)

    cpdef _length_error(self, str reason):
        _broken_length(self, reason)
