"""HTTP rules shared by the C protocol (`_parser.pyx`) and the pure-Python one
(`h11_protocol.py`), so the two modes cannot drift.

Everything here runs at most once per request (never per parser callback), or once
at start-up to build tables that the C code reads.
"""

from __future__ import annotations

import builtins
import http
import ipaddress
import logging
import urllib.parse
from typing import Iterable, Optional, Sequence, Union

error_logger = logging.getLogger("fastserve.error")

# -- status lines -----------------------------------------------------------------


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


STATUS_LINES: dict[int, bytes] = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status).encode("ascii"))
    for status in range(100, 600)
}


def status_line(status: int) -> bytes:
    """The HTTP/1.1 status line for `status`, from the prebuilt table."""
    return STATUS_LINES[status]


# -- header bytes -----------------------------------------------------------------
# 256-entry tables (1 = allowed) that the C protocol reads directly; the pure mode
# uses the same tables through the functions below.

_TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN_TABLE: bytes = bytes(1 if chr(i).encode("latin-1") in _TCHARS else 0 for i in range(256))
# A field value may hold any byte but NUL, CR and LF (RFC 9110 5.5); those three
# would let an app split or smuggle a response.
FIELD_VALUE_TABLE: bytes = bytes(0 if i in (0, 10, 13) else 1 for i in range(256))


_FIELD_VALUE_FORBIDDEN = b"\x00\n\r"


def is_token(name: bytes) -> bool:
    # bytes.translate deletes the allowed bytes in C; anything left is not a tchar.
    return bool(name) and not name.translate(None, _TCHARS)


def is_field_value(value: bytes) -> bool:
    return len(value.translate(None, _FIELD_VALUE_FORBIDDEN)) == len(value)


# -- request target ---------------------------------------------------------------


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (raw_path, query_string).

    Absolute-form targets (`GET http://host/path?q HTTP/1.1`) give the path of
    the URL (RFC 9112 3.2.2); `*` (OPTIONS) is kept as is.
    """
    if target[:1] != b"/" and target != b"*":
        scheme_end = target.find(b"://")
        if scheme_end > 0:
            path_start = target.find(b"/", scheme_end + 3)
            query_start = target.find(b"?", scheme_end + 3)
            if path_start < 0 or (0 <= query_start < path_start):
                target = b"/" + (target[query_start:] if query_start >= 0 else b"")
            else:
                target = target[path_start:]
    raw_path, _, query_string = target.partition(b"?")
    return raw_path, query_string


def decode_path(raw_path: bytes) -> str:
    """The percent-decoded `path` of the ASGI scope (`raw_path` keeps the bytes)."""
    path = raw_path.decode("latin-1")
    if "%" in path:
        return urllib.parse.unquote(path)
    return path


# -- request checks ---------------------------------------------------------------


def host_error(http_version: str, headers: Sequence[tuple[bytes, bytes]]) -> Optional[str]:
    """RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host header.

    Returns the reason for a 400, or None when the request is fine.
    """
    count = 0
    for name, _ in headers:
        if name == b"host":
            count += 1
    if count > 1:
        return "multiple Host headers"
    if count == 0 and http_version == "1.1":
        return "missing Host header"
    return None


# -- addresses --------------------------------------------------------------------

Address = Optional[tuple[str, int]]


def get_remote_addr(transport) -> Address:
    """The client address of a TCP connection, or None for a unix socket."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (list, tuple)) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


def get_local_addr(transport) -> Address:
    """The server address of a TCP connection, or None for a unix socket."""
    local = transport.get_extra_info("sockname")
    if isinstance(local, (list, tuple)) and len(local) >= 2:
        return (str(local[0]), int(local[1]))
    return None


def is_ssl(transport) -> bool:
    return transport.get_extra_info("sslcontext") is not None


# -- proxy headers ----------------------------------------------------------------


