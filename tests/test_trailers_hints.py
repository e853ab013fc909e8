"""Response trailers (the ASGI HTTP Trailers extension) and 103 early hints (the
Early Hints extension), both modes, HTTP/1.1 and HTTP/2, against real server
processes (tests/apps_trailers.py): raw sockets for HTTP/1.1's chunked trailer
section and 103 heads, the `h2` library as the HTTP/2 client (its events: the 103
HEADERS, the trailers' HEADERS frame), curl as a client that prints them; and both
modes against each other (the same bytes on HTTP/1.1, the same fields on HTTP/2)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import h2.config
import h2.connection
import h2.events
import pytest

from fastserve.protocols.asgi import ASGIMessageError
from fastserve.protocols.http import framing as fr
from fastserve.protocols.http.headers import link_fields, trailer_fields
from process_util import tool_environment

APP = "tests.apps_trailers:app"
BODY = b"hello, world"
TRAILERS = [(b"x-checksum", b"abc123"), (b"x-count", b"2")]
LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
LATE_LINK = b"</late.css>; rel=preload"
TE_TRAILERS = [("TE", "trailers")]
WAIT_SECONDS = 15
READ_SIZE = 65536
TOOL_SECONDS = 60
MODES = ("c", "python")


@pytest.fixture
def h1(servers, mode):
    return servers.get(APP, mode)


@pytest.fixture
def h2_server(servers, mode):
    return servers.get(APP, mode, "--http2")


# -- an HTTP/2 client -------------------------------------------------------------------


def h2_exchange(port: int, path: str, te_trailers: bool = True, method: str = "GET") -> list:
    """One request on a new connection (`h2`, prior knowledge); the events of its
    stream, up to its end or its reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as sock:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", b"h2.test"),
            (b":path", path.encode()),
        ]
        if te_trailers:
            fields.append((b"te", b"trailers"))
        conn.send_headers(1, fields, end_stream=True)
        sock.sendall(conn.data_to_send())
        events = []
        while True:
            data = sock.recv(READ_SIZE)
            assert data, f"the connection closed; events so far: {events}"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                if getattr(event, "stream_id", None) != 1:
                    continue
                events.append(event)
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return events
            sock.sendall(conn.data_to_send())


def h2_summary(events: list) -> dict:
    """What a stream's events say: interim statuses and their links, the status, the
    body, the trailers (None: no trailer HEADERS), how it ended."""
    summary = {"interim": [], "status": None, "body": b"", "trailers": None, "end": None}
    for event in events:
        if isinstance(event, h2.events.InformationalResponseReceived):
            headers = event.headers
            status = dict(headers)[b":status"]
            summary["interim"].append((status, [v for n, v in headers if n == b"link"]))
        elif isinstance(event, h2.events.ResponseReceived):
            summary["status"] = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            summary["body"] += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            summary["trailers"] = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            summary["end"] = "ended"
        elif isinstance(event, h2.events.StreamReset):
            summary["end"] = f"reset {int(event.error_code)}"
    return summary


def h2_get(port: int, path: str, te_trailers: bool = True, method: str = "GET") -> dict:
    return h2_summary(h2_exchange(port, path, te_trailers, method))


# -- HTTP/2 trailers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/trailers", "/trailers/one", "/trailers/empty"], ids=["two", "one", "empty-last"]
)
def test_http2_trailers_end_the_stream(h2_server, path):
    result = h2_get(h2_server.port, path)
    assert result["status"] == 200
    assert result["body"] == BODY
    assert result["trailers"] == TRAILERS
    assert result["end"] == "ended"


def test_http2_trailers_after_a_content_length(h2_server):
    """HTTP/2 frames by DATA: the app's Content-Length and trailers both go."""
    result = h2_get(h2_server.port, "/trailers/length")
    assert (result["body"], result["trailers"]) == (BODY, TRAILERS[:1])


def test_http2_trailers_after_pathsend(h2_server, tmp_path):
    """A body past the client's first windows: the trailers wait for its last DATA."""
    path = tmp_path / "body.txt"
    path.write_bytes(BODY * 100_000)
    result = h2_get(h2_server.port, f"/trailers/pathsend?path={path}")
    assert (result["body"], result["trailers"]) == (BODY * 100_000, TRAILERS)


def test_http2_no_trailers_to_a_client_without_te(h2_server):
    """The extension sends trailers only to a client that said `TE: trailers`: the
    stream ends with an empty DATA frame instead."""
    result = h2_get(h2_server.port, "/trailers", te_trailers=False)
    assert (result["body"], result["trailers"], result["end"]) == (BODY, None, "ended")


