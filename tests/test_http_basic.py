"""Requests, responses and connections: the ASGI scope, keep-alive, pipelining,
HTTP/1.0, request targets, response framing, HEAD/204/304, default headers, proxy
headers. Both modes (`mode` fixture), real server processes, raw sockets."""

from __future__ import annotations

import email.utils
import re
import sys
import time

import pytest

from process_util import start_thread, wait_until

pytestmark = pytest.mark.timeout(30)

APP = "tests.apps:app"


# -- the scope ------------------------------------------------------------------------


def test_scope_keys(server):
    with server.client() as client:
        response = client.request("GET", "/some/path?x=1")
    assert response.status == 200, response
    scope = response.json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/some/path"
    assert scope["raw_path"] == "/some/path"
    assert scope["query_string"] == "x=1"
    assert scope["root_path"] == ""
    assert scope["types"]["raw_path"] == "bytes"
    assert scope["types"]["query_string"] == "bytes"
    assert scope["types"]["path"] == "str"
    assert scope["types"]["method"] == "str"
    assert scope["header_types"] == ["bytes,bytes"]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]
    for key in (
        "type",
        "asgi",
        "http_version",
        "method",
        "scheme",
        "path",
        "raw_path",
        "query_string",
        "root_path",
        "headers",
        "client",
        "server",
        "state",
    ):
        assert key in scope["keys"], key


def test_scope_client_port_is_the_peer_port(server):
    with server.client() as client:
        local_port = client.sock.getsockname()[1]
        scope = client.request("GET", "/").json()
    assert scope["client"] == ["127.0.0.1", local_port]


def test_scope_state_from_lifespan(server):
    with server.client() as client:
        scope = client.request("GET", "/").json()
    assert scope["state"] == {"started": True, "token": "lifespan-ok"}


def test_scope_state_is_a_copy_per_request(server):
    with server.client() as client:
        first = client.request("GET", "/_/state-mutate").json()
        assert "mutated" not in first
        second = client.request("GET", "/").json()
    assert "mutated" not in second["state"], second["state"]


def test_the_started_heap_is_frozen(server):
    """Once the app has started, what the process holds is out of the cyclic GC's
    walks (server.freeze_startup_heap): requests' collections stay small."""
    with server.client() as client:
        seen = client.request("GET", "/_/gc").json()
    assert seen["frozen"] > 0


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods(server, method):
    with server.client() as client:
        scope = client.request(
            method, "/m", body=b"data" if method in ("POST", "PUT", "PATCH") else b""
        ).json()
    assert scope["method"] == method


def test_headers_lowercased_in_order_values_kept(server):
    headers = [
        ("X-Mixed-Case", "VaLuE"),
        ("X-Dup", "1"),
        ("Accept", "*/*"),
        ("X-Dup", "2"),
        ("X-Spaces", "  padded value  "),
    ]
    with server.client() as client:
        scope = client.request("GET", "/", headers=headers).json()
    assert scope["headers"] == [
        ["host", "127.0.0.1"],
        ["x-mixed-case", "VaLuE"],
        ["x-dup", "1"],
        ["accept", "*/*"],
        ["x-dup", "2"],
        ["x-spaces", "padded value"],
    ]


def test_header_value_latin1_bytes_kept(server):
    with server.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bytes: caf\xe9 \xff\r\n\r\n")
        scope = client.read_response().json()
    assert ["x-bytes", "caf\xe9 \xff"] in scope["headers"]


def test_percent_decoded_path_raw_path_kept(server):
    with server.client() as client:
        scope = client.request("GET", "/caf%C3%A9/a%20b/c%2Fd?q=%20x").json()
    assert scope["path"] == "/café/a b/c/d"
    assert scope["raw_path"] == "/caf%C3%A9/a%20b/c%2Fd"
    assert scope["query_string"] == "q=%20x"


def test_query_string_not_decoded(server):
    with server.client() as client:
        scope = client.request("GET", "/q?a=1&b=two%20words&c=%E2%9C%93&d").json()
    assert scope["path"] == "/q"
    assert scope["query_string"] == "a=1&b=two%20words&c=%E2%9C%93&d"


def test_empty_query_string(server):
    with server.client() as client:
        scope = client.request("GET", "/q?").json()
    assert scope["path"] == "/q"
    assert scope["query_string"] == ""


