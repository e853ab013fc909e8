"""Bad requests and bad apps: malformed requests and smuggling shapes → 400 and
close, Host rules, app exceptions, content-length lies, invalid ASGI messages."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fastserve.protocols.http.errors import HTTP2_PREFACE_START, HTTP2_PRIOR_KNOWLEDGE
from process_util import tool_environment

pytestmark = pytest.mark.timeout(30)


def assert_rejected(server, data: bytes, statuses=(400,)):
    """`data` gets an error response with one of `statuses`, then the server closes;
    and the server still answers a new connection."""
    with server.client() as client:
        client.send(data)
        response = client.read_response()
        assert response.status in statuses, response
        assert client.wait_closed() == b"", "bytes after the error response"
    with server.client() as client:
        assert client.request("GET", "/still-alive").json()["path"] == "/still-alive"
    return response


def count_in_log(server, text: str, token: str) -> int:
    """How often `text` is in the server log, once a later line came (a request on a
    new connection that logs an error): a repeat of `text` would have come before it."""
    later = f"later-{token}"
    with server.client() as client:
        assert client.request("GET", f"/_/raise-before?token={later}").status == 500
    assert server.wait_output(re.escape(f"boom-before-start-{later}")), server.output()
    return server.output().count(text)


# -- malformed requests -------------------------------------------------------------------

MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no-version": b"GET /\r\nHost: x\r\n\r\n",
    "bad-version": b"GET / HTTP/x.y\r\nHost: x\r\n\r\n",
    "extra-in-request-line": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-method-char": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "empty-header-name": b"GET / HTTP/1.1\r\nHost: x\r\n: novalue\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "del-in-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad\x7f: 1\r\n\r\n",
    "nul-in-header-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "cr-in-header-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
    "content-length-not-a-number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "content-length-negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "content-length-plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400(server, data):
    response = assert_rejected(server, data)
    assert response.header("connection") == "close"


def test_malformed_after_good_request_on_same_connection(server):
    with server.client() as client:
        assert client.request("GET", "/good").json()["path"] == "/good"
        client.send(b"GARBAGE\r\n\r\n")
        assert client.read_response().status == 400
        assert client.wait_closed() == b""


def test_malformed_pipelined_after_good_request(server):
    with server.client() as client:
        client.send(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        assert client.read_response().json()["path"] == "/good"
        assert client.read_response().status == 400
        assert client.wait_closed() == b""


def test_http2_prior_knowledge_gets_400_and_one_warning(server, token):
    """curl --http2-prior-knowledge opens with HTTP/2's preface: a 400 (no HTTP/2 yet),
    and one warning line that says why."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    result = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-o", "/dev/null", server.url("/")],
        capture_output=True,
        text=True,
        timeout=20,
        env=tool_environment(),
    )
    assert result.returncode != 0, result  # the 400 is HTTP/1.1: not HTTP/2 to curl
    assert count_in_log(server, HTTP2_PRIOR_KNOWLEDGE, token) == 1
    assert_rejected(server, HTTP2_PREFACE_START + b"\r\nSM\r\n\r\n")


def test_http2_preface_in_pieces_gets_400_at_its_first_line(server, token):
    """A preface whose first line comes alone is refused then, not once it is whole."""
    before = count_in_log(server, HTTP2_PRIOR_KNOWLEDGE, f"before-{token}")
    with server.client() as client:
        client.send(HTTP2_PREFACE_START)
        assert client.read_response().status == 400
        assert client.wait_closed() == b""
    assert count_in_log(server, HTTP2_PRIOR_KNOWLEDGE, token) == before + 1


# -- Host (RFC 9112 3.2) ------------------------------------------------------------------


def test_http11_without_host_is_400(server):
    assert_rejected(server, b"GET / HTTP/1.1\r\n\r\n")


