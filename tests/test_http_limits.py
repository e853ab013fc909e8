"""Limits: head size, header count, request line, body size, slowloris
(--timeout-request-header), --limit-concurrency, --limit-max-requests."""

from __future__ import annotations

import select
import time

import pytest

from process_util import holds_connection, wait_until

pytestmark = pytest.mark.timeout(30)

APP = "tests.apps:app"
LIMITS = (
    "--limit-request-head",
    "4096",
    "--limit-request-fields",
    "20",
    "--limit-request-line",
    "256",
    "--limit-request-body",
    "1000",
    "--limit-request-field-size",
    "3500",
)


@pytest.fixture
def limited(servers, mode):
    return servers.get(APP, mode, *LIMITS)


def assert_status_and_close(server, data: bytes, status: int):
    with server.client() as client:
        client.send(data)
        response = client.read_response()
        assert response.status == status, response
        assert client.wait_closed() == b""
    with server.client() as client:
        assert client.request("GET", "/alive").status == 200


def headers_bytes(count: int, size: int = 1) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(count))


# -- defaults --------------------------------------------------------------------------


def test_default_head_limit_431(server):
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert_status_and_close(server, data, 431)


def test_default_head_limit_many_medium_headers_431(server):
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + headers_bytes(90, 1000) + b"\r\n"
    assert_status_and_close(server, data, 431)


def test_default_head_under_limit_ok(server):
    with server.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 30000 + b"\r\n\r\n")
        assert client.read_response().status == 200


def test_default_field_count_limit_431(server):
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + headers_bytes(150) + b"\r\n"
    assert_status_and_close(server, data, 431)


def test_default_field_count_under_limit_ok(server):
    with server.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers_bytes(90) + b"\r\n")
        response = client.read_response()
    assert response.status == 200
    assert len(response.json()["headers"]) == 91


def test_head_limit_without_final_crlf(server):
    """A head that never ends is cut off at the limit, not buffered forever."""
    with server.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(40):
                client.send(b"X-Filler: " + b"f" * 4000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return  # closed without reading on: fine
        try:
            response = client.read_response()
        except (client.Closed, client.Incomplete):
            return  # the 431 was lost to a reset: the connection was cut, fine
        assert response.status == 431


# -- flags ----------------------------------------------------------------------------


def test_limit_request_head_flag(limited):
    assert_status_and_close(
        limited, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431
    )
    with limited.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        assert client.read_response().status == 200


def test_limit_request_fields_flag(limited):
    assert_status_and_close(
        limited, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers_bytes(25) + b"\r\n", 431
    )
    with limited.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers_bytes(15) + b"\r\n")
        assert client.read_response().status == 200


def test_limit_request_line_flag(limited):
    assert_status_and_close(limited, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    with limited.client() as client:
        assert client.request("GET", "/" + "a" * 200).status == 200


def test_limit_request_field_size_flag(limited):
    assert_status_and_close(
        limited, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3800 + b"\r\n\r\n", 431
    )


def test_limit_request_body_with_expect_continue_413_without_100(limited):
    with limited.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n"
        )
        response = client.read_response()
        assert response.status == 413
        assert client.wait_closed() == b""


def test_limit_request_body_content_length_413_before_app(limited):
    """Content-Length over the limit: 413 at once, without waiting for the body."""
    with limited.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        response = client.read_response()
        assert response.status == 413
        assert client.wait_closed() == b""


def test_limit_request_body_chunked_413(limited):
    body = b"".join(b"64\r\n" + b"c" * 100 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    with limited.client() as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        response = client.read_response()
        assert response.status == 413
        assert client.wait_closed() == b""


def test_limit_request_body_at_limit_ok(limited):
    with limited.client() as client:
        scope = client.request("POST", "/echo", body=b"b" * 1000).json()
        assert scope["body_length"] == 1000
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1f4\r\n" + b"c" * 500 + b"\r\n1f4\r\n" + b"c" * 500 + b"\r\n0\r\n\r\n"
        )
        assert client.read_response().json()["body_length"] == 1000


