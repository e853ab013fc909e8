"""What the server answers and logs by itself, without the app: canned error
responses, the hints for TLS and HTTP/2 on a plain HTTP/1.1 port, and the
response-length errors."""

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
# The request line that starts the HTTP/2 connection preface (RFC 9113 3.4), which
# a client sends first when it assumes HTTP/2 without an upgrade ("prior knowledge",
# h2c; curl --http2-prior-knowledge, gRPC clients).
HTTP2_PREFACE_START = b"PRI * HTTP/2.0\r\n"
# Its bytes before the version: what llhttp has taken when the C mode sees the version.
HTTP2_PREFACE_BEFORE_VERSION = HTTP2_PREFACE_START[: HTTP2_PREFACE_START.index(b"2.0")]

HTTP2_PRIOR_KNOWLEDGE = (
    "Invalid HTTP request: the client speaks HTTP/2 with prior knowledge (h2c), which "
    "this server serves with --http2 only; it serves HTTP/1.1"
)
CONTENT_LONGER = "Response content longer than Content-Length"
CONTENT_SHORTER = "Response content shorter than Content-Length"
PROTOCOL_INTERNAL_ERROR = "Internal error in the HTTP protocol\n"
# The answer for an app that failed before its response was out.
INTERNAL_SERVER_ERROR = 500

# The answer to a request whose app call outlived --timeout-request before starting
# its response.
REQUEST_TIMEOUT = 504

_canned: dict[int, bytes] = {}


def error_body(status: int) -> bytes:
    """The body of the server's own answer with `status`: `500 Internal Server Error`."""
    return b"%d %s\n" % (status, status_phrase(status).encode("ascii"))


def error_response(status: int) -> bytes:
    """A complete plain-text response that closes the connection.

    Used for the 400/413/414/431/500/503/504 answers the server gives without the app.
    """
    response = _canned.get(status)
    if response is None:
        body = error_body(status)
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
    """Called once per rejected request head: says so when it was TLS or HTTP/2."""
    if data[:2] == TLS_HANDSHAKE_PREFIX:
        error_logger.warning(TLS_ON_PLAIN_PORT)
    elif data.startswith(HTTP2_PREFACE_START):
        error_logger.warning(HTTP2_PRIOR_KNOWLEDGE)


def log_request_timeout(scope: dict, seconds: float) -> None:
    """One warning per request cut by --timeout-request.

    The rule, the same in both HTTP modes (each RequestCycle's `run`, then
    `cycle.timed_out`): with the option set, a timer starts with the app call and stops
    when it returns. When it fires before the response is complete, the client gets
    a 504 if the response had not started, else the connection is closed mid-body;
    then the app's Task is cancelled. The connection is closed in both cases, not
    kept alive: the app may go on (it may catch the cancellation), the request
    body may be half read, so nothing else can safely follow on it. A response
    already complete is left alone (work the app does after it, such as background
    tasks, is not timed). WebSocket connections are long-lived: not timed.
    """
    error_logger.warning(
        "Request timed out after %gs, cancelled: %s %s",
        seconds,
        scope.get("method", ""),
        scope.get("path", ""),
    )