def test_http2_an_empty_trailers_message_sends_none(h2_server):
    result = h2_get(h2_server.port, "/trailers/none")
    assert (result["body"], result["trailers"], result["end"]) == (BODY, None, "ended")


def test_http2_head_request_gets_its_trailers(h2_server):
    result = h2_get(h2_server.port, "/trailers", method="HEAD")
    assert (result["status"], result["body"], result["trailers"]) == (200, b"", TRAILERS)


# The bad trailers of apps_trailers.py, and the error each is logged with.
BAD_TRAILERS = {
    "/trailers/bad-name": "has an invalid header b'x bad'",
    "/trailers/pseudo": "has an invalid header b':status'",
    "/trailers/framing": "has an invalid header b'content-length'",
    "/trailers/unannounced": "did not set 'trailers'",
}


@pytest.mark.parametrize("path", sorted(BAD_TRAILERS))
def test_http2_bad_trailers_reset_the_stream(h2_server, path):
    """The head is out: the stream is reset (INTERNAL_ERROR), the app's error logged;
    the connection goes on."""
    result = h2_get(h2_server.port, path)
    assert result["status"] == 200
    assert result["trailers"] is None
    assert result["end"] == "reset 2"
    h2_server.wait_for_log(re.escape(BAD_TRAILERS[path]))
    assert h2_get(h2_server.port, "/trailers")["trailers"] == TRAILERS


@pytest.mark.parametrize("path", ["/trailers/early", "/hints/bad"])
def test_http2_a_bad_message_before_the_head_is_a_500(h2_server, path):
    result = h2_get(h2_server.port, path)
    assert (result["status"], result["trailers"], result["end"]) == (500, None, "ended")


def test_http2_a_body_after_the_last_is_refused(h2_server):
    result = h2_get(h2_server.port, "/trailers/late")
    assert result["end"] == "reset 2"
    h2_server.wait_for_log("Expected ASGI message 'http.response.trailers'")


# -- HTTP/2 early hints -----------------------------------------------------------------


def test_http2_early_hints(h2_server):
    """A 103 HEADERS frame for each hint sent before the response's own HEADERS."""
    result = h2_get(h2_server.port, "/hints")
    assert result["interim"] == [(b"103", LINKS), (b"103", [LATE_LINK])]
    assert (result["status"], result["body"], result["end"]) == (200, BODY, "ended")


def test_http2_a_hint_after_the_head_is_ignored(h2_server):
    result = h2_get(h2_server.port, "/hints/late")
    assert (result["interim"], result["body"], result["end"]) == ([], BODY, "ended")


def test_scope_advertises_both_extensions(h2_server, h1):
    for extensions in (h2_get(h2_server.port, "/echo-scope")["body"], h1_get(h1, "/echo-scope")):
        assert b"http.response.trailers" in extensions.split()
        assert b"http.response.early_hint" in extensions.split()


def test_http2_modes_send_the_same_fields(servers):
    """The C mode (nghttp2) and the pure mode (`h2`): the same events' contents."""
    paths = ["/trailers", "/trailers/one", "/trailers/length", "/trailers/none", "/hints"]
    ports = [servers.get(APP, mode, "--http2").port for mode in MODES]
    for path in paths:
        c_result, python_result = (h2_get(port, path) for port in ports)
        assert c_result == python_result, path


# -- HTTP/1.1 ---------------------------------------------------------------------------


def h1_get(server, path: str, headers=None):
    with server.client() as client:
        return client.request("GET", path, headers=headers).body


def raw_exchange(server, request: bytes) -> bytes:
    """The bytes of one exchange (`Connection: close`), up to the server's close."""
    with server.client() as client:
        client.send(request)
        return client.wait_closed(timeout=WAIT_SECONDS)


def request_bytes(path: str, version: str = "1.1", te: bool = True, method: str = "GET") -> bytes:
    te_line = b"TE: trailers\r\n" if te else b""
    return b"%s %s HTTP/%s\r\nHost: t\r\n%sConnection: close\r\n\r\n" % (
        method.encode(),
        path.encode(),
        version.encode(),
        te_line,
    )


def chunked_response(body: bytes, trailer_lines: bytes) -> bytes:
    """The body part of a chunked response with a trailer section (the server's
    chunks: one a body message)."""
    return body + b"0\r\n" + trailer_lines + b"\r\n"


HEAD_END = b"\r\n\r\n"


def split_response(data: bytes) -> tuple[list, bytes]:
    """(the first head's lines, past its status line; the bytes after it), without
    any Date line (a 103's final response has one too, maybe of another second)."""
    head, _, rest = re.sub(rb"date: [^\r]*\r\n", b"", data).partition(HEAD_END)
    return head.split(b"\r\n")[1:], rest


