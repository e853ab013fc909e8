"""HTTP/2 (--http2) with other implementations, both modes: nghttp (nghttp2's client,
Debian's nghttp2-client) over h2c prior knowledge and over TLS (ALPN), and HAProxy in
front of fastserve speaking HTTP/2 to it (`server ... proto h2`, h2c), its clients
speaking HTTP/1.1 or HTTP/2: requests with bodies and streamed responses go through,
the stream at fastserve is HTTP/2 (the app's scope says so), and HAProxy's
X-Forwarded-* headers are believed as over HTTP/1.1 (--forwarded-allow-ips)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl

import httpx
import pytest

from apps_process import CHUNK, download_chunk
from proxy_stack import (
    HAPROXY,
    HTTP_MODES,
    SPOOFED,
    UNTRUSTED_CLIENT,
    UPSTREAMS,
    assert_spoofing_changes_nothing,
    haproxy_in_front,
)
from test_http2 import APP, run_tool, tool

pytestmark = pytest.mark.timeout(120)

# Past the server's 1 MiB stream window: the upload needs its WINDOW_UPDATEs.
UPLOAD_SIZE = 3 << 20
DOWNLOAD_MB = 4
CONCURRENT = 10  # nghttp -m: requests on one connection, all in the app at once
_STATUS = re.compile(r"recv \(stream_id=(\d+)\) :status: (\d+)")
_STATS_HEADER = "***** Statistics *****"
# A row of nghttp -s's table: id, responseEnd, requestStart, process, code, size, path.
_STATS_ROW = re.compile(r"^\s*(\d+)\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+(\d+)\s+(\S+)$", re.M)


def upload_body() -> bytes:
    return bytes(range(256)) * (UPLOAD_SIZE // 256)


def nghttp(*args: str) -> tuple[str, list[int]]:
    """`nghttp -s ARGS`: the response bodies as it printed them, and each response's
    status (its statistics table)."""
    result = run_tool(tool("nghttp"), "-s", *args)
    assert result.returncode == 0, result
    assert _STATS_HEADER in result.stdout, result
    bodies, stats = result.stdout.split(_STATS_HEADER, 1)
    return bodies, [int(code) for _, code, _, _ in _STATS_ROW.findall(stats)]


def json_objects(text: str) -> list:
    """The JSON objects printed back to back in `text`."""
    decoder, objects, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)
    return objects


# -- nghttp ---------------------------------------------------------------------------


@pytest.fixture
def h2_server(servers, mode):
    return servers.get(APP, mode, "--http2")


def test_nghttp_prior_knowledge_get(h2_server):
    """-v: the frames nghttp saw; the server's SETTINGS come first, then the answer."""
    result = run_tool(tool("nghttp"), "-v", h2_server.url("/_/hello"))
    assert result.returncode == 0, result
    out = result.stdout
    assert "recv SETTINGS frame" in out and "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in out
    assert [status for _, status in _STATUS.findall(out)] == ["200"], out
    assert "Hello, world!" in out
    assert "[ERROR]" not in out + result.stderr, result


def test_nghttp_runs_concurrent_requests_on_one_connection(h2_server, token):
    url = h2_server.url(f"/h2/barrier?n={CONCURRENT}&token={token}")
    bodies, statuses = nghttp("-m", str(CONCURRENT), url)
    assert statuses == [200] * CONCURRENT
    answers = json_objects(bodies)
    assert len(answers) == CONCURRENT
    assert {answer["http_version"] for answer in answers} == {"2"}
    assert len({tuple(answer["client"]) for answer in answers}) == 1, "more than one connection"


def test_nghttp_posts_a_file_past_the_stream_window(h2_server, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(upload_body())
    bodies, statuses = nghttp("-d", str(upload), h2_server.url("/_/upload"))
    assert statuses == [200]
    answer = json.loads(bodies)
    assert answer["length"] == UPLOAD_SIZE
    assert answer["sha256"] == hashlib.sha256(upload_body()).hexdigest()


def test_a_status_the_app_chose_reaches_nghttp(h2_server):
    bodies, statuses = nghttp(h2_server.url("/_/status?code=404"))
    assert statuses == [404]


def test_nghttp_over_tls_negotiates_h2_by_alpn(start_server, mode, tls_files, token):
    keyfile, certfile, _ = tls_files
    server = start_server(
        APP, mode, "--http2", "--ssl-keyfile", keyfile, "--ssl-certfile", certfile
    )
    # nghttp ends with "HTTP/2 protocol was not selected" when ALPN chose another
    bodies, statuses = nghttp(f"https://127.0.0.1:{server.port}/h2/barrier?n=1&token={token}")
    assert statuses == [200]
    (answer,) = json_objects(bodies)
    assert answer["http_version"] == "2"
    assert "tls" in answer["extensions"]


# -- HAProxy in front, HTTP/2 to fastserve ---------------------------------------------

haproxy_installed = pytest.mark.skipif(
    not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed (apt-get install haproxy)"
)
# What the clients of HAProxy speak: httpx's transport options.
CLIENTS = {"http1": {}, "http2": {"http1": False, "http2": True}}
CLIENT_VERSIONS = {"http1": "HTTP/1.1", "http2": "HTTP/2"}
# HAProxy's server line and TLS bind line: HTTP/2 to fastserve, h2 offered to clients.
H2_BACKEND = "proto h2"
H2_ALPN = "alpn h2,http/1.1"
# A --forwarded-allow-ips that leaves HAProxy (127.0.0.1) out.
NOT_HAPROXY = "192.0.2.1"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((upstream, mode), id=f"{upstream}-{mode}", marks=getattr(pytest.mark, mode))
        for upstream in UPSTREAMS
        for mode in HTTP_MODES
    ],
)
def h2_backend(request, tmp_path_factory):
    """HAProxy speaking HTTP/2 to fastserve --http2 (TCP or unix socket)."""
    upstream, mode = request.param
    prefix = tmp_path_factory.mktemp(f"haproxy-h2-{upstream}-{mode}")
    with haproxy_in_front(
        prefix, upstream, mode, ("--http2",), server_options=H2_BACKEND, tls_bind=H2_ALPN
    ) as urls:
        yield urls