def test_http11_two_hosts_is_400(server):
    assert_rejected(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")


def test_http10_two_hosts_is_400(server):
    assert_rejected(server, b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")


def test_http10_without_host_is_fine(server):
    with server.client() as client:
        response = client.request("GET", "/old", version="HTTP/1.0", host=None)
    assert response.status == 200


# -- request smuggling shapes (RFC 9112 6.1, 6.3, 5.2, 5.1, 7.1) ----------------------------

SMUGGLING = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    b"0\r\n\r\n",
    "two-content-lengths-differ": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    b"hello!",
    "two-content-lengths-same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
    b"hello",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n\tb\r\n\r\n",
    "obs-fold-first-header": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "space-before-colon-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "tab-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "negative-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000001\r\nhello\r\n0\r\n\r\n",
    "chunk-without-crlf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_shape_gets_400(server, data):
    assert_rejected(server, data)


TRANSFER_CODINGS = {
    "te-gzip-only": b"Transfer-Encoding: gzip",
    "te-chunked-not-last": b"Transfer-Encoding: chunked, gzip",
    "te-xchunked": b"Transfer-Encoding: xchunked",
    "te-chunked-twice": b"Transfer-Encoding: chunked, chunked",
}


@pytest.mark.parametrize("header", TRANSFER_CODINGS.values(), ids=TRANSFER_CODINGS.keys())
def test_unusable_transfer_encoding_rejected(server, header):
    """RFC 9112 6.3: chunked must be the final coding, once; otherwise 400 (or 501
    for a coding the server does not know)."""
    data = b"POST / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert_rejected(server, data, statuses=(400, 501))


def test_smuggled_request_never_reaches_app(server, token):
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 56\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /_/slow?delay=0&token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode()
    )
    with server.client() as client:
        client.send(data)
        assert client.read_response().status == 400
        assert client.wait_closed() == b""
    # get_events is a later request: the smuggled one would have recorded by then.
    assert server.get_events(token) == []


# -- app errors --------------------------------------------------------------------------


def test_app_exception_before_start_is_500(server, token):
    with server.client() as client:
        response = client.request("GET", f"/_/raise-before?token={token}")
        assert response.status == 500
        assert response.header("connection") == "close"
        assert client.wait_closed() == b""
    line = f"RuntimeError: boom-before-start-{token}"
    assert server.wait_output(re.escape(line)), server.output()
    assert count_in_log(server, line, token) == 1, server.output()
    assert "Traceback" in server.output()


def test_app_exception_after_start_closes_connection(server, token):
    with server.client() as client:
        client.send(b"GET /_/raise-after?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        with pytest.raises(client.Incomplete):
            # head, then "partial" in a chunk, then the connection closes without
            # the terminating chunk: the client must not see a complete response
            client.read_response()
    line = f"RuntimeError: boom-after-start-{token}"
    assert server.wait_output(re.escape(line)), server.output()
    assert count_in_log(server, line, token) == 1, server.output()


def test_app_returns_without_response_is_500(server):
    with server.client() as client:
        response = client.request("GET", "/_/return-early")
        assert response.status == 500
        assert client.wait_closed() == b""


def test_app_returns_after_start_without_finishing_closes(server):
    with server.client() as client:
        client.send(b"GET /_/return-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(client.Incomplete):
            client.read_response()


@pytest.mark.parametrize("split", [False, True], ids=["one-message", "two-messages"])
def test_app_content_length_too_long_closes(server, split):
    """The app declares 10 bytes and sends 20: the head and what the app sent before
    the message that overran reach the client, nothing of that message, then the
    connection closes and the error is logged. The same bytes in both modes."""
    with server.client() as client:
        client.send(
            b"GET /_/cl-long?declared=10&send=20%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % (b"&split=1" if split else b"")
        )
        received = client.wait_closed()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b"\r\ncontent-length: 10" in head, received
    assert body == (b"x" * 5 if split else b""), received
    assert server.wait_output("Response content longer than Content-Length"), server.output()


def test_app_content_length_too_short_closes(server):
    with server.client() as client:
        client.send(b"GET /_/cl-short?declared=10&send=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises((client.Incomplete, client.Closed)):
            client.read_response()


def test_content_length_lies_are_logged(server):
    with server.client() as client:
        client.send(b"GET /_/cl-short?declared=10&send=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        client.wait_closed()
    assert server.wait_output(r"(?i)content.length"), server.output()


# -- invalid ASGI messages ------------------------------------------------------------------

INVALID = {
    # kind: text the error log must name
    "body-before-start": "http.response.body",
    "unknown-type": "http.response.bogus",
    "bad-status": "status",
    "bad-header-value": "x-injected",
    "bad-header-name": "bad name",
    "str-header": "x-str",
}


@pytest.mark.parametrize("kind", INVALID.keys())
def test_invalid_asgi_message_is_500(server, kind, token):
    with server.client() as client:
        response = client.request("GET", f"/_/invalid?kind={kind}&token={token}")
        assert response.status == 500, response
        assert response.header("set-cookie") is None
        assert client.wait_closed() == b""
    # send() raised to the app
    assert server.get_events(token) == ["ASGIMessageError"]
    assert server.wait_output(re.escape(INVALID[kind])), server.output()
    assert "ASGIMessageError" in server.output() or "ASGI message" in server.output()


@pytest.mark.parametrize("kind", ["str-body", "start-twice"])
def test_invalid_asgi_message_after_start(server, kind, token):
    """After a valid start the server may not have written anything yet: a 500 or
    a closed connection are both fine, a 200 is not."""
    with server.client() as client:
        client.send(
            b"GET /_/invalid?kind=%s&token=%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % (kind.encode(), token.encode())
        )
        try:
            response = client.read_response()
        except (client.Closed, client.Incomplete):
            pass
        else:
            assert response.status == 500, response
        client.wait_closed()
    assert server.get_events(token) == ["ASGIMessageError"]
    assert server.wait_output(r"ASGI message|ASGIMessageError"), server.output()


def test_response_header_injection_impossible(server, token):
    with server.client() as client:
        client.send(
            b"GET /_/invalid?kind=bad-header-value&token=%s HTTP/1.1\r\nHost: x\r\n\r\n"
            % token.encode()
        )
        raw = client.wait_closed(timeout=5)
    assert b"evil" not in raw and b"set-cookie" not in raw.lower(), raw


def test_server_alive_after_app_errors(server):
    with server.client() as client:
        for path in ("/_/raise-before", "/_/return-early", "/_/invalid?kind=unknown-type"):
            with server.client() as bad:
                assert bad.request("GET", path).status == 500
        assert client.request("GET", "/alive").json()["path"] == "/alive"
