# cython: language_level=3
"""The response writer of the C mode: one app header checked (token name, field
value, a plain-number Content-Length) and written as a head line into a Buf, with
what it says about the response's framing.

The rules are headers.py's (its TOKEN_TABLE and FIELD_VALUE_TABLE, copied once by
`init_tables`) and `headers.encode_response_headers`' for the pure mode. Inline:
compiled into each module that cimports it (the HTTP/1.1 protocol in _parser.pyx;
the HTTP/2 and WSGI paths to come), each with its own copy of the tables, filled
when that module is imported."""

from fastserve._buffer cimport Buf, buf_reserve
from libc.string cimport memcpy

cdef extern from *:
    """
    static unsigned char fastserve_token[256];   /* headers.TOKEN_TABLE */
    static unsigned char fastserve_fvalue[256];  /* headers.FIELD_VALUE_TABLE */
    """
    unsigned char fastserve_token[256]
    unsigned char fastserve_fvalue[256]


cdef struct HeaderFacts:
    long long content_length  # -1: none
    bint chunked              # a Transfer-Encoding header
    bint close                # Connection: close


cdef enum:
    HEADER_WRITE = 0  # a good header: write it
    HEADER_SKIP = 1   # a good header not sent (Transfer-Encoding to an HTTP/1.0 client)
    HEADER_BAD = 2    # the caller raises asgi.bad_header(name, value)


cdef inline void init_tables(token_table, field_value_table):
    """Fill this module's tables from headers.py's (at import)."""
    cdef int i
    for i in range(256):
        fastserve_token[i] = token_table[i]
        fastserve_fvalue[i] = field_value_table[i]


cdef inline bint ascii_lower_eq(const char* s, Py_ssize_t n, const char* lit,
                                Py_ssize_t ln) noexcept:
    """`s` lowercased (ASCII) equals the lowercase `lit`."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != ln:
        return False
    for i in range(n):
        c = <unsigned char>s[i]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint is_strip_ws(unsigned char c) noexcept:
    # bytes.strip() whitespace
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12


cdef inline void strip_span(const char* vs, Py_ssize_t vn, Py_ssize_t* a,
                            Py_ssize_t* b) noexcept:
    """`vs[a:b]` is `vs[:vn].strip()`."""
    a[0] = 0
    b[0] = vn
    while a[0] < b[0] and is_strip_ws(vs[a[0]]):
        a[0] += 1
    while b[0] > a[0] and is_strip_ws(vs[b[0] - 1]):
        b[0] -= 1


cdef inline int check_header(const unsigned char* s, Py_ssize_t n, const char* vs,
                             Py_ssize_t vn, object value, bint http10,
                             HeaderFacts* facts) except -1:
    """HEADER_WRITE, HEADER_SKIP or HEADER_BAD for the header `s`: `vs` (`value`,
    the bytes object, for a Content-Length too long to add up in C)."""
    cdef Py_ssize_t i, a, b
    cdef long long cl
    if n == 0:
        return HEADER_BAD
    for i in range(n):
        if not fastserve_token[s[i]]:
            return HEADER_BAD
    for i in range(vn):
        if not fastserve_fvalue[<unsigned char>vs[i]]:
            return HEADER_BAD
    if n == 14 and ascii_lower_eq(<const char*>s, n, b"content-length", 14):
        strip_span(vs, vn, &a, &b)
        if a == b:
            return HEADER_BAD
        for i in range(a, b):
            if not (48 <= vs[i] <= 57):
                return HEADER_BAD
        if b - a > 18:
            cl = min(int(value), 1 << 62)
        else:
            cl = 0
            for i in range(a, b):
                cl = cl * 10 + (vs[i] - 48)
        facts.content_length = cl
    elif n == 17 and ascii_lower_eq(<const char*>s, n, b"transfer-encoding", 17):
        if http10:
            return HEADER_SKIP  # not to an HTTP/1.0 client (headers.encode_response_headers)
        facts.chunked = True
    elif n == 10 and ascii_lower_eq(<const char*>s, n, b"connection", 10):
        strip_span(vs, vn, &a, &b)
        if ascii_lower_eq(vs + a, b - a, b"close", 5):
            facts.close = True
    return HEADER_WRITE


cdef inline int write_header_line(Buf* out, const unsigned char* s, Py_ssize_t n,
                                  const char* vs, Py_ssize_t vn) except -1:
    """`name: value\\r\\n` at the end of `out`."""
    if buf_reserve(out, n + vn + 4) < 0:
        raise MemoryError()
    memcpy(out.data + out.len, s, n)
    out.data[out.len + n] = 58  # ':'
    out.data[out.len + n + 1] = 32
    memcpy(out.data + out.len + n + 2, vs, vn)
    out.data[out.len + n + 2 + vn] = 13
    out.data[out.len + n + 3 + vn] = 10
    out.len += n + vn + 4
    return 0
