"""The examples in examples/ run as documented: `python -m fastserve
examples.fastapi_ws:app` from the repository root, in both HTTP modes, its HTTP route
driven with httpx and its WebSocket endpoints with the `websockets` client library."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from process_util import wait_until

pytest.importorskip("fastapi")

pytestmark = pytest.mark.timeout(60)

FASTAPI_WS_APP = "examples.fastapi_ws:app"
TIMEOUT = 15  # seconds for a handshake or an answer
ECHOES = ("hello", "héllo ✓", b"\x00\x01binary\xff", b"x" * 100_000)


@pytest.fixture
def app_server(servers, mode):
    """The example as its docstring runs it (`--ws auto`), in HTTP mode `mode`."""
    return servers.get(FASTAPI_WS_APP, mode)


@pytest.fixture
def clients():
    """An ExitStack for WebSocket clients: the ones still open are closed at teardown."""
    with contextlib.ExitStack() as stack:
        yield stack


def open_websocket(clients: contextlib.ExitStack, server, path: str) -> ClientConnection:
    url = f"ws://{server.host}:{server.port}{path}"
    return clients.enter_context(connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT))


def receive_event(websocket: ClientConnection) -> dict:
    return json.loads(websocket.recv(timeout=TIMEOUT))


def rooms(server) -> dict:
    response = httpx.get(server.url("/"), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["rooms"]


def test_http_route(app_server):
    response = httpx.get(app_server.url("/"), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"service": "fastapi_ws example on fastserve", "rooms": {}}


def test_websocket_echo(app_server, clients):
    websocket = open_websocket(clients, app_server, "/ws/echo")
    for message in ECHOES:
        websocket.send(message)
        assert websocket.recv(timeout=TIMEOUT) == message


def test_websocket_chat_room(app_server, clients):
    ann = open_websocket(clients, app_server, "/ws/chat/lobby?name=ann")
    assert receive_event(ann) == {"type": "join", "name": "ann", "members": 1}
    bob = open_websocket(clients, app_server, "/ws/chat/lobby?name=bob")
    assert receive_event(bob) == {"type": "join", "name": "bob", "members": 2}
    assert receive_event(ann) == {"type": "join", "name": "bob", "members": 2}
    assert rooms(app_server) == {"lobby": 2}

    bob.send("hi ann")
    for websocket in (ann, bob):
        assert receive_event(websocket) == {"type": "message", "name": "bob", "text": "hi ann"}

    bob.close()
    assert receive_event(ann) == {"type": "leave", "name": "bob", "members": 1}
    ann.close()
    # the close handshake is done before the app has seen the disconnect
    wait_until(lambda: rooms(app_server) == {}, TIMEOUT, message="the lobby to empty")
