"""What the server answers and logs by itself, without the app: canned error
responses, the plain-port TLS hint, and the response-length errors."""

from __future__ import annotations

import logging

from fastserve.protocols.http.headers import STATUS_LINES, status_phrase

error_logger = logging.getLogger("fastserve.error")

# The first bytes of a TLS record carrying a handshake (content type 22, version 3.x).
TLS_HANDSHAKE_PREFIX = b"\x16\x03"

TLS_ON_PLAIN_PORT = (
    "Invalid HTTP request: the client speaks TLS (https) to a plain HTTP port; "
    "use http://, or serve TLS with --ssl-certfile/--ssl-keyfile"
)
CONTENT_LONGER = "Response content longer than Content-Length"
CONTENT_SHORTER = "Response content shorter than Content-Length"
PROTOCOL_INTERNAL_ERROR = "Internal error in the HTTP protocol\n"
# The answer for an app that failed before its response was out.
INTERNAL_SERVER_ERROR = 500

_canned: dict[int, bytes] = {}


def error_response(status: int) -> bytes:
    """A complete plain-text response that closes the connection.

    Used for the 400/413/414/431/500/503 answers the server gives without the app.
    """
    response = _canned.get(status)
    if response is None:
        body = b"%d %s\n" % (status, status_phrase(status).encode("ascii"))
        response = (
            STATUS_LINES[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\n" % len(body)
            + b"connection: close\r\n\r\n"
            + body
        )
        _canned[status] = response
    return response


def log_invalid_request(data: bytes) -> None:
    """Called once per rejected request head: says so when it was TLS."""
    if data[:2] == TLS_HANDSHAKE_PREFIX:
        error_logger.warning(TLS_ON_PLAIN_PORT)
