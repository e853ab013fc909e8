"""send() after the client disconnected (ASGI spec 2.4), both modes.

The scope says spec_version "2.4", so `send()` on a closed connection must raise a
server-specific OSError subclass: fastserve.ClientDisconnected. Messages
sent while the client was still there never raise. An app that lets the exception
propagate is not reported as failing (no "Exception in ASGI application", no
traceback): a client going away is normal. Starlette's StreamingResponse relies on
the exception to stop its generator.

Apps: tests/apps_disconnect.py.
"""

from __future__ import annotations

import re

import pytest

from conftest import build_request

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps_disconnect:app"
STARLETTE_APP = "tests.apps_disconnect:starlette_app"

CLIENT_DISCONNECTED = {
    "error": "ClientDisconnected",
    "module": "fastserve.protocols.asgi",
    "oserror": True,
    "client_disconnected": True,
}

# What the server must not log for a client that went away.
APP_ERROR = re.compile(r"Traceback|Exception in ASGI application|ClientDisconnect")


@pytest.fixture
def app_server(servers, mode):
    return servers.get(APP, mode)


@pytest.fixture
def starlette_server(servers, mode):
    return servers.get(STARLETTE_APP, mode)


def _no_app_error(server):
    output = server.output()
    assert not APP_ERROR.search(output), f"a disconnect was logged as an error:\n{output}"


def test_streaming_app_gets_client_disconnected(app_server, token):
    with app_server.client() as client:
        client.send(build_request("GET", f"/_/stream-forever?token={token}"))
        _, status, _, _, _ = client.read_head()
        assert status == 200
        events = app_server.wait_event(token, lambda e: "streaming" in e)
        assert events == ["streaming"]
    # the client closed while the app keeps sending
    events = app_server.wait_event(token, lambda e: len(e) > 1, timeout=10)
    assert events == ["streaming", CLIENT_DISCONNECTED]
    _no_app_error(app_server)
    # the server is fine: a new connection is answered
    assert app_server.get_events(token) == events


@pytest.mark.parametrize("what", ["body", "start"])
def test_send_after_http_disconnect_raises(app_server, token, what):
    """The app saw http.disconnect, then calls send(): ClientDisconnected, for a
    body message and for the response start alike. What it sent before the client
    went away did not raise."""
    with app_server.client() as client:
        client.send(build_request("GET", f"/_/send-after-disconnect?token={token}&what={what}"))
        if what == "body":
            _, status, _, _, _ = client.read_head()
            assert status == 200
            app_server.wait_event(token, lambda e: e == ["sent before the disconnect"])
        else:
            assert client.is_open_after(0.2)  # no response yet: the app waits
    events = app_server.wait_event(
        token, lambda e: len(e) >= (3 if what == "body" else 2), timeout=10
    )
    expected = ["http.disconnect", CLIENT_DISCONNECTED]
    if what == "body":
        expected.insert(0, "sent before the disconnect")
    assert events == expected
    _no_app_error(app_server)


def test_complete_response_does_not_raise(app_server, token):
    """Every message sent while the client is connected succeeds, even when the
    client closes right after reading the response."""
    with app_server.client() as client:
        response = client.request("GET", f"/_/complete?token={token}")
        assert response.status == 200
        assert response.body == b"onetwothree"
    events = app_server.wait_event(token, lambda e: bool(e))
    assert events == ["completed"]
    _no_app_error(app_server)


def test_starlette_streaming_response_stops(starlette_server, token):
    with starlette_server.client() as client:
        client.send(build_request("GET", f"/stream?token={token}"))
        _, status, _, _, _ = client.read_head()
        assert status == 200
        starlette_server.wait_event(token, lambda e: "first chunk" in e, path_prefix="/events")

    def stopped(events):
        return any(isinstance(e, dict) and "app raised" in e for e in events)

    # The stream would run for STREAM_LIMIT (10 s); it must stop well before. (When
    # the abandoned generator's `finally` runs is up to the garbage collector, so the
    # test does not wait for it.)
    events = starlette_server.wait_event(token, stopped, timeout=5, path_prefix="/events")
    assert events[0] == "first chunk"
    assert "never disconnected" not in events
    # Starlette (spec 2.4) turned our OSError into its ClientDisconnect and stopped
    # streaming; the server did not report it as an application error.
    assert {"app raised": "ClientDisconnect", "while handling": "ClientDisconnected"} in events
    _no_app_error(starlette_server)