STREAMED_BODY = b"7\r\nhello, \r\n5\r\nworld\r\n"
ONE_BODY = b"c\r\nhello, world\r\n"
TRAILER_LINES = b"x-checksum: abc123\r\nx-count: 2\r\n"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/trailers", STREAMED_BODY), ("/trailers/one", ONE_BODY), ("/trailers/empty", ONE_BODY)],
    ids=["two", "one", "empty-last"],
)
def test_http11_trailers_after_the_last_chunk(h1, path, body):
    """To an HTTP/1.1 client that accepts trailers (TE: trailers) the response is
    chunked (even a one-message body), its trailer section after the last chunk."""
    lines, rest = split_response(raw_exchange(h1, request_bytes(path)))
    assert b"transfer-encoding: chunked" in lines
    assert rest == chunked_response(body, TRAILER_LINES)


def test_http11_trailers_read_by_a_client(h1):
    with h1.client() as client:
        response = client.request("GET", "/trailers", headers=TE_TRAILERS)
        assert response.body == BODY
        assert response.trailers == [b"x-checksum: abc123", b"x-count: 2"]
        # keep-alive: the next request on the connection is answered
        assert client.request("GET", "/trailers/one", headers=TE_TRAILERS).body == BODY


def test_http11_trailers_after_pathsend(h1, tmp_path):
    path = tmp_path / "body.txt"
    path.write_bytes(BODY)
    lines, rest = split_response(raw_exchange(h1, request_bytes(f"/trailers/pathsend?path={path}")))
    assert rest == chunked_response(ONE_BODY, TRAILER_LINES)


@pytest.mark.parametrize(
    ("request_line", "framing", "body"),
    [
        (
            request_bytes("/trailers", te=False),
            b"transfer-encoding: chunked",
            STREAMED_BODY + b"0\r\n\r\n",
        ),
        (request_bytes("/trailers/one", te=False), b"content-length: 12", BODY),
        (request_bytes("/trailers", version="1.0"), None, BODY),
        (request_bytes("/trailers/length"), b"content-length: 12", BODY),
    ],
    ids=["no-te", "no-te-one-message", "http10", "content-length"],
)
def test_http11_trailers_dropped(h1, request_line, framing, body):
    """Trailers the client cannot take (no TE: trailers, HTTP/1.0) or the framing
    has no place for (the app's Content-Length) are dropped; the response is framed
    as without them."""
    lines, rest = split_response(raw_exchange(h1, request_line))
    if framing is not None:
        assert framing in lines
    assert rest == body


def test_http11_head_gets_no_trailer_section(h1):
    with h1.client() as client:
        response = client.request("HEAD", "/trailers", headers=TE_TRAILERS)
        assert response.status == 200 and response.body == b""
        assert client.request("GET", "/trailers/none", headers=TE_TRAILERS).body == BODY


@pytest.mark.parametrize("path", sorted(BAD_TRAILERS))
def test_http11_bad_trailers_close_the_connection(h1, path):
    """The body is out: no trailer section, the connection closed (the client sees
    an incomplete chunked body), the app's error logged."""
    data = raw_exchange(h1, request_bytes(path))
    assert data.startswith(b"HTTP/1.1 200 ")
    _, rest = split_response(data)
    assert rest.startswith(b"7\r\nhello, \r\n" if "unannounced" in path else ONE_BODY)
    assert not rest.endswith(b"0\r\n\r\n") and b"x-checksum" not in rest
    h1.wait_for_log(re.escape(BAD_TRAILERS[path]))


@pytest.mark.parametrize("path", ["/trailers/early", "/hints/bad"])
def test_http11_a_bad_message_before_the_head_is_a_500(h1, path):
    with h1.client() as client:
        response = client.request("GET", path, headers=TE_TRAILERS)
        assert response.status == 500


def test_http11_a_body_after_the_last_is_refused(h1):
    data = raw_exchange(h1, request_bytes("/trailers/late"))
    assert b"hello, " in data and b"world" not in data
    h1.wait_for_log("Expected ASGI message 'http.response.trailers'")


# -- HTTP/1.1 early hints ---------------------------------------------------------------


def test_http11_early_hints(h1):
    with h1.client() as client:
        client.send(request_bytes("/hints", te=False))
        interim, response = client.read_final_response()
    assert [(r.status, r.reason) for r in interim] == [(103, "Early Hints")] * 2
    assert [r.header_list("link") for r in interim] == [
        [link.decode() for link in LINKS],
        [LATE_LINK.decode()],
    ]
    assert (response.status, response.body) == (200, BODY)


def test_http11_no_early_hints_to_http10(h1):
    data = raw_exchange(h1, request_bytes("/hints", version="1.0"))
    assert data.startswith(b"HTTP/1.1 200 ") and b"103" not in data