@pytest.fixture(params=list(CLIENTS))
def client_version(request) -> str:
    return request.param


def through(url: str, version: str, method: str = "GET", **kwargs) -> httpx.Response:
    """One request to HAProxy by a client speaking `version` (CLIENTS)."""
    transport_options = {**CLIENTS[version], **kwargs.pop("transport", {})}
    transport = httpx.HTTPTransport(**transport_options)
    with httpx.Client(transport=transport, timeout=30) as client:
        response = client.request(method, url, **kwargs)
    assert response.status_code == 200, response.text
    assert response.http_version == CLIENT_VERSIONS[version]
    return response


@haproxy_installed
def test_a_request_reaches_fastserve_over_http2(h2_backend, client_version):
    scope = through(h2_backend["url"] + "/scope", client_version).json()
    assert scope["http_version"] == "2"
    # HAProxy's X-Forwarded-For, believed: the client's address, no port
    assert (scope["client"], scope["scheme"]) == (["127.0.0.1", 0], "http")


@haproxy_installed
def test_a_tls_client_negotiating_h2_reaches_fastserve_over_http2(h2_backend, client_version):
    context = ssl.create_default_context(cafile=h2_backend["ca"])
    response = through(
        h2_backend["tls_url"] + "/scope", client_version, transport={"verify": context}
    )
    scope = response.json()
    assert scope["http_version"] == "2"
    assert (scope["client"], scope["scheme"]) == (["127.0.0.1", 0], "https")


@haproxy_installed
def test_a_request_body_goes_through(h2_backend, client_version):
    body = upload_body()
    response = through(h2_backend["url"] + "/upload", client_version, "POST", content=body)
    assert response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@haproxy_installed
def test_a_streamed_response_goes_through(h2_backend, client_version):
    response = through(h2_backend["url"] + f"/download?mb={DOWNLOAD_MB}", client_version)
    chunks = DOWNLOAD_MB * 1024 * 1024 // CHUNK
    assert response.content == b"".join(download_chunk(index) for index in range(chunks))


@haproxy_installed
def test_the_address_haproxy_saw_is_believed(h2_backend, client_version):
    """A client HAProxy sees at another address: that is the scope's client."""
    transport = {"local_address": UNTRUSTED_CLIENT}
    scope = through(h2_backend["url"] + "/scope", client_version, transport=transport).json()
    assert scope["client"] == [UNTRUSTED_CLIENT, 0]


@haproxy_installed
def test_a_client_cannot_change_its_address_or_scheme(h2_backend):
    assert_spoofing_changes_nothing(h2_backend, SPOOFED)


@haproxy_installed
@pytest.mark.parametrize("mode", HTTP_MODES)
def test_an_untrusted_proxy_is_not_believed(tmp_path, mode):
    """--forwarded-allow-ips without HAProxy's address: its headers count for nothing,
    over HTTP/2 as over HTTP/1.1; the scope's client is HAProxy's own connection."""
    flags = ("--http2", "--forwarded-allow-ips", NOT_HAPROXY)
    with haproxy_in_front(
        tmp_path, "tcp", mode, flags, server_options=H2_BACKEND, tls_bind=H2_ALPN
    ) as urls:
        scope = through(urls["url"] + "/scope", "http2").json()
        context = ssl.create_default_context(cafile=urls["ca"])
        tls_scope = through(urls["tls_url"] + "/scope", "http2", transport={"verify": context})
    assert scope["http_version"] == "2"
    for seen in (scope, tls_scope.json()):
        host, port = seen["client"]
        assert host == "127.0.0.1" and port != 0, seen
        assert seen["scheme"] == "http", seen
