# cython: language_level=3
"""A growable C byte buffer: the output buffer a response head is written into
(and the parser's head and body buffers). Inline, so each module that cimports it
compiles it in: the HTTP/1.1 protocol (_parser.pyx), and the HTTP/2 and WSGI paths
to come. Out of memory: -1 without a Python exception (buf_add, buf_reserve; the
parser's callbacks cannot raise), or MemoryError (buf_bytes, buf_decimal,
buf_chunk_head)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy


cdef struct Buf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef inline int buf_reserve(Buf* b, Py_ssize_t extra) noexcept:
    """Room for `extra` more bytes; -1 when out of memory (no Python exception)."""
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap
    cdef char* p
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 1024
    while cap < need:
        cap *= 2
    p = <char*>realloc(b.data, cap)
    if p == NULL:
        return -1
    b.data = p
    b.cap = cap
    return 0


cdef inline int buf_add(Buf* b, const char* s, Py_ssize_t n) noexcept:
    if b.len + n > b.cap and buf_reserve(b, n) < 0:
        return -1
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef inline int buf_bytes(Buf* b, bytes s) except -1:
    if buf_add(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s)) < 0:
        raise MemoryError()
    return 0


cdef inline int buf_decimal(Buf* b, unsigned long long n) except -1:
    cdef char tmp[24]
    cdef int i = 24
    if n == 0:
        i -= 1
        tmp[i] = 48
    while n:
        i -= 1
        tmp[i] = <char>(48 + n % 10)
        n //= 10
    if buf_add(b, tmp + i, 24 - i) < 0:
        raise MemoryError()
    return 0


cdef inline int buf_chunk_head(Buf* b, unsigned long long n) except -1:
    """`<hex size>\\r\\n` of a chunk."""
    cdef char tmp[24]
    cdef int i = 22
    cdef const char* digits = b"0123456789abcdef"
    tmp[22] = 13
    tmp[23] = 10
    if n == 0:
        i -= 1
        tmp[i] = 48
    while n:
        i -= 1
        tmp[i] = digits[n & 15]
        n >>= 4
    if buf_add(b, tmp + i, 24 - i) < 0:
        raise MemoryError()
    return 0


cdef inline void buf_free(Buf* b) noexcept:
    if b.data != NULL:
        free(b.data)
    b.data = NULL
    b.len = 0
    b.cap = 0