def test_absolute_form_target(server):
    with server.client() as client:
        scope = client.request(
            "GET", "http://example.com/abs/path?x=1", headers=[("Host", "example.com")]
        ).json()
    assert scope["path"] == "/abs/path"
    assert scope["raw_path"] == "/abs/path"
    assert scope["query_string"] == "x=1"


def test_absolute_form_without_path(server):
    with server.client() as client:
        scope = client.request(
            "GET", "http://example.com", headers=[("Host", "example.com")]
        ).json()
    assert scope["path"] == "/"
    assert scope["query_string"] == ""


def test_options_asterisk(server):
    with server.client() as client:
        response = client.request("OPTIONS", "*")
    assert response.status == 200, response
    assert response.json()["raw_path"] == "*"


def test_root_path_prefixes_path_and_raw_path(servers, mode):
    """As uvicorn has it: the proxy stripped the root path, the server puts it back
    into `path` and `raw_path` (raw_path's bytes as the client sent them)."""
    server = servers.get(APP, mode, "--root-path", "/api")
    with server.client() as client:
        scope = client.request("GET", "/items/a%2Fb%20c?x=1").json()
        assert scope["root_path"] == "/api"
        assert scope["path"] == "/api/items/a/b c"
        assert scope["raw_path"] == "/api/items/a%2Fb%20c"
        assert scope["query_string"] == "x=1"
        assert scope["types"]["raw_path"] == "bytes"
        # the absolute form's path too
        client.send(b"GET http://example.com/items HTTP/1.1\r\nHost: example.com\r\n\r\n")
        scope = client.read_response().json()
        assert (scope["path"], scope["raw_path"]) == ("/api/items", "/api/items")
        # routes of the app (matched below the root path) still work
        assert client.request("GET", "/_/hello").body == b"Hello, world!"


def test_root_path_is_added_to_a_path_that_already_has_it(servers, mode):
    """uvicorn's rule: the prefix goes before every path (the server cannot tell a
    path a proxy stripped from one it did not), so /api/items is /api/api/items."""
    server = servers.get(APP, mode, "--root-path", "/api")
    with server.client() as client:
        scope = client.request("GET", "/api/items").json()
    assert (scope["path"], scope["raw_path"]) == ("/api/api/items", "/api/api/items")


# -- keep-alive and connection management ---------------------------------------------


def test_keep_alive_many_requests_one_connection(server):
    with server.client() as client:
        for i in range(10):
            response = client.request("GET", f"/n/{i}")
            assert response.status == 200
            assert response.json()["path"] == f"/n/{i}"
            assert response.header("connection") in (None, "keep-alive")
        assert client.is_open_after(0.2)


@pytest.mark.serial  # bounds a duration
def test_keep_alive_timeout(servers, mode):
    server = servers.get(APP, mode, "--timeout-keep-alive", "2")
    with server.client() as client:
        assert client.request("GET", "/first").status == 200
        # Idle gaps shorter than the timeout but longer than it together: the
        # connection stays open only if the timer restarts after each response.
        for path in ("/second", "/third", "/fourth"):
            time.sleep(0.8)  # the stimulus: time passing while the connection is idle
            assert client.request("GET", path).status == 200
        started = time.monotonic()
        assert client.wait_closed(timeout=15) == b""
        elapsed = time.monotonic() - started
    # not before the timeout (a loaded machine only makes it later); well before the
    # request header timeout (30 s) that would close an idle connection otherwise
    assert 1.5 < elapsed < 10, elapsed


def test_keep_alive_timeout_idle_connection_before_request(servers, mode):
    """A connection that never sends anything is closed too (keep-alive or request
    header timeout, whichever applies first)."""
    server = servers.get(APP, mode, "--timeout-keep-alive", "1", "--timeout-request-header", "2")
    with server.client() as client:
        assert client.wait_closed(timeout=5) == b""


def test_client_connection_close(server):
    with server.client() as client:
        response = client.request("GET", "/", headers=[("Connection", "close")])
        assert response.status == 200
        assert response.header("connection") == "close"
        assert client.wait_closed() == b""


def test_client_connection_close_token_list(server):
    with server.client() as client:
        response = client.request("GET", "/", headers=[("Connection", "foo, Close")])
        assert response.status == 200
        assert client.wait_closed() == b""


