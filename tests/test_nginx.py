"""Nginx in front of fastserve over a unix socket: proxy headers, keep-alive upstream,
a large upload and a streamed download, with a real nginx (the Debian package).
And proxy trust that a client cannot spoof: the shipped example in front of fastserve
in both --proxy-headers-style values, both HTTP modes, TCP and unix-socket upstreams;
and a FastAPI app mounted below a prefix that Nginx strips (--root-path), both modes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
from pathlib import Path
from typing import Optional

import httpx
import pytest
from websockets.sync.client import connect

from apps_process import download_chunk
from process_util import ServerProcess, free_port, start_listener
from proxy_stack import (
    HAS_IPV6,
    HTTP_MODES,
    SHIPPED_PARAMS,
    SPOOF_CASES,
    SPOOFED,
    UNTRUSTED_CLIENT,
    UPSTREAMS,
    assert_ipv6_client_comes_through,
    assert_spoofing_changes_nothing,
    scope_through,
    start_fastserve,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not os.access(NGINX, os.X_OK), reason="nginx is not installed (apt-get install nginx)"
    ),
]


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nginx.conf"

# The documented config (examples/nginx.conf) inside a throwaway main config.
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def site_config(upstream: str, port: int, tls_port: int, cert, key) -> str:
    """examples/nginx.conf with this test's upstream (`server ...;`), ports (the same
    on 127.0.0.1 and ::1) and certificate."""
    text = EXAMPLE.read_text()
    replacements = {
        "server unix:/run/fastserve/app.sock;": upstream,
        "listen 80;": f"listen 127.0.0.1:{port};",
        "listen [::]:80;": f"listen [::1]:{port};" if HAS_IPV6 else "",
        "# listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "# ssl_certificate     /etc/ssl/certs/example.pem;": f"ssl_certificate {cert};",
        "# ssl_certificate_key /etc/ssl/private/example.key;": f"ssl_certificate_key {key};",
    }
    for old, new in replacements.items():
        assert old in text, f"examples/nginx.conf changed: {old!r} is gone"
        text = text.replace(old, new)
    return text


def write_certificate(prefix: Path) -> None:
    """cert.pem and key.pem for 127.0.0.1 in `prefix`, and the CA that issued them, ca.pem."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(prefix / "cert.pem")
    cert.private_key_pem.write_to_path(prefix / "key.pem")
    ca.cert_pem.write_to_path(prefix / "ca.pem")


def run_nginx(prefix: Path, site: str, port: int) -> ServerProcess:
    """nginx serving `site` (the body of an `http { ... }` block) that listens on
    `port`, its files in `prefix`."""
    site_file = prefix / "site.conf"
    site_file.write_text(site)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, site=site_file))
    return start_listener(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        port,
        "nginx",
        log_file=prefix / "error.log",
    )


def start_nginx(prefix: Path, upstream: str, edits: Optional[dict] = None):
    """examples/nginx.conf in front of `upstream` (a `server ...;` line), with `edits`
    (old text -> new) made to it: the nginx process and its URLs."""
    write_certificate(prefix)
    port, tls_port = free_port(), free_port()
    text = site_config(upstream, port, tls_port, prefix / "cert.pem", prefix / "key.pem")
    for old, new in (edits or {}).items():
        assert old in text, f"examples/nginx.conf changed: {old!r} is gone"
        text = text.replace(old, new)
    nginx = run_nginx(prefix, text, port)
    urls = {
        "url": f"http://127.0.0.1:{port}",
        "ipv6_url": f"http://[::1]:{port}",
        "tls_url": f"https://127.0.0.1:{tls_port}",
        "ca": str(prefix / "ca.pem"),
    }
    return nginx, urls


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nginx")
    sock = prefix / "fastserve.sock"
    server = ServerProcess.fastserve(
        "tests.apps_process:app", "--uds", str(sock), "--no-access-log"
    )
    nginx = None
    try:
        server.wait_for_log("Fastserve running on unix socket")
        nginx, urls = start_nginx(prefix, f"server unix:{sock};")
        yield {**urls, "server": server, "sock": str(sock), "prefix": prefix}
    finally:
        if nginx is not None:
            nginx.cleanup()
        server.cleanup()


