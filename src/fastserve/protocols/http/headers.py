"""Status lines and header bytes: the tables the C protocol reads at import, and
the checks the pure protocol runs on an app's response headers."""

from __future__ import annotations

import http
from collections.abc import Iterable

from fastserve.protocols.asgi import EARLY_HINT, TRAILERS, bad_header, malformed_header

# Every status an app may send (ASGI: 100..599); the status line table covers them.
STATUS_RANGE = range(100, 600)


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


STATUS_LINES: dict[int, bytes] = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, status_phrase(status).encode("ascii"))
    for status in STATUS_RANGE
}

# 256-entry tables (1 = allowed) that the C protocol reads directly; the pure mode
# uses the same bytes through the functions below.
TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN_TABLE: bytes = bytes(1 if chr(i).encode("latin-1") in TCHARS else 0 for i in range(256))
# A field value may hold any byte but NUL, CR and LF (RFC 9110 5.5); those three
# would let an app split or smuggle a response.
FIELD_VALUE_FORBIDDEN = b"\x00\n\r"
FIELD_VALUE_TABLE: bytes = bytes(0 if i in FIELD_VALUE_FORBIDDEN else 1 for i in range(256))


def is_token(name: bytes) -> bool:
    # bytes.translate deletes the allowed bytes in C; anything left is not a tchar.
    return bool(name) and not name.translate(None, TCHARS)


def is_field_value(value: bytes) -> bool:
    return len(value.translate(None, FIELD_VALUE_FORBIDDEN)) == len(value)


def checked_header(header, message_type: str = "http.response.start") -> tuple[bytes, bytes]:
    """One response header of an app: a (name, value) pair of bytes, the name a token,
    the value without CR, LF or NUL; else the ASGI error naming it. (HTTP/1.1 and
    HTTP/2 alike; the C protocol's `check_header` is its twin over the same tables.)"""
    try:
        name, value = header
    except (TypeError, ValueError):
        raise malformed_header(header, message_type) from None
    if not isinstance(name, bytes) or not isinstance(value, bytes):
        raise bad_header(name, value, message_type)
    if not is_token(name) or not is_field_value(value):
        raise bad_header(name, value, message_type)
    return name, value


# Connection-specific header fields (RFC 9113 8.2.2): an app's are dropped from an
# HTTP/2 response, as the HTTP/1.1 framing they speak of is not HTTP/2's.
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# Fields a trailer section may not carry (RFC 9110 6.5.1: framing, routing and
# connection fields; RFC 9113 8.2.2: the connection-specific ones). A pseudo-header's
# name is no token: checked_header refuses it.
TRAILER_FORBIDDEN = CONNECTION_SPECIFIC | {b"te", b"trailer", b"content-length", b"host"}


def trailer_fields(headers) -> list:
    """An app's trailer fields (`http.response.trailers`), checked as response
    headers are and names lowercased; a field of TRAILER_FORBIDDEN is refused.
    (HTTP/1.1 in both modes and HTTP/2 alike.)"""
    fields = []
    for header in headers:
        name, value = checked_header(header, TRAILERS)
        name = name.lower()
        if name in TRAILER_FORBIDDEN:
            raise bad_header(name, value, TRAILERS)
        fields.append((name, value))
    return fields


def field_lines(fields) -> bytes:
    """Checked fields as HTTP/1.1 field lines (a trailer section, a 1xx head)."""
    return b"".join(b"%s: %s\r\n" % field for field in fields)


def link_fields(links) -> list:
    """An early hint's links as Link fields (RFC 8297), each value checked as a
    response header's is."""
    fields = []
    for link in links:
        if not isinstance(link, bytes) or not link or not is_field_value(link):
            raise bad_header(b"link", link, EARLY_HINT)
        fields.append((b"link", link))
    return fields


def encode_response_headers(
    headers: Iterable, http10: bool = False
) -> tuple[bytes, int, bool, bool]:
    """Check the app's response headers and encode them as head lines.

    Returns (lines, content_length or -1, has_transfer_encoding, wants_close).
    To an HTTP/1.0 client the app's Transfer-Encoding is not sent (RFC 9112 6.1: it
    cannot read one): the header is dropped, and the body is framed by its length or
    by closing the connection. The C protocol runs the same checks in C over
    TOKEN_TABLE / FIELD_VALUE_TABLE.
    """
    lines = []
    content_length = -1
    transfer_encoding = False
    close = False
    for header in headers:
        name, value = checked_header(header)
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.strip().isdigit():
                raise bad_header(name, value)
            content_length = int(value)
        elif lowered == b"transfer-encoding":
            if http10:
                continue
            transfer_encoding = True
        elif lowered == b"connection" and value.strip().lower() == b"close":
            close = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines), content_length, transfer_encoding, close
