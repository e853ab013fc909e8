"""What a WSGI app's response must be (PEP 3333), checked before anything of it
goes to the protocol: the status and headers `start_response` takes, the body's
chunks, and `wsgi.file_wrapper`.

The checks are gunicorn's: a status "200 OK", header names and values as `str`
(latin-1), names that are tokens, values without CR, LF or NUL. Hop-by-hop headers,
which PEP 3333 forbids an app, are dropped, as gunicorn drops them: framing and
keep-alive are the server's.
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
from typing import Any, Optional

from fastserve.protocols.http.headers import is_field_value, is_token

# A status line's end as PEP 3333 writes it: a final status code, a space, a reason.
STATUS_RE = re.compile(r"([2-5][0-9][0-9]) [^\x00\r\n]*")
# RFC 9110 7.6.1 (and PEP 3333's list): headers about one connection, not the response.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    )
)
CONTENT_LENGTH = b"content-length"
# The block size of wsgi.file_wrapper when the app gives none (PEP 3333's example's).
FILE_BLOCK_SIZE = 8192
# An open file as a path the same process can open again (Linux's /proc).
PROC_FD = "/proc/self/fd/{fd}"
# The statuses and headers whose check is remembered (least recently used dropped).
CHECKED_CACHE_SIZE = 256
# Header whitespace trimmed from values (RFC 9110 5.5), as gunicorn trims it.
OPTIONAL_WHITESPACE = b" \t"


class WSGIResponseError(Exception):
    """The app's response breaks PEP 3333 (a bad status, header or body chunk): the
    client gets a 500 and the log one line naming the value."""


def parse_status(status: Any) -> int:
    """The status code of `start_response`'s status ("200 OK")."""
    if not isinstance(status, str):
        raise WSGIResponseError(
            f"the status must be a str such as '200 OK', not {type(status).__name__}: "
            f"{status!r:.200}"
        )
    return _status_code(status)


@functools.lru_cache(maxsize=CHECKED_CACHE_SIZE)
def _status_code(status: str) -> int:
    """(An app answers with a few statuses: each is checked once.)"""
    match = STATUS_RE.fullmatch(status)
    if match is None:
        raise WSGIResponseError(
            f"the status {status!r:.200} is not a final status code, a space and a reason "
            "phrase, such as '200 OK'"
        )
    return int(match.group(1))


def _header_bytes(header: Any) -> Optional[tuple[bytes, bytes]]:
    """One header as (name, value) bytes, None when it is hop-by-hop (dropped), or
    WSGIResponseError naming it."""
    if not isinstance(header, tuple) or len(header) != 2:
        raise WSGIResponseError(f"a response header must be a (name, value) tuple: {header!r:.200}")
    name, value = header
    if not isinstance(name, str) or not isinstance(value, str):
        raise WSGIResponseError(
            f"a response header's name and value must be str: {name!r:.100}: {value!r:.200}"
        )
    return _checked_header(name, value)


@functools.lru_cache(maxsize=CHECKED_CACHE_SIZE)
def _checked_header(name: str, value: str) -> Optional[tuple[bytes, bytes]]:
    """(An app sends the same headers again and again: each is checked once.)"""
    try:
        name_bytes, value_bytes = name.encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise WSGIResponseError(
            f"the response header {name!r:.100}: {value!r:.200} is not latin-1"
        ) from None
    if not is_token(name_bytes):
        raise WSGIResponseError(f"the response header name {name!r:.200} is not a token")
    if not is_field_value(value_bytes):
        raise WSGIResponseError(
            f"the response header {name!r:.100} has CR, LF or NUL in its value: {value!r:.200}"
        )
    if name_bytes.lower() in HOP_BY_HOP:
        return None
    return name_bytes, value_bytes.strip(OPTIONAL_WHITESPACE)


def encode_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """`start_response`'s headers as the ASGI message's, hop-by-hop ones left out."""
    if not isinstance(headers, list):
        raise WSGIResponseError(
            f"the response headers must be a list, not {type(headers).__name__}: {headers!r:.200}"
        )
    encoded = []
    for header in headers:
        encoded_header = _header_bytes(header)
        if encoded_header is not None:
            encoded.append(encoded_header)
    return encoded


def content_length(headers: list[tuple[bytes, bytes]]) -> Optional[int]:
    """The app's Content-Length (the protocols check that it is a number), or None."""
    for name, value in headers:
        if name.lower() == CONTENT_LENGTH:
            return int(value) if value.isdigit() else None
    return None


def body_chunk(chunk: Any) -> bytes:
    """A chunk of the app's body (its iterable's, or write()'s), which must be bytes."""
    if not isinstance(chunk, bytes):
        raise WSGIResponseError(
            f"the response body must be bytes, not {type(chunk).__name__}: {chunk!r:.200}"
        )
    return chunk


class FileWrapper:
    """`wsgi.file_wrapper`: an iterable over a file-like object's blocks, closing it
    with the response. Around a real file at its start, the runner sends the file by
    the protocols' pathsend (sendfile) instead of reading it (`sendable_path`)."""

    def __init__(self, filelike: Any, blksize: int = FILE_BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def sendable_file(body: Any, headers: list[tuple[bytes, bytes]]) -> Optional[int]:
    """The descriptor of the file pathsend may send for a FileWrapper body: a regular
    file read from its start, whose size the app's Content-Length (if any) does not
    shorten, which this process can open again by PROC_FD; else None (the file is
    then read in blocks, as PEP 3333 describes)."""
    if not isinstance(body, FileWrapper):
        return None
    filelike = body.filelike
    try:
        fd = filelike.fileno()
        position = filelike.tell()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if position != 0 or not stat.S_ISREG(info.st_mode) or not os.path.exists(proc_path(fd)):
        return None
    length = content_length(headers)
    if length is not None and length != info.st_size:
        return None
    return fd


def proc_path(fd: int) -> str:
    return PROC_FD.format(fd=fd)
