"""Request-parsing micro-benchmarks: the inputs and one adapter per parser.

Run with `pytest bench/ --benchmark-only` (never part of the main test run, whose
testpaths is `tests`).

Every adapter does the same work for a buffer that one connection delivered: a fresh
parser, the whole buffer fed once, and for each request in it the method (str), the raw
request target (bytes), the headers as (lowercased name, value) byte pairs in order, and
the body joined into bytes. That is what a server needs before it can build a scope, and
nothing more (no scope, no path decoding, no responses).
"""

from __future__ import annotations

import importlib.util
from typing import Callable, NamedTuple, Optional

import pytest

if importlib.util.find_spec("pytest_benchmark") is None:  # pragma: no cover
    collect_ignore_glob = ["test_*.py"]

Header = tuple[bytes, bytes]


class Parsed(NamedTuple):
    method: str
    target: bytes
    headers: list[Header]
    body: bytes


# -- inputs ---------------------------------------------------------------------------

SMALL_GET = (
    b"GET /hello?name=world HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: wrk/4.1\r\n"
    b"Accept: */*\r\n"
    b"\r\n"
)

BROWSER_HEADERS = [
    (b"Host", b"www.example.com"),
    (b"Connection", b"keep-alive"),
    (b"Cache-Control", b"max-age=0"),
    (b"sec-ch-ua", b'"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Linux"'),
    (b"Upgrade-Insecure-Requests", b"1"),
    (
        b"User-Agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        b"Accept",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
        b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    ),
    (b"Sec-Fetch-Site", b"same-origin"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"Sec-Fetch-User", b"?1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Referer", b"https://www.example.com/articles/2024/05/fast-asgi-servers?ref=home"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Accept-Language", b"en-GB,en-US;q=0.9,en;q=0.8,fr;q=0.7"),
    (
        b"Cookie",
        b"sessionid=8c7e1d0f5b2a4e6f9a1b3c5d7e9f0a2b; csrftoken=Zt9qW3xYk2LmN8pQ4rS6tU1vX5yA7bC0; "
        b"_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1715000000; theme=dark",
    ),
    (b"DNT", b"1"),
    (b"Pragma", b"no-cache"),
    (b"If-None-Match", b'W/"5e8f-18f3c2a1b2c"'),
    (b"If-Modified-Since", b"Tue, 14 May 2024 08:12:31 GMT"),
    (b"Priority", b"u=0, i"),
    (b"X-Requested-With", b"XMLHttpRequest"),
    (b"X-Forwarded-For", b"203.0.113.195, 70.41.3.18, 150.172.238.178"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Request-ID", b"f3b5c1e2-8d4a-4f6b-9c2e-1a7d3e5f9b0c"),
    (b"X-Real-IP", b"203.0.113.195"),
    (b"Forwarded", b"for=203.0.113.195;proto=https;by=10.0.0.1"),
    (b"Origin", b"https://www.example.com"),
    (b"Via", b"1.1 proxy.example.net"),
]
assert len(BROWSER_HEADERS) == 30

BROWSER_GET = (
    b"GET /articles/2024/05/fast-asgi-servers?utm_source=newsletter&page=2 HTTP/1.1\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in BROWSER_HEADERS)
    + b"\r\n"
)

CHUNK = bytes(range(97, 123)) * 39 + b"abcdefghij"  # 1024 bytes
assert len(CHUNK) == 1024
CHUNKED_POST = (
    b"POST /upload HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: bench\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    + b"400\r\n"
    + CHUNK
    + b"\r\n"
    + b"400;ext=1\r\n"
    + CHUNK
    + b"\r\n"  # a chunk extension, tolerated
    + b"400\r\n"
    + CHUNK
    + b"\r\n"
    + b"400\r\n"
    + CHUNK
    + b"\r\n"
    + b"0\r\n\r\n"
)

PIPELINE_DEPTH = 16
PIPELINED = SMALL_GET * PIPELINE_DEPTH


def _lower(headers):
    return [(name.lower(), value) for name, value in headers]


_SMALL = Parsed(
    "GET",
    b"/hello?name=world",
    [(b"host", b"example.com"), (b"user-agent", b"wrk/4.1"), (b"accept", b"*/*")],
    b"",
)

# case id → (the buffer, what every parser must return for it)
CASES = {
    "small_get": (SMALL_GET, [_SMALL]),
    "browser_30_headers": (
        BROWSER_GET,
        [
            Parsed(
                "GET",
                b"/articles/2024/05/fast-asgi-servers?utm_source=newsletter&page=2",
                _lower(BROWSER_HEADERS),
                b"",
            )
        ],
    ),
    "chunked_post": (
        CHUNKED_POST,
        [
            Parsed(
                "POST",
                b"/upload",
                [
                    (b"host", b"example.com"),
                    (b"user-agent", b"bench"),
                    (b"content-type", b"application/octet-stream"),
                    (b"transfer-encoding", b"chunked"),
                ],
                CHUNK * 4,
            )
        ],
    ),
    "pipelined_16": (PIPELINED, [_SMALL] * PIPELINE_DEPTH),
}


# -- httptools (uvicorn's fast parser, llhttp behind Python-level callbacks) ----------


class _HttptoolsSink:
    __slots__ = ("parser", "out", "url", "headers", "body")

    def __init__(self):
        self.out = []
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url):
        self.url += url  # may arrive in pieces

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.out.append(
            Parsed(
                self.parser.get_method().decode("ascii"),
                self.url,
                self.headers,
                b"".join(self.body),
            )
        )
        self.url = b""
        self.headers = []
        self.body = []


def parse_httptools(data: bytes) -> list[Parsed]:
    import httptools

    sink = _HttptoolsSink()
    sink.parser = parser = httptools.HttpRequestParser(sink)
    parser.feed_data(data)
    return sink.out


# -- h11 (the pure mode's parser) ------------------------------------------------------


def parse_h11(data: bytes) -> list[Parsed]:
    """h11 will not parse past a request until a response was sent, so each pipelined
    request gets a fresh Connection fed the previous one's trailing_data (~1.3 µs each,
    much less than sending a response; a parse-only equivalent)."""
    import h11

    out = []
    Request, Data, EndOfMessage = h11.Request, h11.Data, h11.EndOfMessage
    NEED_DATA, PAUSED = h11.NEED_DATA, h11.PAUSED
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    body = []
    while True:
        event = conn.next_event()
        kind = type(event)
        if kind is Request:
            method = event.method.decode("ascii")
            target = event.target
            headers = list(event.headers)  # h11 already lowercases names
            body = []
        elif kind is Data:
            body.append(event.data)
        elif kind is EndOfMessage:
            out.append(Parsed(method, target, headers, b"".join(body)))
        elif event is PAUSED:
            rest = conn.trailing_data[0]
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(rest)
        elif event is NEED_DATA:
            return out
        else:  # pragma: no cover
            raise AssertionError(f"unexpected h11 event {event!r}")


# -- fastserve's C parser (llhttp driven from Cython) ------------------------------------
#
# HttpProtocol is a whole protocol (transport, app, tasks), so it cannot be timed as a
# parser. `fastserve._parser.parse_requests(data, settings)` runs the same llhttp
# settings, callbacks and header building with no protocol, and returns Parsed-shaped
# tuples: (method, raw target, lowercased headers, body) for each complete request;
# ValueError on malformed input. The settings are a default Config's.


def _find_c_parser() -> tuple[Optional[Callable[[bytes], list]], str]:
    try:
        from fastserve import _parser
    except ImportError as exc:
        return None, f"fastserve._parser (the C extension) does not import: {exc}"
    from fastserve.config import Config

    config = Config(parse_only_app, log_config=None)
    config.load()

    def parse_c(data: bytes, _settings=config.protocol_settings) -> list:
        return _parser.parse_requests(data, _settings)

    return parse_c, "fastserve._parser.parse_requests"


async def parse_only_app(scope, receive, send):
    """The parser benchmarks run no app; Config needs one."""


_C_PARSE, _C_INFO = _find_c_parser()

# parser id → (parse function or None, skip reason if None)
PARSERS = {
    "httptools": (parse_httptools, ""),
    "h11": (parse_h11, ""),
    "fastserve_c": (_C_PARSE, _C_INFO),
}


@pytest.fixture(params=list(CASES))
def case(request):
    """(case id, buffer, expected list of Parsed)."""
    data, expected = CASES[request.param]
    return request.param, data, expected


@pytest.fixture(params=list(PARSERS))
def parse(request):
    func, info = PARSERS[request.param]
    if func is None:
        pytest.skip(info)
    if request.param == "httptools":
        pytest.importorskip("httptools")
    return func