def test_app_connection_close(server):
    with server.client() as client:
        response = client.request("GET", "/_/close")
        assert response.status == 200
        assert response.body == b"closing"
        assert client.wait_closed() == b""


def test_http10_closes_by_default(server):
    with server.client() as client:
        response = client.request("GET", "/old", version="HTTP/1.0", host=None)
        assert response.status == 200
        scope = response.json()
        assert scope["http_version"] == "1.0"
        assert response.header("connection") in (None, "close")
        assert client.wait_closed() == b""


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive"])
def test_http10_keep_alive_when_asked(server, value):
    with server.client() as client:
        for i in range(3):
            response = client.request(
                "GET", f"/old/{i}", headers=[("Connection", value)], version="HTTP/1.0", host=None
            )
            assert response.status == 200
            assert response.header("connection") == "keep-alive"
            assert response.json()["path"] == f"/old/{i}"
        assert client.is_open_after(0.2)


def test_http10_streaming_response_is_close_delimited(server):
    with server.client() as client:
        response = client.request("GET", "/_/stream?parts=a,b,c", version="HTTP/1.0", host=None)
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.body == b"abc"
        assert response.close_delimited or response.header("content-length") == "3"
        assert client.wait_closed() == b""


@pytest.mark.parametrize("app_length", ["", "&cl=1"], ids=["no-length", "app-length"])
def test_http10_gets_no_transfer_encoding_the_app_set(server, app_length):
    """RFC 9112 6.1: no Transfer-Encoding to an HTTP/1.0 client, not even the app's own:
    the header is dropped, the body framed by its length or by the close."""
    with server.client() as client:
        response = client.request(
            "GET", f"/_/stream?parts=a,b,c&te=1{app_length}", version="HTTP/1.0", host=None
        )
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.body == b"abc"
        assert response.close_delimited or response.header("content-length") == "3"
    with server.client() as client:  # HTTP/1.1 still gets the app's header, and chunks
        response = client.request("GET", "/_/stream?parts=a,b,c&te=1")
        assert response.header("transfer-encoding") == "chunked"
        assert response.body == b"abc"


def test_http10_keep_alive_streaming_response_not_chunked(server):
    """An HTTP/1.0 client cannot read chunked: the server ends the body by closing."""
    with server.client() as client:
        response = client.request(
            "GET",
            "/_/stream?parts=a,b,c",
            headers=[("Connection", "keep-alive")],
            version="HTTP/1.0",
            host=None,
        )
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.body == b"abc"


# -- pipelining ------------------------------------------------------------------------