def test_http11_a_hint_after_the_head_is_ignored(h1):
    data = raw_exchange(h1, request_bytes("/hints/late"))
    assert data.startswith(b"HTTP/1.1 200 ") and b"103" not in data


def test_curl_prints_early_hints(h1):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (scripts/test installs it)")
    result = subprocess.run(
        [curl, "-sS", "-i", h1.url("/hints")],
        capture_output=True, timeout=TOOL_SECONDS, env=tool_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.stdout.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>")


@pytest.mark.parametrize(
    "request_line",
    [
        request_bytes("/trailers"),
        request_bytes("/trailers/one"),
        request_bytes("/trailers/empty"),
        request_bytes("/trailers", te=False),
        request_bytes("/trailers/length"),
        request_bytes("/trailers", version="1.0"),
        request_bytes("/trailers", method="HEAD"),
        request_bytes("/trailers/none"),
        request_bytes("/hints"),
        request_bytes("/hints/late"),
    ],
)
def test_http11_modes_send_the_same_bytes(servers, request_line):
    """The C mode and the pure mode: the same bytes on the wire, but for the Date."""
    c_result, python_result = (
        split_response(raw_exchange(servers.get(APP, mode), request_line)) for mode in MODES
    )
    assert c_result == python_result


def test_http11_pipelined_trailers_and_hints(servers):
    """Pipelined responses (the C mode holds them back and writes them together):
    each trailer section and 103 head in its place, the same bytes in both modes."""
    pipelined = request_bytes("/trailers").replace(b"Connection: close\r\n", b"") * 3
    pipelined += request_bytes("/hints")
    c_data, python_data = (
        re.sub(rb"date: [^\r]*", b"", raw_exchange(servers.get(APP, mode), pipelined))
        for mode in MODES
    )
    assert c_data == python_data
    assert c_data.count(b"0\r\n" + TRAILER_LINES + b"\r\n") == 3
    assert c_data.count(b"HTTP/1.1 103 Early Hints\r\n") == 2


def test_curl_prints_http2_trailers(h2_server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (scripts/test installs it)")
    result = subprocess.run(
        [curl, "-sS", "-i", "--http2-prior-knowledge", "-H", "TE: trailers",
         h2_server.url("/trailers")],
        capture_output=True, timeout=TOOL_SECONDS, env=tool_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result
    out = result.stdout
    assert BODY in out and out.endswith(b"x-checksum: abc123\r\nx-count: 2\r\n"), out


# -- the shared rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "accepted"),
    [
        ([b"trailers"], True),
        ([b"gzip, Trailers;q=1"], True),
        ([b"gzip", b"trailers"], True),
        ([b"gzip"], False),
        ([b"trailersx"], False),
        ([], False),
    ],
)
def test_accepts_trailers(values, accepted):
    assert fr.accepts_trailers([(b"te", value) for value in values]) is accepted


def test_trailer_mode():
    te = [(b"te", b"trailers")]
    assert fr.trailer_mode(te, 200, -1, False, False) == fr.TRAILERS_SENT
    assert fr.trailer_mode([], 200, -1, False, False) == fr.TRAILERS_DROPPED
    assert fr.trailer_mode(te, 200, 5, False, False) == fr.TRAILERS_DROPPED  # Content-Length
    assert fr.trailer_mode(te, 200, -1, True, False) == fr.TRAILERS_DROPPED  # HTTP/1.0
    assert fr.trailer_mode(te, 200, -1, False, True) == fr.TRAILERS_DROPPED  # HEAD
    assert fr.trailer_mode(te, 304, -1, False, False) == fr.TRAILERS_DROPPED
    assert fr.http2_trailer_mode(te) == fr.TRAILERS_SENT
    assert fr.http2_trailer_mode([]) == fr.TRAILERS_DROPPED


@pytest.mark.parametrize(
    "field",
    [(b":status", b"200"), (b"Content-Length", b"1"), (b"TE", b"trailers"), (b"x", b"a\nb"),
     (b"x", "text"), (b"x",)],
)  # fmt: skip
def test_trailer_fields_refused(field):
    with pytest.raises(ASGIMessageError, match="http.response.trailers"):
        trailer_fields([field])


def test_trailer_and_link_fields():
    assert trailer_fields([(b"X-Sum", b"1")]) == [(b"x-sum", b"1")]
    assert link_fields(LINKS) == [(b"link", link) for link in LINKS]
    for bad in ([b""], [b"a\r\nb"], ["</a>"]):
        with pytest.raises(ASGIMessageError, match="http.response.early_hint"):
            link_fields(bad)
