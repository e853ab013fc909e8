"""A WSGI app under the operations features an ASGI app has: the access log and the
metrics count its requests, the PROXY protocol gives its REMOTE_ADDR, --reload
serves its new code. (tests/test_wsgi.py: PEP 3333 itself.)"""

from __future__ import annotations

import os
import socket
import sys

import httpx
import pytest

from process_util import ServerProcess, free_port, inotify_watched_inodes, wait_until

pytestmark = pytest.mark.timeout(60)

WSGI_APP = "tests.apps_wsgi:app"
WSGI = ("--interface", "wsgi")
# A PROXY v1 header from a trusted peer (127.0.0.1 is in the default
# --forwarded-allow-ips): the client it names is the request's.
PROXIED_CLIENT = ("203.0.113.7", 51234)
PROXY_V1 = b"PROXY TCP4 %s 198.51.100.1 %d 8080\r\n" % (
    PROXIED_CLIENT[0].encode(),
    PROXIED_CLIENT[1],
)
RELOAD_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version={version}"]
"""


def requests_total(metrics_port: int) -> dict[tuple[str, str], float]:
    """fastserve_requests_total by (method, code), from the metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    totals = {}
    for line in text.splitlines():
        if line.startswith("fastserve_requests_total{"):
            labels, value = line[len("fastserve_requests_total{") :].split("} ")
            pairs = dict(pair.split("=") for pair in labels.split(","))
            totals[(pairs["method"].strip('"'), pairs["code"].strip('"'))] = float(value)
    return totals


def test_access_log_and_metrics_count_wsgi_requests(start_server, mode):
    metrics_port = free_port()
    server = start_server(
        WSGI_APP, mode, *WSGI, "--access-log", "--metrics-port", str(metrics_port)
    )
    with server.client() as client:
        assert client.request("GET", "/environ?x=1", [("Host", "x")]).status == 200
        assert client.request("GET", "/fail", [("Host", "x")]).status == 500
    server.wait_for_log(r'"GET /environ\?x=1 HTTP/1\.1" 200')
    server.wait_for_log(r'"GET /fail HTTP/1\.1" 500')
    totals = requests_total(metrics_port)
    assert (totals[("GET", "200")], totals[("GET", "500")]) == (1, 1)
    assert server.stop() == 0


def test_proxy_protocol_gives_remote_addr(start_server, mode):
    server = start_server(WSGI_APP, mode, *WSGI, "--proxy-protocol", "auto")
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(PROXY_V1)
        environ = client.request("GET", "/environ", [("Host", "x")]).json()
    assert (environ["REMOTE_ADDR"][0], environ["REMOTE_PORT"][0]) == (
        PROXIED_CLIENT[0],
        str(PROXIED_CLIENT[1]),
    )
    assert server.stop() == 0


def served_version(url: str) -> str:
    try:
        return httpx.get(url, timeout=5).text
    except httpx.HTTPError as exc:  # the server may be restarting
        return repr(exc)


def test_reload_serves_the_new_wsgi_app(tmp_path):
    pytest.importorskip("watchfiles")  # (the inotify watch waited for is its)
    (tmp_path / "wsgi_reload_app.py").write_text(RELOAD_APP.format(version=1))
    args = ["wsgi_reload_app:app", *WSGI, "--port", "0", "--reload"]
    args += ["--reload-dir", str(tmp_path), "--reload-delay", "0.1"]
    server = ServerProcess([sys.executable, "-m", "fastserve", *args], cwd=tmp_path)
    try:
        server.wait_ready()
        wait_until(lambda: served_version(server.url()) == "version=1", 15)
        inode = os.stat(tmp_path).st_ino  # the reloader's inotify watch on it exists
        wait_until(lambda: inode in inotify_watched_inodes(server.pid), 15)
        new = tmp_path / ".wsgi_reload_app.py.new"  # (a dotfile: not watched)
        new.write_text(RELOAD_APP.format(version=2))
        os.replace(new, tmp_path / "wsgi_reload_app.py")
        wait_until(lambda: served_version(server.url()) == "version=2", 15, interval=0.2)
        assert "WSGI" in server.log()
    finally:
        server.cleanup()