def test_pipelining_order(server):
    requests = (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with server.client() as client:
        client.send(requests)
        results = [client.read_response().json() for _ in range(4)]
        assert client.is_open_after(0.2)
    assert [r["path"] for r in results] == ["/one", "/two", "/three", "/four"]
    assert [r["body"] for r in results] == ["", "hello", "abc", ""]


def test_pipelining_many_requests_in_one_send(server):
    count = 300
    requests = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
    with server.client() as client:
        client.send(requests)
        paths = [client.read_response().json()["path"] for _ in range(count)]
    assert paths == [f"/p/{i}" for i in range(count)]


def test_pipelining_slow_first_request(server):
    """The second app only starts after the first response completed, and answers
    come in order."""
    requests = (
        b"GET /_/timed?delay=0.4 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /_/timed HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /_/timed?delay=0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with server.client() as client:
        client.send(requests)
        results = [client.read_response().json() for _ in range(3)]
    assert [r["query_string"] for r in results] == ["delay=0.4", "", "delay=0.1"]
    assert results[1]["start"] >= results[0]["end"]
    assert results[2]["start"] >= results[1]["end"]


def test_pipelining_byte_by_byte(server):
    requests = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
    with server.client() as client:
        for i in range(len(requests)):
            client.send(requests[i : i + 1])
        first = client.read_response().json()
        second = client.read_response().json()
    assert (first["path"], second["path"], second["body"]) == ("/a", "/b", "xyz")


def test_pipelining_stops_after_connection_close(server):
    requests = (
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with server.client() as client:
        client.send(requests)
        assert client.read_response().json()["path"] == "/1"
        assert client.read_response().json()["path"] == "/2"
        assert client.wait_closed() == b""


def test_pipelined_streaming_responses(server):
    requests = b"GET /_/stream?parts=a,b HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    with server.client() as client:
        client.send(requests)
        for _ in range(3):
            response = client.read_response()
            assert response.chunked and response.body == b"ab"


def test_contextvars_isolated_between_pipelined_requests(server):
    requests = b"".join(
        b"GET /_/ctxvar?value=v%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)
    )
    with server.client() as client:
        client.send(requests)
        results = [client.read_response().json() for _ in range(5)]
    assert [r["before"] for r in results] == [None] * 5
    assert [r["after"] for r in results] == [f"v{i}" for i in range(5)]


def test_contextvars_isolated_between_sequential_requests(server):
    with server.client() as client:
        for i in range(3):
            result = client.request("GET", f"/_/ctxvar?value=s{i}").json()
            assert result == {"before": None, "after": f"s{i}"}


def test_request_runs_in_a_named_task(server):
    with server.client() as client:
        result = client.request("GET", "/_/task").json()
    assert result == {"name": "fastserve.request", "factory": False}


def test_request_task_made_by_the_loops_task_factory(servers, mode):
    server = servers.get("tests.apps:task_factory", mode)
    with server.client() as client:
        for _ in range(2):
            result = client.request("GET", "/_/task").json()
            assert result == {"name": "fastserve.request", "factory": True}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager Tasks are new in Python 3.12")
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_request_tasks_a_factory_starts_eagerly(servers, mode, loop):
    """An eager Task runs its first step as it is made, inside the parsing of the
    request: the app still starts once the protocol has recorded the Task and read
    what it has of the request (with three requests at a time allowed, three Tasks the
    protocol lost count of would have the fourth request refused with a 503)."""
    server = servers.get(
        "tests.apps:eager_task_factory", mode, "--loop", loop, "--limit-concurrency", "3"
    )
    with server.client() as client:
        for _ in range(4):
            result = client.request("GET", "/_/task").json()
            assert result == {"name": "fastserve.request", "factory": True}
        assert client.request("GET", "/_/echo").json()["body"] == ""
        echoed = client.request("POST", "/_/echo", body=b"eager body").json()
        assert echoed["body"] == "eager body"
        client.send(
            b"GET /_/task HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /_/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
            b"GET /_/task HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        pipelined = [client.read_response() for _ in range(3)]
    assert [r.status for r in pipelined] == [200, 200, 200]
    assert pipelined[0].json()["factory"] is True
    assert pipelined[1].json()["body"] == "abcde"
    assert pipelined[2].json()["factory"] is True


# -- response framing ------------------------------------------------------------------


def test_content_length_added_for_single_body_message(server):
    with server.client() as client:
        response = client.request("GET", "/_/nocl?body=abcdef")
    assert response.header("content-length") == "6"
    assert response.header("transfer-encoding") is None
    assert response.body == b"abcdef"


def test_empty_body_gets_content_length_zero(server):
    with server.client() as client:
        response = client.request("GET", "/_/nocl?body=")
        assert response.status == 200
        assert response.header("content-length") == "0"
        assert response.body == b""
        assert client.request("GET", "/_/hello").body == b"Hello, world!"


def test_app_content_length_kept(server):
    with server.client() as client:
        response = client.request("GET", "/_/hello")
    assert response.header("content-length") == "13"
    assert response.body == b"Hello, world!"


def test_chunked_response_without_content_length(server):
    with server.client() as client:
        response = client.request("GET", "/_/stream?parts=one,two,three")
        assert response.status == 200
        assert response.header("transfer-encoding") == "chunked"
        assert response.header("content-length") is None
        assert response.body == b"onetwothree"
        # the connection stays usable after the terminating chunk
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_chunked_response_with_empty_messages(server):
    """An empty body message with more_body=True must not end the chunked body."""
    with server.client() as client:
        response = client.request("GET", "/_/stream?parts=a,,b,,,c")
        assert response.chunked
        assert response.body == b"abc"
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_streamed_body_with_app_content_length(server):
    with server.client() as client:
        response = client.request("GET", "/_/stream?parts=ab,cd,ef&cl=1")
        assert response.header("content-length") == "6"
        assert response.header("transfer-encoding") is None
        assert response.body == b"abcdef"
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_app_headers_sent_as_given(server):
    with server.client() as client:
        response = client.request("GET", "/_/headers?X-One=1&x-two=Two%20Words&Set-Cookie=a%3D1")
    assert response.header("x-one") == "1"
    assert response.header("x-two") == "Two Words"
    assert response.header("set-cookie") == "a=1"


def test_status_line_reason(server):
    with server.client() as client:
        response = client.request("GET", "/_/status?code=404&body=nope")
    assert response.http_version == "1.1"
    assert (response.status, response.reason) == (404, "Not Found")
    assert response.body == b"nope"


# -- HEAD, 204, 304 ----------------------------------------------------------------------


def test_head_has_headers_but_no_body(server):
    with server.client() as client:
        get = client.request("GET", "/_/hello")
        head = client.request("HEAD", "/_/hello")
        assert head.status == 200
        assert head.header("content-length") == get.header("content-length") == "13"
        # no body bytes on the wire: the next response parses cleanly
        assert client.request("GET", "/next").json()["path"] == "/next"


def test_head_single_message_without_content_length(server):
    with server.client() as client:
        get = client.request("GET", "/_/nocl?body=abcdef")
        head = client.request("HEAD", "/_/nocl?body=abcdef")
        assert head.status == 200
        assert head.header("content-length") == get.header("content-length") == "6"
        assert client.request("GET", "/next").json()["path"] == "/next"


def test_head_streaming_response_writes_no_body(server):
    with server.client() as client:
        head = client.request("HEAD", "/_/stream?parts=a,b,c")
        assert head.status == 200
        assert client.request("GET", "/next").json()["path"] == "/next"


def test_head_pipelined(server):
    with server.client() as client:
        client.send(
            b"HEAD /_/hello HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = client.read_response("HEAD")
        assert head.status == 200
        assert client.read_response().json()["path"] == "/after"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_status(server, code):
    with server.client() as client:
        response = client.request("GET", f"/_/status?code={code}&body=should-not-be-sent")
        assert response.status == code
        assert response.header("transfer-encoding") is None
        if code == 204:
            # RFC 9110 8.6: no Content-Length in a 204
            assert response.header("content-length") is None
        # nothing after the head: the next response parses cleanly
        after = client.request("GET", "/after")
        assert after.json()["path"] == "/after"


def test_304_keeps_app_content_length(server):
    """A 304 may carry the Content-Length of the selected representation; no body
    follows it and the connection stays usable."""
    with server.client() as client:
        response = client.request("GET", "/_/status?code=304&cl=100")
        assert response.status == 304
        assert response.header("content-length") == "100"
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_head_with_app_content_length_and_no_body(server):
    """For HEAD an app may declare Content-Length and send no body (like a file
    response): that is not a too-short body, the connection stays open."""
    with server.client() as client:
        response = client.request("HEAD", "/_/status?code=200&cl=13")
        assert response.status == 200
        assert response.header("content-length") == "13"
        assert client.request("GET", "/after").json()["path"] == "/after"


def test_204_without_body(server):
    with server.client() as client:
        response = client.request("GET", "/_/status?code=204")
        assert response.status == 204
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        assert client.request("GET", "/after").json()["path"] == "/after"


# -- default headers ----------------------------------------------------------------------


def test_server_and_date_headers(server):
    with server.client() as client:
        response = client.request("GET", "/_/hello")
    assert response.header("server") == "fastserve"
    date = email.utils.parsedate_to_datetime(response.header("date"))
    assert abs(date.timestamp() - time.time()) < 5
    assert response.header("date").endswith(" GMT")
    # the server's headers come before the app's
    names = [name for name, _ in response.headers]
    assert names.index("date") < names.index("content-length")
    assert names.index("server") < names.index("content-length")


def test_date_header_is_refreshed(server):
    """The Date header follows the clock (it has a resolution of one second)."""
    with server.client() as client:
        first = client.request("GET", "/_/hello").header("date")
        wait_until(
            lambda: client.request("GET", "/_/hello").header("date") != first,
            15,
            interval=0.2,
            message="a new Date header",
        )


def test_extra_header_and_no_server_or_date(servers, mode):
    server = servers.get(APP, mode, "--header", "X-A:b", "--no-server-header", "--no-date-header")
    with server.client() as client:
        response = client.request("GET", "/_/hello")
        assert response.header("x-a") == "b"
        assert response.header("server") is None
        assert response.header("date") is None
        assert response.body == b"Hello, world!"
        streamed = client.request("GET", "/_/stream?parts=a,b")
        assert streamed.header("x-a") == "b"
        assert streamed.header("server") is None


def test_error_response_framing(server):
    with server.client() as client:
        response = client.request("GET", "/_/raise-before?token=framing")
        assert response.status == 500
        assert response.header("content-length") is not None


# -- proxy headers ------------------------------------------------------------------------


def test_proxy_headers_trusted_from_localhost(server):
    with server.client() as client:
        scope = client.request(
            "GET", "/", headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]
        ).json()
    assert scope["client"][0] == "1.2.3.4"
    assert scope["scheme"] == "https"


def test_proxy_headers_chain_takes_rightmost_untrusted(server):
    with server.client() as client:
        scope = client.request(
            "GET", "/", headers=[("X-Forwarded-For", "5.6.7.8, 1.2.3.4, 127.0.0.1")]
        ).json()
    assert scope["client"][0] == "1.2.3.4"


# A request carrying both families: the style decides which one is believed.
BOTH_FAMILIES = [
    ("Forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::7]:4711";proto=https'),
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Forwarded-Proto", "http"),
]


def test_forwarded_header_believed_with_the_forwarded_style(servers, mode):
    """RFC 7239 `Forwarded`, with an IPv6 client and a port; X-Forwarded-* ignored."""
    server = servers.get(APP, mode, "--proxy-headers-style", "forwarded")
    with server.client() as client:
        scope = client.request("GET", "/", headers=BOTH_FAMILIES).json()
    assert scope["client"] == ["2001:db8::7", 4711]
    assert scope["scheme"] == "https"


def test_forwarded_header_ignored_by_default(server):
    with server.client() as client:
        scope = client.request("GET", "/", headers=BOTH_FAMILIES).json()
    assert scope["client"] == ["1.2.3.4", 0]
    assert scope["scheme"] == "http"


def test_proxy_headers_untrusted_peer_ignored(servers, mode):
    server = servers.get(APP, mode, "--forwarded-allow-ips", "10.0.0.1")
    with server.client() as client:
        scope = client.request(
            "GET", "/", headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]
        ).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_no_proxy_headers_flag(servers, mode):
    server = servers.get(APP, mode, "--no-proxy-headers")
    with server.client() as client:
        scope = client.request(
            "GET", "/", headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]
        ).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_access_log_line(server, token):
    with server.client() as client:
        port = client.sock.getsockname()[1]
        assert client.request("GET", f"/logged?token={token}").status == 200
    line = f'127.0.0.1:{port} - "GET /logged?token={token} HTTP/1.1" 200 OK\n'
    assert server.wait_output(re.escape(line)), server.output()


def test_no_access_log(start_server, mode, token):
    server = start_server(APP, mode, "--no-access-log")
    with server.client() as client:
        assert client.request("GET", f"/not-logged?token={token}").status == 200
    with server.client() as client:
        assert client.request("GET", f"/_/raise-before?token={token}").status == 500
    # stopped: every access line there would be has been written (they are buffered)
    assert server.stop() == 0
    assert f"boom-before-start-{token}" in server.output()
    assert f"/not-logged?token={token}" not in server.output()
    assert "/_/raise-before" not in server.output()


def test_many_concurrent_connections(server):
    errors = []

    def worker(n):
        try:
            with server.client() as client:
                for i in range(5):
                    response = client.request("POST", f"/w/{n}/{i}", body=b"x" * n)
                    scope = response.json()
                    assert (scope["path"], scope["body_length"]) == (f"/w/{n}/{i}", n)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [start_thread(worker, n) for n in range(50)]
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_upgrade_to_another_protocol_is_served_as_http(server):
    """Only WebSocket upgrades are taken (tests/test_websocket_handshake.py); any
    other (h2c, say) is an ordinary request, and the connection goes on."""
    with server.client() as client:
        response = client.request(
            "GET", "/h2", headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")]
        )
        assert response.status == 200
        assert response.json()["path"] == "/h2"
        assert client.request("GET", "/next").json()["path"] == "/next"
