"""HTTP/2 where fastserve is deployed, both modes: under --workers, in Gunicorn's worker
(Gunicorn 25+'s `--http-protocols h2,h1`), behind a PROXY protocol header, and serving
a WSGI app (SERVER_PROTOCOL, HTTP_HOST from :authority, the same header rules as
HTTP/1.1). systemd's sockets: tests/test_systemd.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from h2_raw import RawH2, request_fields
from process_util import start_gunicorn, tool_environment

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps:app"
WSGI_APP = "tests.apps_wsgi:app"
TOOL_SECONDS = 30
# A PROXY protocol v1 header naming a client and the address it reached.
PROXY_CLIENT = ("203.0.113.7", 51234)
PROXY_HEADER = b"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"


def curl_h2(url: str) -> tuple[str, str]:
    """`curl --http2-prior-knowledge`: the body and the HTTP version it spoke."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (scripts/test installs it)")
    result = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}", url],
        capture_output=True, text=True, timeout=TOOL_SECONDS, env=tool_environment(),
    )  # fmt: skip
    assert result.returncode == 0, result
    body, _, version = result.stdout.rpartition("\n")
    return body, version


def scope_over_h2(client: RawH2, path: str = "/", extra=()) -> dict:
    """The echo app's view of one request on stream 1."""
    client.send(client.headers(1, [*request_fields(path), *extra]))
    status, body = client.response(1)
    assert status == 200, body
    return json.loads(body)


def test_workers_serve_http2(start_server, mode):
    server = start_server(APP, mode, "--http2", "--workers", "2")
    for _ in range(4):  # (new connections: either worker may take each)
        body, version = curl_h2(server.url("/"))
        assert version == "2" and json.loads(body)["http_version"] == "2"
    assert server.stop() == 0


def test_gunicorn_worker_with_http_protocols_h2():
    """Gunicorn 25+'s setting turns HTTP/2 on in fastserve's worker (h2c with prior
    knowledge: fastserve takes it on a plain port); HTTP/1.1 goes on beside it."""
    server = start_gunicorn(APP, "--http-protocols", "h2,h1")
    try:
        body, version = curl_h2(server.url("/"))
        assert version == "2" and json.loads(body)["http_version"] == "2"
        with server.client() as client:
            assert client.request("GET", "/", [("Host", "x")]).status == 200
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_a_proxy_protocol_header_before_the_preface(servers, mode):
    """The PROXY header's client is the streams' client, as for HTTP/1.1."""
    server = servers.get(APP, mode, "--http2", "--proxy-protocol", "v1")
    with RawH2(server.port, handshake=False) as client:
        client.send_raw(PROXY_HEADER)
        client.handshake()
        scope = scope_over_h2(client)
    assert (scope["http_version"], tuple(scope["client"])) == ("2", PROXY_CLIENT)


def test_wsgi_over_http2(servers, mode):
    """PEP 3333 over a stream: :authority is HTTP_HOST, --root-path SCRIPT_NAME, and
    a header spelled with an underscore is dropped, as over HTTP/1.1 (an h2 client
    cannot forge HTTP_* or CGI entries)."""
    server = servers.get(WSGI_APP, mode, "--interface", "wsgi", "--http2", "--root-path", "/api")
    forged = [(b"x-auth_user", b"forged"), (b"x-auth-user", b"vouched"),
              (b"script_name", b"/evil"), (b"content_length", b"7")]  # fmt: skip
    with RawH2(server.port) as client:
        environ = scope_over_h2(client, "/environ?a=1", forged)
    assert environ["SERVER_PROTOCOL"][0] == "HTTP/2.0"
    assert environ["HTTP_HOST"][0] == "h2.test"
    assert (environ["SCRIPT_NAME"][0], environ["PATH_INFO"][0]) == ("/api", "/environ")
    assert environ["QUERY_STRING"][0] == "a=1"
    assert environ["HTTP_X_AUTH_USER"][0] == "vouched"
    assert "HTTP_SCRIPT_NAME" not in environ and "CONTENT_LENGTH" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
