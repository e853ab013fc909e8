"""How a response body is framed on the wire, decided once per response by the
same function in both modes, and the bytes each framing adds; the one request
transfer coding taken."""

from __future__ import annotations

# framing modes
LENGTH = 0  # content-length: the app's, or computed from a one-message body
CHUNKED = 1  # transfer-encoding: chunked, the app's or the server's
UNTIL_CLOSE = 2  # HTTP/1.0 client, unknown length: the body ends at close
NONE = 3  # 1xx / 204 / 304: no body bytes at all

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSE_LINE = b"connection: close\r\n"
KEEP_ALIVE_LINE = b"connection: keep-alive\r\n"
CHUNKED_LINE = b"transfer-encoding: chunked\r\n"
CHUNK_END = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
LAST_CHUNK_LINE = b"0\r\n"  # then a trailer section's field lines, then CHUNK_END
EARLY_HINTS_LINE = b"HTTP/1.1 103 Early Hints\r\n"
EARLY_HINTS_STATUS = 103

# What becomes of the trailers an app announced (the HTTP Trailers extension;
# README "Trailers and early hints"): the same rule in both modes.
NO_TRAILERS = 0  # none announced
TRAILERS_DROPPED = 1  # announced: awaited from the app, not sent
TRAILERS_SENT = 2  # sent: after the last chunk (HTTP/1.1), as the last HEADERS (HTTP/2)

# A body (or a chunk) up to this size is copied with its head (or size line) into one
# bytes object and written; a bigger one is handed to `transport.writelines` with
# them, not copied: one system call on uvloop (writev), where copying it would cost
# more than that call.
JOIN_MAX = 16384


def is_chunked_only(headers) -> bool:
    """RFC 9112 6.1, 6.3: the one transfer coding a request may have is `chunked`,
    in one Transfer-Encoding header. Any other (a coding we cannot decode, a list, a
    second header) is a 400: llhttp would pass `gzip, chunked` or an unknown coding
    on an Upgrade or CONNECT request, h11 does not (this is its rule)."""
    values = [value for name, value in headers if name == b"transfer-encoding"]
    return len(values) == 1 and values[0].strip(b" \t").lower() == b"chunked"


def status_has_no_body(status: int) -> bool:
    """RFC 9110 6.4.1: 1xx, 204 and 304 responses never carry a body."""
    return status < 200 or status == 204 or status == 304


def choose_framing(
    status: int, content_length: int, app_chunked: bool, more_body: bool, http10: bool
) -> int:
    """The framing of a response, decided at its first body message.

    `content_length` is the app's (-1: none). LENGTH without an app
    content-length means the server adds one (the whole body came in one
    message); CHUNKED without `app_chunked` means the server adds
    transfer-encoding. A HEAD response is framed as its GET, then sends no body.
    """
    if status_has_no_body(status):
        return NONE
    if content_length >= 0:
        return LENGTH
    if app_chunked:
        return CHUNKED
    if not more_body:
        return LENGTH
    if not http10:
        return CHUNKED
    return UNTIL_CLOSE


def accepts_trailers(request_headers) -> bool:
    """The request's TE field lists `trailers` (RFC 9110 10.1.4): the ASGI
    extension sends trailers only to such a client."""
    for name, value in request_headers:
        if name == b"te":
            for member in value.split(b","):
                if member.split(b";", 1)[0].strip(b" \t").lower() == b"trailers":
                    return True
    return False


def trailer_mode(
    request_headers, status: int, content_length: int, http10: bool, head_request: bool
) -> int:
    """HTTP/1.1: announced trailers are sent to a client that accepts them when the
    body is chunked: not to an HTTP/1.0 client, not after the app's Content-Length,
    not on a response without a body (HEAD, 1xx, 204, 304). Such a response is
    framed as if its last body message were not the last (chunked, when the server
    frames it), its trailer section after the last chunk."""
    if (
        http10
        or head_request
        or content_length >= 0
        or status_has_no_body(status)
        or not accepts_trailers(request_headers)
    ):
        return TRAILERS_DROPPED
    return TRAILERS_SENT


def http2_trailer_mode(request_headers) -> int:
    """HTTP/2: announced trailers are sent (the response's last HEADERS frame)
    to a client that accepts them, whatever the body."""
    return TRAILERS_SENT if accepts_trailers(request_headers) else TRAILERS_DROPPED
