"""The opening handshake of RFC 6455, checked once for both HTTP modes: which
requests ask for a WebSocket, which of those are refused and with what answer, the
websocket scope, and the hand-over of the connection to a WebSocket protocol."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Optional

from fastserve.protocols.asgi import ASGI_VERSION
from fastserve.protocols.http.headers import STATUS_LINES
from fastserve.protocols.http.proxy import apply_proxy_headers
from fastserve.protocols.tls import TLS

Headers = Sequence[tuple[bytes, bytes]]

WEBSOCKET_VERSION = b"13"
KEY_BYTES = 16  # a Sec-WebSocket-Key is 16 random bytes, base64-encoded


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def is_websocket_upgrade(headers: Headers) -> bool:
    """The request asks to switch to WebSocket (an Upgrade header naming it)."""
    for name, value in headers:
        if name == b"upgrade" and b"websocket" in _tokens(value):
            return True
    return False


def refusal(status: int, reason: str, extra: bytes = b"") -> bytes:
    """A complete response refusing the handshake: the reason is the body."""
    body = reason.encode("latin-1") + b"\n"
    return b"".join(
        (
            STATUS_LINES[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            extra,
            b"connection: close\r\n\r\n",
            body,
        )
    )


def handshake_error(
    method: str, http_version: str, headers: Headers, has_body: bool
) -> Optional[bytes]:
    """The response refusing a bad WebSocket handshake, or None when it is valid:
    400 with the reason, or 426 naming the version this server speaks."""
    if method != "GET":
        return refusal(400, f"WebSocket handshake: method must be GET, not {method}")
    if http_version != "1.1":
        return refusal(400, "WebSocket handshake: HTTP/1.1 is required")
    if has_body:
        return refusal(400, "WebSocket handshake: a request body is not allowed")
    connection = []
    keys = []
    versions = []
    for name, value in headers:
        if name == b"connection":
            connection.extend(_tokens(value))
        elif name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value.strip())
    if b"upgrade" not in connection:
        return refusal(400, "WebSocket handshake: Connection header must include 'upgrade'")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return refusal(400, "WebSocket handshake: missing or invalid Sec-WebSocket-Key")
    if versions != [WEBSOCKET_VERSION]:
        return refusal(
            426,
            "WebSocket handshake: Sec-WebSocket-Version must be 13",
            b"sec-websocket-version: %s\r\n" % WEBSOCKET_VERSION,
        )
    return None


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def websocket_scope(scope: dict, secure: bool) -> dict:
    """The ASGI websocket scope for a handshake whose HTTP scope is `scope`
    (built as for any request, proxy headers not applied yet)."""
    subprotocols = []
    for name, value in scope["headers"]:
        if name == b"sec-websocket-protocol":
            subprotocols.extend(
                token.strip() for token in value.decode("latin-1").split(",") if token.strip()
            )
    extensions = {"websocket.http.response": {}}
    tls = scope["extensions"].get(TLS)
    if tls is not None:
        extensions[TLS] = tls
    return {
        "type": "websocket",
        "asgi": ASGI_VERSION.copy(),
        "http_version": scope["http_version"],
        "scheme": "wss" if secure else "ws",
        "server": scope["server"],
        "client": scope["client"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "raw_path": scope["raw_path"],
        "query_string": scope["query_string"],
        "headers": scope["headers"],
        "subprotocols": subprotocols,
        "state": scope["state"],
        "extensions": extensions,
    }


def accept(
    scope: dict, has_body: bool, secure: bool, settings, server_state
) -> tuple[Optional[dict], Optional[bytes]]:
    """A WebSocket handshake that both HTTP modes parsed as the request `scope`:
    (its WebSocket scope, None) -- proxy headers applied, counted as a request --
    or (None, the answer that refuses it: 400 / 426)."""
    refused = handshake_error(scope["method"], scope["http_version"], scope["headers"], has_body)
    if refused is not None:
        return None, refused
    ws_scope = websocket_scope(scope, secure)
    if settings.proxy_headers:
        apply_proxy_headers(ws_scope, settings.proxy_trust)
    server_state.total_requests += 1
    return ws_scope, None


def hand_over(transport, settings, server_state, scope: dict, rest: bytes, loop) -> None:
    """Give the connection to the WebSocket protocol, with the bytes that came
    after the handshake in the same read (a client may send a frame right away)."""
    protocol = settings.ws_protocol_class(settings, server_state, scope, loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if rest:
        protocol.data_received(rest)
