"""Unit tests of the HTTP rules both protocol modes share (no server, no sockets).

`fastserve.protocols.http.{headers,target,proxy,errors,framing}` and
`fastserve.protocols.asgi`: plain functions, checked with tables.
"""

from __future__ import annotations

import builtins
import http
import logging
import sys

import pytest

import fastserve
from fastserve.protocols import asgi
from fastserve.protocols.asgi import (
    APP_CLOSE,
    APP_DONE,
    APP_FAIL,
    ASGIMessageError,
    ClientDisconnected,
    app_returned,
    from_disconnect,
    response_body,
    response_start,
)
from fastserve.protocols.http import errors, framing
from fastserve.protocols.http.errors import error_response, log_invalid_request
from fastserve.protocols.http.framing import CHUNKED, LENGTH, NONE, UNTIL_CLOSE, choose_framing
from fastserve.protocols.http.headers import (
    STATUS_LINES,
    encode_response_headers,
    is_field_value,
    is_token,
    status_phrase,
)
from fastserve.protocols.http.proxy import (
    FORWARDED,
    X_FORWARDED,
    ProxyTrust,
    apply_proxy_headers,
    parse_forwarded,
    parse_node,
)
from fastserve.protocols.http.target import decode_path, host_error, split_target


@pytest.fixture
def error_log():
    """Records of the "fastserve.error" logger, whatever logging config ran before
    (a Config() in another test may have turned its propagation off)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("fastserve.error")
    handler = Collect(level=logging.DEBUG)
    old_level, old_disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.disabled = old_disabled


# -- headers: status lines ------------------------------------------------------------


def test_status_lines_cover_every_asgi_status():
    assert set(STATUS_LINES) == set(range(100, 600))


@pytest.mark.parametrize("status", [100, 101, 200, 204, 301, 304, 404, 418, 500, 503, 599])
def test_status_line_shape(status):
    line = STATUS_LINES[status]
    assert line.startswith(b"HTTP/1.1 %d " % status)
    assert line.endswith(b"\r\n")
    phrase = line[len(b"HTTP/1.1 000 ") : -2]
    assert b"\r" not in phrase and b"\n" not in phrase
    assert phrase.decode("ascii") == status_phrase(status)


@pytest.mark.parametrize(
    "status, phrase",
    [
        (100, "Continue"),
        (200, "OK"),
        (204, "No Content"),
        (404, "Not Found"),
        (413, http.HTTPStatus(413).phrase),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (299, ""),  # registered nowhere: an empty reason phrase
        (599, ""),
    ],
)
def test_status_phrase(status, phrase):
    assert status_phrase(status) == phrase


def test_unknown_status_line_keeps_the_space_before_the_empty_phrase():
    # RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    assert STATUS_LINES[599] == b"HTTP/1.1 599 \r\n"


# -- headers: tokens and field values --------------------------------------------------


@pytest.mark.parametrize(
    "name, ok",
    [
        (b"content-type", True),
        (b"X-Custom_Header.1", True),
        (b"!#$%&'*+-.^_`|~", True),
        (b"a", True),
        (b"", False),
        (b"bad name", False),
        (b"name:", False),
        (b"a(b)", False),
        (b'"quoted"', False),
        (b"a\tb", False),
        (b"a\rb", False),
        (b"a\nb", False),
        (b"a\x00b", False),
        (b"caf\xc3\xa9", False),
        (b"\x7f", False),
    ],
)
def test_is_token(name, ok):
    assert is_token(name) is ok


@pytest.mark.parametrize(
    "value, ok",
    [
        (b"", True),
        (b"text/html; charset=utf-8", True),
        (b"a b\tc", True),
        (b"\x80\xff obs-text", True),
        (b"\x01\x7f", True),
        (b"a\rb", False),
        (b"a\nb", False),
        (b"a\r\nset-cookie: x=1", False),
        (b"a\x00b", False),
        (b"\n", False),
    ],
)
def test_is_field_value(value, ok):
    assert is_field_value(value) is ok


# -- headers: encode_response_headers --------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([], (b"", -1, False, False)),
        (
            [(b"content-type", b"text/plain")],
            (b"content-type: text/plain\r\n", -1, False, False),
        ),
        (
            [(b"Content-Length", b"12"), (b"x-a", b"1")],
            (b"Content-Length: 12\r\nx-a: 1\r\n", 12, False, False),
        ),
        ([(b"content-length", b"0")], (b"content-length: 0\r\n", 0, False, False)),
        ([(b"content-length", b" 7 ")], (b"content-length:  7 \r\n", 7, False, False)),
        (
            [(b"Transfer-Encoding", b"chunked")],
            (b"Transfer-Encoding: chunked\r\n", -1, True, False),
        ),
        ([(b"connection", b"close")], (b"connection: close\r\n", -1, False, True)),
        ([(b"Connection", b" Close ")], (b"Connection:  Close \r\n", -1, False, True)),
        (
            [(b"connection", b"keep-alive")],
            (b"connection: keep-alive\r\n", -1, False, False),
        ),
        # header pairs may be lists, and the iterable any iterable
        ([[b"x-list", b"v"]], (b"x-list: v\r\n", -1, False, False)),
        (((b"x-tuple", b"v"),), (b"x-tuple: v\r\n", -1, False, False)),
        (iter([(b"x-iter", b"v")]), (b"x-iter: v\r\n", -1, False, False)),
    ],
)
def test_encode_response_headers(headers, expected):
    assert encode_response_headers(headers) == expected


@pytest.mark.parametrize(
    "header",
    [
        (b"only-a-name",),
        (b"a", b"b", b"c"),
        None,
        5,
        (b"bad name", b"v"),
        (b"", b"v"),
        (b"x-split", b"a\r\nset-cookie: evil=1"),
        (b"x-nul", b"a\x00b"),
        ("x-str", "v"),
        (b"x-str-value", "v"),
        ("x-str-name", b"v"),
        (b"x-none", None),
        (b"content-length", b"abc"),
        (b"content-length", b"-1"),
        (b"content-length", b"+1"),
        (b"content-length", b"1.5"),
        (b"content-length", b"1 2"),
        (b"content-length", b""),
    ],
)
def test_encode_response_headers_rejects(header):
    with pytest.raises(ASGIMessageError, match="'http.response.start'"):
        encode_response_headers([(b"x-ok", b"1"), header])


def test_asgi_message_error_is_a_runtime_error():
    assert issubclass(ASGIMessageError, RuntimeError)


# -- target -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, expected",
    [
        (b"/", (b"/", b"")),
        (b"/a/b", (b"/a/b", b"")),
        (b"/a?b=1&c=2", (b"/a", b"b=1&c=2")),
        (b"/a?", (b"/a", b"")),
        (b"/?x", (b"/", b"x")),
        (b"/a?b?c", (b"/a", b"b?c")),
        (b"//double", (b"//double", b"")),
        (b"/%2F?q=%20", (b"/%2F", b"q=%20")),
        (b"*", (b"*", b"")),
        # absolute-form (RFC 9112 3.2.2): the path of the URL
        (b"http://example.com/p?q=1", (b"/p", b"q=1")),
        (b"https://example.com:8443/a/b", (b"/a/b", b"")),
        (b"http://example.com", (b"/", b"")),
        (b"http://example.com?q=1", (b"/", b"q=1")),
        (b"http://example.com?next=/x", (b"/", b"next=/x")),
        (b"http://user@example.com/p", (b"/p", b"")),
    ],
)
def test_split_target(target, expected):
    assert split_target(target) == expected


@pytest.mark.parametrize(
    "raw_path, path",
    [
        (b"/", "/"),
        (b"/plain/path", "/plain/path"),
        (b"/a%20b", "/a b"),
        (b"/a%2Fb", "/a/b"),
        (b"/caf%C3%A9", "/caf\u00e9"),
        (b"/%E2%82%AC", "/\u20ac"),
        (b"/100%25", "/100%"),
        (b"/bad%FF", "/bad\ufffd"),
        (b"/not%zzescape", "/not%zzescape"),
        (b"*", "*"),
    ],
)
def test_decode_path(raw_path, path):
    assert decode_path(raw_path) == path


@pytest.mark.parametrize(
    "version, headers, error",
    [
        ("1.1", [(b"host", b"example.com")], None),
        ("1.1", [(b"accept", b"*/*"), (b"host", b"")], None),
        ("1.1", [], "missing Host header"),
        ("1.1", [(b"accept", b"*/*")], "missing Host header"),
        ("1.1", [(b"host", b"a"), (b"host", b"b")], "multiple Host headers"),
        ("1.0", [], None),
        ("1.0", [(b"host", b"a")], None),
        ("1.0", [(b"host", b"a"), (b"host", b"a")], "multiple Host headers"),
    ],
)
def test_host_error(version, headers, error):
    assert host_error(version, headers) == error


# -- proxy trust -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "allow, host, trusted",
    [
        ("127.0.0.1,::1", "127.0.0.1", True),
        ("127.0.0.1,::1", "::1", True),
        ("127.0.0.1,::1", "127.0.0.2", False),
        ("127.0.0.1,::1", "10.0.0.1", False),
        (" 127.0.0.1 , 10.0.0.1 ", "10.0.0.1", True),
        (["127.0.0.1", "10.0.0.1"], "10.0.0.1", True),
        (("192.168.1.1",), "192.168.1.1", True),
        # CIDR networks, IPv4 and IPv6; host bits set are tolerated
        ("10.0.0.0/8", "10.255.1.2", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.1.2.3/16", "10.1.200.1", True),
        ("fd00::/8", "fd12::1", True),
        ("fd00::/8", "fe80::1", False),
        ("10.0.0.0/8", "fd00::1", False),
        # literals that are no address (a name, a unix socket label)
        ("proxy.internal", "proxy.internal", True),
        ("proxy.internal", "other.internal", False),
        # `*` trusts everyone, addresses or not
        ("*", "8.8.8.8", True),
        ("*", "2001:db8::1", True),
        ("*", "not-an-address", True),
        ("127.0.0.1, *", "8.8.8.8", True),
        # nothing trusted but the unix socket peer
        ("", "127.0.0.1", False),
        ("127.0.0.1", "garbage", False),
        ("127.0.0.1", "", False),
    ],
)
def test_proxy_trust(allow, host, trusted):
    trust = ProxyTrust(allow, X_FORWARDED)
    assert trust.is_trusted(host) is trusted
    assert trust.is_trusted(host) is trusted  # the cached answer too


@pytest.mark.parametrize("allow", ["", "127.0.0.1", "10.0.0.0/8", "*"])
def test_unix_socket_peer_is_trusted(allow):
    assert ProxyTrust(allow, X_FORWARDED).is_trusted(None) is True


def test_proxy_trust_answers_stay_right_past_the_cache_size():
    trust = ProxyTrust("10.0.0.0/8", X_FORWARDED)
    for i in range(3000):
        host = f"10.{i // 256 % 256}.{i % 256}.1"
        assert trust.is_trusted(host)
        assert not trust.is_trusted(f"11.0.{i // 256 % 256}.{i % 256}")


@pytest.mark.parametrize(
    "allow, value, client",
    [
        ("127.0.0.1,10.0.0.0/8", "1.2.3.4", "1.2.3.4"),
        ("127.0.0.1,10.0.0.0/8", "1.2.3.4, 10.0.0.2", "1.2.3.4"),
        ("127.0.0.1,10.0.0.0/8", "5.6.7.8, 1.2.3.4, 10.0.0.2", "1.2.3.4"),
        ("127.0.0.1,10.0.0.0/8", "5.6.7.8,1.2.3.4,10.0.0.2,127.0.0.1", "1.2.3.4"),
        ("127.0.0.1,10.0.0.0/8", "1.2.3.4,,10.0.0.2", "1.2.3.4"),
        # every hop trusted: the leftmost is the client
        ("127.0.0.1,10.0.0.0/8", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ("*", "5.6.7.8, 1.2.3.4", "5.6.7.8"),
        # a spoofed leftmost entry does not win over the untrusted hop right of it
        ("10.0.0.0/8", "6.6.6.6, 1.2.3.4, 10.0.0.1", "1.2.3.4"),
        ("10.0.0.0/8", "2001:db8::1", "2001:db8::1"),
        ("10.0.0.0/8", "", None),
        ("10.0.0.0/8", " , ", None),
    ],
)
def test_client_from_forwarded_for(allow, value, client):
    assert ProxyTrust(allow, X_FORWARDED).client_from_forwarded_for(value) == client


def _scope(scope_type="http", client=("127.0.0.1", 50000), **headers):
    scope = {
        "type": scope_type,
        "scheme": "ws" if scope_type == "websocket" else "http",
        "headers": [(b"host", b"example.com")]
        + [
            (name.replace("_", "-").encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ],
    }
    if client is not ...:
        scope["client"] = client
    return scope


@pytest.mark.parametrize(
    "scope_type, proto, scheme",
    [
        ("http", "https", "https"),
        ("http", "http", "http"),
        ("http", "HTTPS", "https"),
        ("http", "wss", "https"),
        ("http", "ws", "http"),
        ("http", "http, https", "https"),  # the last (nearest) proxy's word
        ("http", " https ", "https"),
        ("http", "ftp", "http"),  # unknown: unchanged
        ("http", "", "http"),
        ("websocket", "https", "wss"),
        ("websocket", "wss", "wss"),
        ("websocket", "http", "ws"),
        ("websocket", "ws", "ws"),
        ("websocket", "ftp", "ws"),
    ],
)
def test_apply_proxy_headers_scheme(scope_type, proto, scheme):
    scope = _scope(scope_type, x_forwarded_proto=proto)
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["scheme"] == scheme
    assert scope["client"] == ("127.0.0.1", 50000)


@pytest.mark.parametrize("scope_type", ["http", "websocket"])
def test_apply_proxy_headers_client_and_scheme(scope_type):
    scope = _scope(scope_type, x_forwarded_for="1.2.3.4, 127.0.0.1", x_forwarded_proto="https")
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == ("wss" if scope_type == "websocket" else "https")


@pytest.mark.parametrize("scope_type", ["http", "websocket"])
def test_apply_proxy_headers_ignores_an_untrusted_peer(scope_type):
    scope = _scope(
        scope_type, client=("8.8.8.8", 1234), x_forwarded_for="1.2.3.4", x_forwarded_proto="https"
    )
    before = dict(scope)
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1,10.0.0.0/8", X_FORWARDED))
    assert scope == before


@pytest.mark.parametrize("client", [None, ...], ids=["client-None", "no-client-key"])
def test_apply_proxy_headers_trusts_a_unix_socket_peer(client):
    scope = _scope(client=client, x_forwarded_for="1.2.3.4", x_forwarded_proto="https")
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == "https"


def test_apply_proxy_headers_without_forwarded_headers_changes_nothing():
    scope = _scope()
    before = dict(scope)
    apply_proxy_headers(scope, ProxyTrust("*", X_FORWARDED))
    assert scope == before


def test_apply_proxy_headers_only_forwarded_for():
    scope = _scope(client=("10.0.0.5", 80), x_forwarded_for="1.2.3.4")
    apply_proxy_headers(scope, ProxyTrust("10.0.0.0/8", X_FORWARDED))
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == "http"


def test_apply_proxy_headers_empty_forwarded_for_keeps_the_peer():
    scope = _scope(x_forwarded_for=" ")
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["client"] == ("127.0.0.1", 50000)


# -- errors --------------------------------------------------------------------------------


def _parse_response(data: bytes):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon and is_token(name)
        assert name not in headers
        headers[name] = value.strip()
    return status_line + b"\r\n", headers, body


@pytest.mark.parametrize("status", [400, 404, 408, 413, 414, 431, 500, 503])
def test_error_response(status):
    response = error_response(status)
    status_line, headers, body = _parse_response(response)
    assert status_line == STATUS_LINES[status]
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"].startswith(b"text/plain")
    assert body == b"%d %s\n" % (status, status_phrase(status).encode("ascii"))
    assert error_response(status) == response


def test_log_invalid_request_names_tls_on_a_plain_port(error_log):
    log_invalid_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert [r.getMessage() for r in error_log] == [errors.TLS_ON_PLAIN_PORT]
    assert error_log[0].levelno == logging.WARNING


def test_log_invalid_request_names_http2_prior_knowledge(error_log):
    log_invalid_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00")
    assert [r.getMessage() for r in error_log] == [errors.HTTP2_PRIOR_KNOWLEDGE]
    assert error_log[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\n", b"\x16", b"", b"\x00\x03", b"PRI * HTTP/1.1\r\n"]
)
def test_log_invalid_request_is_quiet_otherwise(error_log, data):
    log_invalid_request(data)
    assert error_log == []


# -- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [100, 101, 103, 199, 204, 304])
@pytest.mark.parametrize("content_length", [-1, 0, 10])
@pytest.mark.parametrize("app_chunked", [False, True])
@pytest.mark.parametrize("more_body", [False, True])
@pytest.mark.parametrize("http10", [False, True])
def test_choose_framing_no_body_statuses(status, content_length, app_chunked, more_body, http10):
    assert choose_framing(status, content_length, app_chunked, more_body, http10) == NONE


@pytest.mark.parametrize(
    "status, content_length, app_chunked, more_body, http10, expected",
    [
        # the app's content-length
        (200, 10, False, False, False, LENGTH),
        (200, 10, False, True, False, LENGTH),
        (200, 10, False, True, True, LENGTH),
        (200, 0, False, False, True, LENGTH),
        (404, 5, False, True, False, LENGTH),
        # the app's transfer-encoding
        (200, -1, True, False, False, CHUNKED),
        (200, -1, True, True, False, CHUNKED),
        # the whole body in one message: the server adds content-length
        (200, -1, False, False, False, LENGTH),
        (200, -1, False, False, True, LENGTH),
        (500, -1, False, False, False, LENGTH),
        # streaming, length unknown
        (200, -1, False, True, False, CHUNKED),
        (200, -1, False, True, True, UNTIL_CLOSE),
        (205, -1, False, True, False, CHUNKED),
        (599, -1, False, True, True, UNTIL_CLOSE),
    ],
)
def test_choose_framing(status, content_length, app_chunked, more_body, http10, expected):
    assert choose_framing(status, content_length, app_chunked, more_body, http10) == expected


def test_framing_modes_are_distinct():
    assert len({LENGTH, CHUNKED, UNTIL_CLOSE, NONE}) == 4


@pytest.mark.parametrize(
    "status, no_body",
    [
        (100, True),
        (199, True),
        (200, False),
        (204, True),
        (205, False),
        (303, False),
        (304, True),
        (404, False),
    ],
)
def test_status_has_no_body(status, no_body):
    assert framing.status_has_no_body(status) is no_body


# -- asgi: messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        ({"type": "http.response.start", "status": 200}, (200, [])),
        ({"type": "http.response.start", "status": 100, "headers": []}, (100, [])),
        ({"type": "http.response.start", "status": 599}, (599, [])),
        (
            {"type": "http.response.start", "status": 404, "headers": [(b"a", b"b")]},
            (404, [(b"a", b"b")]),
        ),
        (
            {"type": "http.response.start", "status": 200, "headers": ((b"a", b"b"),)},
            (200, [(b"a", b"b")]),
        ),
    ],
)
def test_response_start(message, expected):
    status, headers = response_start(message)
    assert (status, headers) == expected
    assert isinstance(headers, list)


def test_response_start_takes_any_iterable_of_headers():
    message = {"type": "http.response.start", "status": 200, "headers": iter([(b"a", b"b")])}
    assert response_start(message) == (200, [(b"a", b"b")])


@pytest.mark.parametrize(
    "message",
    [
        None,
        "http.response.start",
        [("type", "http.response.start")],
        {},
        {"type": "http.response.body", "body": b""},
        {"type": "http.response.start"},
        {"type": "http.response.start", "status": None},
        {"type": "http.response.start", "status": "200"},
        {"type": "http.response.start", "status": 200.0},
        {"type": "http.response.start", "status": 99},
        {"type": "http.response.start", "status": 600},
        {"type": "http.response.start", "status": -200},
    ],
)
def test_response_start_rejects(message):
    with pytest.raises(ASGIMessageError, match="'http.response.start'"):
        response_start(message)


@pytest.mark.parametrize(
    "message, expected",
    [
        ({"type": "http.response.body"}, (b"", False)),
        ({"type": "http.response.body", "body": b"abc"}, (b"abc", False)),
        ({"type": "http.response.body", "body": b"abc", "more_body": True}, (b"abc", True)),
        ({"type": "http.response.body", "more_body": False}, (b"", False)),
        ({"type": "http.response.body", "body": bytearray(b"x"), "more_body": 1}, (b"x", True)),
        ({"type": "http.response.body", "body": memoryview(b"mv")}, (b"mv", False)),
    ],
)
def test_response_body(message, expected):
    body, more_body = response_body(message)
    assert (bytes(body), more_body) == expected
    assert more_body is expected[1]


@pytest.mark.parametrize(
    "message",
    [
        None,
        {},
        {"type": "http.response.start", "status": 200},
        {"type": "http.response.body", "body": "text"},
        {"type": "http.response.body", "body": None},
        {"type": "http.response.body", "body": 1},
        {"type": "http.response.body", "body": [b"a"]},
    ],
)
def test_response_body_rejects(message):
    with pytest.raises(ASGIMessageError, match="'http.response.body'"):
        response_body(message)


def test_the_message_error_names_what_was_sent():
    with pytest.raises(ASGIMessageError, match="'http.response.start'.*'websocket.send'"):
        response_start({"type": "websocket.send"})
    with pytest.raises(ASGIMessageError, match="str"):
        response_body({"type": "http.response.body", "body": "text"})
    with pytest.raises(ASGIMessageError, match="'http.response.start'.*status 700"):
        response_start({"type": "http.response.start", "status": 700})


@pytest.mark.parametrize(
    "message, shown",
    [({"type": "http.response.body"}, "'http.response.body'"), ("junk", "'junk'")],
)
def test_after_complete(message, shown):
    error = asgi.after_complete(message)
    assert isinstance(error, ASGIMessageError)
    assert shown in str(error)
    assert "after response already completed" in str(error)


# -- asgi: when the app returned -------------------------------------------------------------


@pytest.mark.parametrize(
    "result, message_error, started, complete, disconnected, outcome, logged",
    [
        (None, None, True, True, False, APP_DONE, None),
        (None, None, True, True, True, APP_DONE, None),
        # an invalid message: 500 if possible, whatever else happened
        (None, ASGIMessageError("bad"), False, False, False, APP_FAIL, "Invalid ASGI message"),
        (None, ASGIMessageError("bad"), True, False, False, APP_FAIL, "Invalid ASGI message"),
        (None, ASGIMessageError("bad"), True, True, True, APP_FAIL, "Invalid ASGI message"),
        # returned a value
        (42, None, True, True, False, APP_CLOSE, "should return None"),
        ("x", None, False, False, False, APP_CLOSE, "should return None"),
        # no response
        (None, None, False, False, False, APP_FAIL, "without starting response"),
        (None, None, False, False, True, APP_FAIL, None),
        # a response started, never completed
        (None, None, True, False, False, APP_CLOSE, "without completing response"),
        (None, None, True, False, True, APP_CLOSE, None),
    ],
)
def test_app_returned(
    error_log, result, message_error, started, complete, disconnected, outcome, logged
):
    assert app_returned(result, message_error, started, complete, disconnected) == outcome
    errors_logged = [r for r in error_log if r.levelno >= logging.ERROR]
    if logged is None:
        assert errors_logged == []
    else:
        assert len(errors_logged) == 1
        assert logged in errors_logged[0].getMessage()


def test_app_outcomes_are_distinct():
    assert len({APP_DONE, APP_FAIL, APP_CLOSE}) == 3


def test_client_disconnected_is_an_oserror_exported_at_the_top():
    assert issubclass(ClientDisconnected, OSError)
    assert fastserve.ClientDisconnected is ClientDisconnected


def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the test wants the exception object
        return exc
    raise AssertionError("nothing raised")


def _raise(exc):
    raise exc


def _from_cause():
    raise RuntimeError("wrapped") from ClientDisconnected()


def _from_context():
    try:
        raise ClientDisconnected()
    except ClientDisconnected:
        raise RuntimeError("raised while handling")  # noqa: B904 - the context is the point


def _deeper():
    try:
        _from_context()
    except RuntimeError as exc:
        raise ValueError("outer") from exc


def _unrelated_context():
    try:
        raise KeyError("x")
    except KeyError:
        raise RuntimeError("no disconnect here")  # noqa: B904


class StarletteLikeDisconnect(Exception):
    pass


def _starlette_like():
    try:
        raise ClientDisconnected()
    except OSError as exc:
        raise StarletteLikeDisconnect() from exc


def _chain(depth: int) -> BaseException:
    exc: BaseException = ClientDisconnected()
    for i in range(depth):
        outer = RuntimeError(f"level {i}")
        outer.__cause__ = exc
        exc = outer
    return exc


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: None, False),
        (lambda: ValueError("x"), False),
        (lambda: OSError("not ours"), False),
        (lambda: ClientDisconnected(), True),
        (lambda: _raised(lambda: _raise(ClientDisconnected("gone"))), True),
        (lambda: _raised(_from_cause), True),
        (lambda: _raised(_from_context), True),
        (lambda: _raised(_deeper), True),
        (lambda: _raised(_starlette_like), True),
        (lambda: _raised(_unrelated_context), False),
        (lambda: _chain(5), True),
        (lambda: _chain(50), False),  # beyond the depth limit: given up on
    ],
    ids=[
        "None",
        "ValueError",
        "OSError",
        "ClientDisconnected",
        "raised",
        "cause",
        "context",
        "cause-of-context",
        "starlette-like",
        "unrelated-context",
        "chain-5",
        "chain-50",
    ],
)
def test_from_disconnect(make, expected):
    assert from_disconnect(make()) is expected


def test_from_disconnect_stops_on_a_cycle():
    a = RuntimeError("a")
    b = RuntimeError("b")
    a.__context__ = b
    b.__context__ = a
    assert from_disconnect(a) is False


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in 3.11")
def test_from_disconnect_exception_groups():
    group = builtins.BaseExceptionGroup
    all_gone = group("g", [ClientDisconnected(), _raised(_from_cause)])
    mixed = group("g", [ClientDisconnected(), ValueError("real bug")])
    nested = group("outer", [group("inner", [ClientDisconnected()])])
    assert from_disconnect(all_gone) is True
    assert from_disconnect(mixed) is False
    assert from_disconnect(nested) is True
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = all_gone
    assert from_disconnect(wrapped) is True


def test_log_app_exception(error_log):
    asgi.log_app_exception(_raised(_from_cause), disconnected=True)
    assert [r.levelno for r in error_log] == [logging.DEBUG]
    error_log.clear()
    asgi.log_app_exception(_raised(_from_cause), disconnected=False)
    asgi.log_app_exception(ValueError("bug"), disconnected=True)
    assert [r.levelno for r in error_log] == [logging.ERROR, logging.ERROR]
    assert all(r.exc_info for r in error_log)


# -- Forwarded (RFC 7239) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, elements",
    [
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        ),
        ('for="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        ('For="_gazonk"', [{"for": "_gazonk"}]),  # names are case-insensitive
        ('for="a,b;c";proto=https', [{"for": "a,b;c", "proto": "https"}]),  # separators quoted
        (r'for="x\"y"', [{"for": 'x"y'}]),  # a quoted-pair
        ("for=1.2.3.4;junk;proto=https", [{"for": "1.2.3.4", "proto": "https"}]),
        ("", []),
    ],
)
def test_parse_forwarded(value, elements):
    assert parse_forwarded(value) == elements


@pytest.mark.parametrize(
    "node, parsed",
    [
        ("192.0.2.43", ("192.0.2.43", 0)),
        ("192.0.2.43:47011", ("192.0.2.43", 47011)),
        ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", 4711)),
        ("[2001:db8:cafe::17]", ("2001:db8:cafe::17", 0)),
        ("2001:db8::1", ("2001:db8::1", 0)),  # unbracketed v6 (not RFC, seen in the wild)
        ("unknown", ("unknown", 0)),
        ("_hidden:_port", ("_hidden", 0)),
    ],
)
def test_parse_node(node, parsed):
    assert parse_node(node) == parsed


@pytest.mark.parametrize(
    "allow, forwarded, client, scheme",
    [
        ("127.0.0.1", "for=1.2.3.4;proto=https", ("1.2.3.4", 0), "https"),
        ("127.0.0.1", 'for="[2001:db8::7]:4711";proto=https', ("2001:db8::7", 4711), "https"),
        # the right-most untrusted hop, and the proto its proxy wrote
        (
            "127.0.0.1,10.0.0.0/8",
            "for=6.6.6.6;proto=http, for=1.2.3.4;proto=https, for=10.0.0.2",
            ("1.2.3.4", 0),
            "https",
        ),
        # every hop trusted: the first one
        (
            "127.0.0.1,10.0.0.0/8",
            "for=10.0.0.3;proto=https, for=10.0.0.2",
            ("10.0.0.3", 0),
            "https",
        ),
        # unknown / no for=: the socket's client stays; a proto= still names the scheme
        ("127.0.0.1", "for=unknown;proto=https", ("127.0.0.1", 50000), "https"),
        ("127.0.0.1", "proto=https", ("127.0.0.1", 50000), "https"),
    ],
)
def test_apply_forwarded(allow, forwarded, client, scheme):
    scope = _scope(forwarded=forwarded)
    apply_proxy_headers(scope, ProxyTrust(allow, FORWARDED))
    assert (scope["client"], scope["scheme"]) == (client, scheme)


# Both families at once, as a client sends them through a proxy that writes only one.
BOTH_FAMILIES = {
    "forwarded": "for=1.2.3.4;proto=http",
    "x_forwarded_for": "5.6.7.8",
    "x_forwarded_proto": "https",
}


@pytest.mark.parametrize(
    "style, client, scheme",
    [(X_FORWARDED, ("5.6.7.8", 0), "https"), (FORWARDED, ("1.2.3.4", 0), "http")],
)
def test_only_the_style_s_family_is_believed(style, client, scheme):
    scope = _scope(**BOTH_FAMILIES)
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", style))
    assert (scope["client"], scope["scheme"]) == (client, scheme)


@pytest.mark.parametrize(
    "style, headers",
    [
        (X_FORWARDED, {"forwarded": "for=6.6.6.6;proto=https"}),
        (X_FORWARDED, {"x_real_ip": "6.6.6.6"}),
        (FORWARDED, {"x_forwarded_for": "6.6.6.6", "x_forwarded_proto": "https"}),
        (FORWARDED, {"x_real_ip": "6.6.6.6"}),
    ],
)
def test_the_other_family_changes_nothing(style, headers):
    scope = _scope(**headers)
    before = dict(scope)
    apply_proxy_headers(scope, ProxyTrust("*", style))
    assert scope == before


def test_repeated_x_forwarded_for_lines_are_one_chain():
    """HAProxy's `option forwardfor` adds a line after the client's own: the client's
    line must not be read alone."""
    scope = _scope()
    scope["headers"] += [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"1.2.3.4")]
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["client"] == ("1.2.3.4", 0)
    scope["headers"].reverse()  # and which line comes last matters, not the first
    scope["client"] = ("127.0.0.1", 50000)
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", X_FORWARDED))
    assert scope["client"] == ("6.6.6.6", 0)


def test_repeated_forwarded_lines_are_one_list():
    scope = _scope()
    scope["headers"] += [(b"forwarded", b"for=6.6.6.6;proto=https"), (b"forwarded", b"for=1.2.3.4")]
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", FORWARDED))
    assert (scope["client"], scope["scheme"]) == (("1.2.3.4", 0), "http")


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="x-forwarded"):
        ProxyTrust("127.0.0.1", "both")


def test_forwarded_from_an_untrusted_peer_is_ignored():
    scope = _scope(client=("8.8.8.8", 1234), forwarded="for=1.2.3.4;proto=https")
    apply_proxy_headers(scope, ProxyTrust("127.0.0.1", FORWARDED))
    assert (scope["client"], scope["scheme"]) == (("8.8.8.8", 1234), "http")