# -- slowloris ------------------------------------------------------------------------


@pytest.fixture
def header_timeout(servers, mode):
    return servers.get(APP, mode, "--timeout-request-header", "1")


def assert_closed_without_answer(client, timeout):
    started = time.monotonic()
    data = client.wait_closed(timeout=timeout)
    # closing silently or with a 408 are both fine; a request must not have run
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
    return time.monotonic() - started


@pytest.mark.serial  # bounds a duration
def test_slowloris_half_head_closed(header_timeout):
    with header_timeout.client() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        elapsed = assert_closed_without_answer(client, timeout=5)
    assert elapsed < 3


def test_slowloris_trickle_closed(header_timeout):
    """Sending a byte now and then does not reset the header timeout: the server
    closes the connection (after 1 s) while the head is still trickling in (for
    about 12 s, a byte every 0.1 s: each gap well within the timeout)."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    closed = False
    with header_timeout.client() as client:
        for byte in head:
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            # The stimulus: the pace of the trickle. Waits for the close meanwhile.
            readable, _, _ = select.select([client.sock], [], [], 0.1)
            if readable:
                assert_closed_without_answer(client, timeout=10)
                closed = True
                break
    assert closed, "the connection stayed open while the head trickled in"


@pytest.mark.serial  # bounds a duration
def test_slowloris_nothing_sent_closed(header_timeout):
    with header_timeout.client() as client:
        elapsed = assert_closed_without_answer(client, timeout=5)
    assert elapsed < 3


def test_header_timeout_does_not_cut_slow_body_or_app(header_timeout):
    """The timeout covers only the head: a slow app and a slow body are fine."""
    with header_timeout.client() as client:
        assert client.request("GET", "/_/slow?delay=1.5").status == 200
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(1.5)  # the stimulus: a body slower than the header timeout (1 s)
        client.send(b"cd")
        assert client.read_response().json()["body"] == "abcd"


def test_header_timeout_restarts_after_each_response(header_timeout):
    with header_timeout.client() as client:
        for _ in range(4):
            # The stimulus: idle gaps within the header timeout (1 s), longer than it
            # together.
            time.sleep(0.5)
            assert client.request("GET", "/again").status == 200


# -- concurrency and max requests ---------------------------------------------------------


def test_limit_concurrency_503(servers, mode):
    server = servers.get(APP, mode, "--limit-concurrency", "1")
    with server.client() as slow:
        slow.send(b"GET /_/slow?delay=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(
            lambda: holds_connection(server.pid, slow.sock),
            15,
            message="the server to accept the first connection",
        )
        with server.client() as client:
            response = client.request("GET", "/second")
            assert response.status == 503
            assert client.wait_closed() == b""
        assert slow.read_response().status == 200

    def third_request():
        with server.client() as client:
            return client.request("GET", "/third").status == 200

    # once the slow one is done (and its connection gone) requests go through again
    wait_until(third_request, 15, interval=0.1, message="a request to go through again")


def wait_replaced(server) -> None:
    """The worker that reached --limit-max-requests stops and the supervisor replaces
    it (where uvicorn's one process would exit): the server keeps answering."""
    server.wait_for_log("Maximum request limit of 3 exceeded")
    server.wait_for_log(r"Worker \[\d+\] reached --max-requests; starting its replacement")
    with server.client() as client:
        assert client.request("GET", "/after").status == 200
    assert server.running


def test_limit_max_requests_replaces_the_process(start_server, mode):
    server = start_server(APP, mode, "--limit-max-requests", "3")
    with server.client() as client:
        for i in range(3):
            response = client.request("GET", f"/r{i}")
            assert response.status == 200
            assert response.json()["path"] == f"/r{i}"
    wait_replaced(server)


def test_limit_max_requests_separate_connections(start_server, mode):
    server = start_server(APP, mode, "--limit-max-requests", "3")
    for i in range(3):
        with server.client() as client:
            assert client.request("GET", f"/r{i}").status == 200
    wait_replaced(server)
