"""The HTTP side of a WebSocket upgrade, in both HTTP modes and with both framing
libraries: a bad handshake is refused by the server with the reason (400, or 426
naming version 13) and the connection closes; `--ws none` serves an upgrade request
as plain HTTP. (The WebSocket conversation itself: tests/test_websockets.py.)"""

from __future__ import annotations

import pytest

from conftest import APP

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: 16 bytes, base64


def handshake(
    method=b"GET", version=b"HTTP/1.1", key=KEY, ws_version=b"13", connection=b"Upgrade", body=b""
) -> bytes:
    lines = [
        b"%s /chat HTTP/1.1" % method
        if version == b"HTTP/1.1"
        else b"%s /chat %s" % (method, version),
        b"Host: x",
        b"Upgrade: websocket",
    ]
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    if ws_version is not None:
        lines.append(b"Sec-WebSocket-Version: " + ws_version)
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REFUSED = {
    # case: (request, status, words the reason must hold)
    "missing-key": (handshake(key=None), 400, "Sec-WebSocket-Key"),
    "short-key": (handshake(key=b"c2hvcnQ="), 400, "Sec-WebSocket-Key"),
    "not-base64-key": (handshake(key=b"not base64 at all!!!!!!!"), 400, "Sec-WebSocket-Key"),
    "post": (handshake(method=b"POST"), 400, "GET"),
    "http10": (handshake(version=b"HTTP/1.0"), 400, "HTTP/1.1"),
    "no-connection-upgrade": (handshake(connection=b"keep-alive"), 400, "Connection"),
    "with-body": (handshake(body=b"hello"), 400, "body"),
    "missing-version": (handshake(ws_version=None), 426, "13"),
    "version-8": (handshake(ws_version=b"8"), 426, "13"),
}


@pytest.mark.parametrize("ws", ["websockets", "wsproto"])
@pytest.mark.parametrize("case", REFUSED)
def test_bad_handshake_is_refused_with_the_reason(servers, mode, ws, case):
    request, status, reason = REFUSED[case]
    server = servers.get(APP, mode, "--ws", ws)
    with server.client() as client:
        client.send(request)
        response = client.read_response()
        assert response.status == status, response
        assert reason in response.text, response
        assert response.header("connection") == "close"
        if status == 426:
            assert response.header("sec-websocket-version") == "13"
        assert client.wait_closed() == b""


def test_ws_none_serves_upgrade_requests_as_http(servers, mode):
    server = servers.get(APP, mode, "--ws", "none")
    with server.client() as client:
        client.send(handshake())
        response = client.read_response()
        assert response.status == 200, response
        assert response.json()["type"] == "http"