def upstream_connections(pid: int, path: str) -> set[str]:
    """Inodes of the accepted (not listening) unix-socket connections on `path` held by `pid`."""
    accepted = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and not int(fields[3], 16) & 0x10000:
                accepted.add(f"socket:[{fields[6]}]")
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return accepted & held


def test_client_address_and_scheme_come_through_the_proxy_headers(stack):
    scope = httpx.get(stack["url"] + "/scope", timeout=10).json()
    # Without the headers a unix-socket peer has no address at all.
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"
    scope = httpx.get(
        stack["tls_url"] + "/scope",
        verify=ssl.create_default_context(cafile=stack["ca"]),
        timeout=10,
    ).json()
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "https"


def test_upstream_keep_alive_reuses_one_connection(stack):
    server_pid = stack["server"].pid
    seen = []
    for _ in range(10):
        response = httpx.get(stack["url"] + "/", headers={"connection": "close"}, timeout=10)
        assert response.status_code == 200
        seen.append(upstream_connections(server_pid, stack["sock"]))
    # nginx keeps its upstream connection open, and every request travels over it.
    assert all(len(s) == 1 for s in seen), seen
    assert len(set().union(*seen)) == 1, seen


def test_large_upload_passes_intact(stack):
    body = os.urandom(24 * 1024 * 1024)
    response = httpx.post(stack["url"] + "/upload", content=body, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_upload_passes_intact(stack):
    chunks = [os.urandom(256 * 1024) for _ in range(32)]
    response = httpx.post(stack["url"] + "/upload", content=iter(chunks), timeout=60)
    body = b"".join(chunks)
    assert response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_streamed_download_passes_intact(stack):
    megabytes = 24
    expected = hashlib.sha256()
    for index in range(megabytes * 16):
        expected.update(download_chunk(index))
    digest = hashlib.sha256()
    size = 0
    with httpx.stream("GET", stack["url"] + f"/download?mb={megabytes}", timeout=60) as response:
        assert response.status_code == 200
        for data in response.iter_raw():
            digest.update(data)
            size += len(data)
    assert size == megabytes * 1024 * 1024
    assert digest.hexdigest() == expected.hexdigest()


# -- proxy trust a client cannot spoof ------------------------------------------------

# The set-up of issue 18: Nginx appends to X-Forwarded-For and passes the client's own
# Forwarded and X-Real-IP through untouched.
APPENDING_PROXY = {
    "proxy_set_header X-Forwarded-For $remote_addr;": (
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    ),
    'proxy_set_header Forwarded "for=$forwarded_for_node;proto=$scheme";': "",
    "proxy_set_header X-Real-IP $remote_addr;": "",
}


@contextlib.contextmanager
def proxied(prefix: Path, upstream: str, mode: str, flags=(), edits=None):
    server = start_fastserve(prefix, upstream, mode, *flags)
    line = f"server unix:{server.uds};" if server.uds else f"server 127.0.0.1:{server.port};"
    nginx = None
    try:
        nginx, urls = start_nginx(prefix, line, edits)
        yield urls
    finally:
        if nginx is not None:
            nginx.cleanup()
        server.cleanup()


@pytest.fixture(
    scope="module",
    params=SHIPPED_PARAMS,
)
def shipped(request, tmp_path_factory):
    """The shipped example in front of fastserve with --proxy-headers-style `style`."""
    style, upstream, mode = request.param
    prefix = tmp_path_factory.mktemp(f"nginx-{style}-{upstream}-{mode}")
    with proxied(prefix, upstream, mode, ("--proxy-headers-style", style)) as urls:
        yield urls


@pytest.mark.parametrize("spoofed", SPOOF_CASES, ids=str)
def test_a_client_cannot_change_its_address_or_scheme(shipped, spoofed):
    assert_spoofing_changes_nothing(shipped, spoofed)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_an_ipv6_client_comes_through(shipped):
    assert_ipv6_client_comes_through(shipped)


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_an_appending_proxy_yields_the_real_client(tmp_path, upstream, mode):
    """Safe either way: behind an Nginx that appends to the client's X-Forwarded-For,
    the default style takes the right-most untrusted hop, and ignores `Forwarded`."""
    with proxied(tmp_path, upstream, mode, edits=APPENDING_PROXY) as urls:
        for headers in ([], SPOOFED):
            scope = scope_through(urls["url"], headers, local_address=UNTRUSTED_CLIENT)
            assert (scope["client"], scope["scheme"]) == ([UNTRUSTED_CLIENT, 0], "http")


# -- an app below a prefix: --root-path ------------------------------------------------

ROOT_PATH = "/api"

# Nginx mounts the app at /api/ and strips the prefix: /api/items/ reaches the app as
# /items/; fastserve's --root-path /api puts it back into the scope.
PREFIX_SITE = """
upstream fastserve {{ server unix:{sock}; keepalive 8; }}
map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
server {{
    listen 127.0.0.1:{port};
    location /api/ {{
        proxy_pass http://fastserve/;
        proxy_http_version 1.1;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Host $http_host;
    }}
}}
"""


@pytest.fixture(
    scope="module",
    params=[pytest.param(mode, marks=getattr(pytest.mark, mode)) for mode in HTTP_MODES],
)
def mounted(request, tmp_path_factory):
    """fastserve (--http MODE) running tests/apps_fastapi.py with --root-path /api,
    behind Nginx's `location /api/ { proxy_pass http://upstream/; }`."""
    prefix = tmp_path_factory.mktemp("nginx-prefix")
    sock = prefix / "fastserve.sock"
    server = ServerProcess.http(
        "tests.apps_fastapi:app", request.param, ["--root-path", ROOT_PATH], uds=str(sock)
    )
    nginx = None
    try:
        port = free_port()
        nginx = run_nginx(prefix, PREFIX_SITE.format(sock=sock, port=port), port)
        yield {"url": f"http://127.0.0.1:{port}", "sock": str(sock)}
    finally:
        if nginx is not None:
            nginx.cleanup()
        server.cleanup()


def test_a_mounted_app_sees_its_prefix_in_its_urls(mounted):
    url = mounted["url"]
    seen = httpx.get(url + "/api/items/", timeout=10).json()
    assert seen["url"] == url + "/api/items/"
    assert seen["url_for"] == url + "/api/items/7"
    assert (seen["root_path"], seen["path"], seen["raw_path"]) == (
        ROOT_PATH,
        "/api/items/",
        "/api/items/",
    )
    assert httpx.get(url + "/api/items/7", timeout=10).json() == {"item": 7}


def test_redirects_of_a_mounted_app_keep_the_prefix(mounted):
    url = mounted["url"]
    slash = httpx.get(url + "/api/items", timeout=10)  # FastAPI adds the trailing slash
    assert slash.status_code == 307, slash
    assert slash.headers["location"] == url + "/api/items/"
    go = httpx.get(url + "/api/go", timeout=10)  # RedirectResponse(request.url_for(...))
    assert go.status_code == 307, go
    assert go.headers["location"] == url + "/api/items/7"
    assert httpx.get(url + "/api/go", follow_redirects=True, timeout=10).json() == {"item": 7}


def test_a_mounted_app_answers_only_below_its_prefix(mounted):
    """Upstream, the path a proxy sends (prefix stripped) is served, and the prefixed
    one is not: it is /api/api/... to the app."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=mounted["sock"]), timeout=10) as client:
        assert client.get("http://fastserve/items/7").json() == {"item": 7}
        assert client.get("http://fastserve/api/items/7").status_code == 404
    assert httpx.get(mounted["url"] + "/api/api/items/7", timeout=10).status_code == 404


def test_a_mounted_websocket_sees_its_prefix(mounted):
    ws_url = mounted["url"].replace("http://", "ws://") + "/api/ws"
    with connect(ws_url, open_timeout=10) as websocket:
        seen = json.loads(websocket.recv(timeout=10))
    assert seen == {"url": ws_url, "path": "/api/ws"}
