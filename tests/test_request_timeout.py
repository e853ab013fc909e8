"""--timeout-request: an app call still running after it is cancelled; the client
gets a 504 if the response had not started, else its connection is closed; one
warning names the request. Real servers, both HTTP modes (apps: tests/apps_watchdog.py)."""

from __future__ import annotations

import re

import pytest

from conftest import IncompleteResponse

APP = "tests.apps_watchdog:app"
TIMEOUT = "1"
# The swallowing app never returns: shutdown cancels it again after this long.
FLAGS = ("--timeout-request", TIMEOUT, "--timeout-graceful-shutdown", "2")
# Far beyond the timeout: only the server's timeout ends these requests.
LONG = 60


@pytest.fixture
def server(servers, mode):
    return servers.get(APP, mode, *FLAGS)


def timeout_lines(server, path: str) -> list:
    return re.findall(rf"Request timed out after {TIMEOUT}s, cancelled: GET {path}\b", server.log())


def test_a_slow_handler_gets_504_and_one_log_line(server):
    with server.client(timeout=30) as client:
        response = client.request("GET", f"/sleep?s={LONG}")
        assert response.status == 504
        assert response.header("connection") == "close"
        assert response.body == b"504 Gateway Timeout\n"
        # not kept alive: the app may still run, its request body half read
        client.wait_closed(timeout=10)
    server.wait_for_log(r"Request timed out after 1s, cancelled: GET /sleep")
    assert len(timeout_lines(server, "/sleep")) == 1
    with server.client() as client:
        assert client.request("GET", "/").status == 200


def test_a_stalled_stream_has_its_connection_closed(server):
    with server.client(timeout=30) as client:
        # (a 504 in its place would be a complete response)
        with pytest.raises(IncompleteResponse):
            client.request("GET", f"/stream?s={LONG}")
    server.wait_for_log(r"Request timed out after 1s, cancelled: GET /stream")
    assert len(timeout_lines(server, "/stream")) == 1


def test_an_app_that_ignores_the_cancellation_still_loses_its_connection(server):
    with server.client(timeout=30) as client:
        response = client.request("GET", f"/swallow?s={LONG}")
        assert response.status == 504
        client.wait_closed(timeout=10)
    server.wait_for_log("swallow cancelled")
    assert len(timeout_lines(server, "/swallow")) == 1
    # The server goes on serving (and, at the end, stops: the pool checks its exit code).
    with server.client() as client:
        assert client.request("GET", "/").status == 200


def test_a_fast_handler_is_unaffected(server):
    before = len(timeout_lines(server, "/sleep"))
    with server.client(timeout=30) as client:
        for _ in range(3):  # kept alive across requests
            response = client.request("GET", "/sleep?s=0.2")
            assert response.status == 200 and response.body == b"slept"
        assert client.request("GET", "/").status == 200
    assert len(timeout_lines(server, "/sleep")) == before


def test_no_timeout_by_default(servers, mode):
    server = servers.get(APP, mode)
    with server.client(timeout=30) as client:
        # 2 s: twice the timeout of the other tests' server
        response = client.request("GET", "/sleep?s=2")
        assert response.status == 200 and response.body == b"slept"
    assert "timed out" not in server.log()