class ProxyTrust:
    """Which peers may set X-Forwarded-For / X-Forwarded-Proto.

    `forwarded_allow_ips` is a comma-separated string or a list of IP addresses,
    CIDR networks, or `*` for everyone. A peer on a unix socket (no address) is
    trusted: only a local process with access to the socket file can be one, and
    that is how Nginx sits in front of fastserve.
    """

    def __init__(self, forwarded_allow_ips: Union[str, Iterable[str], None]) -> None:
        if forwarded_allow_ips is None:
            items = ["127.0.0.1"]
        elif isinstance(forwarded_allow_ips, str):
            items = [item.strip() for item in forwarded_allow_ips.split(",")]
        else:
            items = [str(item).strip() for item in forwarded_allow_ips]
        self.always = "*" in items
        self.networks = []
        self.literals = set()
        for item in items:
            if not item or item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)

        # Parsing an address costs more than the rest of a request, and peers repeat:
        # answers are cached, the cache emptied when full so it stays small.
        self._answers: dict[Optional[str], bool] = {}

    def is_trusted(self, host: Optional[str]) -> bool:
        answer = self._answers.get(host)
        if answer is None:
            if len(self._answers) >= 1024:
                self._answers.clear()
            answer = self._answers[host] = self._is_trusted(host)
        return answer

    def _is_trusted(self, host: Optional[str]) -> bool:
        if self.always or host is None or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_from_forwarded_for(self, value: str) -> Optional[str]:
        """The client in an X-Forwarded-For chain: the rightmost untrusted hop."""
        hops = [hop.strip() for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else None


def apply_proxy_headers(scope: dict, trust: ProxyTrust) -> None:
    """Take `client` and `scheme` from X-Forwarded-* when the peer is trusted."""
    forwarded_proto = forwarded_for = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            forwarded_proto = value
        elif name == b"x-forwarded-for":
            forwarded_for = value
    if forwarded_proto is None and forwarded_for is None:
        return
    client = scope.get("client")
    if not trust.is_trusted(client[0] if client else None):
        return
    if forwarded_proto is not None:
        proto = forwarded_proto.decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https", "ws", "wss"):
            if scope["type"] == "websocket":
                proto = "wss" if proto in ("https", "wss") else "ws"
            else:
                proto = "https" if proto in ("https", "wss") else "http"
            scope["scheme"] = proto
    if forwarded_for is not None:
        host = trust.client_from_forwarded_for(forwarded_for.decode("latin-1"))
        if host:
            scope["client"] = (host, 0)


# -- canned responses -------------------------------------------------------------

_canned: dict[int, bytes] = {}


def error_response(status: int) -> bytes:
    """A complete plain-text response that closes the connection.

    Used for 400/413/414/431/500/503 answers the server gives without the app.
    """
    response = _canned.get(status)
    if response is None:
        body = b"%d %s\n" % (status, _phrase(status).encode("ascii"))
        response = (
            STATUS_LINES[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\n" % len(body)
            + b"connection: close\r\n\r\n"
            + body
        )
        _canned[status] = response
    return response


CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Statuses whose responses never carry a body (RFC 9110 6.4.1).
def status_has_no_body(status: int) -> bool:
    return status < 200 or status == 204 or status == 304


# -- ASGI message checks ----------------------------------------------------------


class ClientDisconnected(OSError):
    """Raised by `send()` when the app sends a message after the connection is
    gone (ASGI spec 2.4: a server-specific OSError subclass). Both protocols
    raise it, and do not log it as an application error when the app lets it
    propagate."""


class ASGIMessageError(RuntimeError):
    """The app sent a message the ASGI spec does not allow at this point."""


def expect_message(message, expected: str) -> None:
    message_type = message.get("type") if isinstance(message, dict) else None
    if message_type != expected:
        raise ASGIMessageError(
            f"Expected ASGI message {expected!r}, but got {message_type!r}: {message!r:.200}"
        )


def response_start(message) -> tuple[int, list]:
    """Validate `http.response.start`; return (status, headers)."""
    expect_message(message, "http.response.start")
    status = message.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ASGIMessageError(
            f"ASGI message 'http.response.start' has an invalid status {status!r}"
        )
    headers = message.get("headers", ())
    if not isinstance(headers, list):
        headers = list(headers)
    return status, headers


def bad_header(name, value) -> ASGIMessageError:
    return ASGIMessageError(
        f"ASGI message 'http.response.start' has an invalid header {name!r}: {value!r:.200}"
    )


def encode_response_headers(headers: Iterable) -> tuple[bytes, int, bool, bool]:
    """Check the app's response headers and encode them as head lines.

    Returns (lines, content_length or -1, has_transfer_encoding, wants_close).
    The C protocol runs the same checks in C over TOKEN_TABLE / FIELD_VALUE_TABLE.
    """
    lines = []
    content_length = -1
    transfer_encoding = False
    close = False
    for header in headers:
        try:
            name, value = header
        except (TypeError, ValueError):
            raise ASGIMessageError(
                f"ASGI message 'http.response.start' has a malformed header {header!r:.200}"
            ) from None
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise bad_header(name, value)
        if not is_token(name) or not is_field_value(value):
            raise bad_header(name, value)
        lowered = name.lower()
        if lowered == b"content-length":
            if not value.strip().isdigit():
                raise bad_header(name, value)
            content_length = int(value)
        elif lowered == b"transfer-encoding":
            transfer_encoding = True
        elif lowered == b"connection" and value.strip().lower() == b"close":
            close = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines), content_length, transfer_encoding, close


def response_body(message) -> tuple[bytes, bool]:
    """Validate `http.response.body`; return (body, more_body)."""
    expect_message(message, "http.response.body")
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ASGIMessageError(
            f"ASGI message 'http.response.body' has a non-bytes body of type {type(body).__name__}"
        )
    return body, bool(message.get("more_body", False))


# -- when the app is done -----------------------------------------------------------

_ExceptionGroup = getattr(builtins, "BaseExceptionGroup", None)  # 3.11+


def from_disconnect(exc: Optional[BaseException]) -> bool:
    """True when `exc` is ClientDisconnected, or was raised while handling one
    (Starlette turns it into its own ClientDisconnect), or is a group of such."""
    depth = 0
    while exc is not None and depth < 16:
        if isinstance(exc, ClientDisconnected):
            return True
        if _ExceptionGroup is not None and isinstance(exc, _ExceptionGroup):
            return all(from_disconnect(sub) for sub in exc.exceptions)
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
        depth += 1
    return False


def log_app_exception(exc: BaseException, disconnected: bool) -> None:
    """Log an exception the app let out, once; the protocol then fails the request."""
    if disconnected and from_disconnect(exc):
        # A client that went away is normal, not an application error.
        error_logger.debug(
            "Client disconnected; the application stopped with %s", type(exc).__name__
        )
    else:
        error_logger.error("Exception in ASGI application\n", exc_info=exc)


# What a protocol does once the app returned without a clean, complete response.
APP_DONE = 0  # nothing: the response is complete
APP_FAIL = 1  # answer 500 if the response has not started, then close
APP_CLOSE = 2  # close the connection (the response started but is broken)


def app_returned(
    result: object,
    message_error: Optional[BaseException],
    response_started: bool,
    response_complete: bool,
    disconnected: bool,
) -> int:
    """Judge how the app's call ended, log what was wrong, and say what to do."""
    if message_error is not None:
        error_logger.error("Invalid ASGI message sent by the application\n", exc_info=message_error)
        return APP_FAIL
    if result is not None:
        error_logger.error("ASGI callable should return None, but returned %r.", result)
        return APP_CLOSE
    if not response_started:
        if not disconnected:
            error_logger.error("ASGI callable returned without starting response.")
        return APP_FAIL
    if not response_complete:
        if not disconnected:
            error_logger.error("ASGI callable returned without completing response.")
        return APP_CLOSE
    return APP_DONE
