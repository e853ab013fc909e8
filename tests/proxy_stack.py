"""What the proxy trust tests through a real Nginx and a real HAProxy share: the
headers a client spoofs, fastserve started as an upstream, a scope fetched through
the proxy, and HAProxy with the shipped examples/haproxy.cfg in front of fastserve
(`haproxy_in_front`: tests/test_haproxy.py, and tests/test_http2_interop.py with an
HTTP/2 backend)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
from pathlib import Path
from typing import Optional

import httpx
import pytest

from process_util import ServerProcess, free_port, start_listener


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6_loopback()
SCOPE_APP = "tests.apps_process:app"
STYLES = ("x-forwarded", "forwarded")
UPSTREAMS = ("tcp", "uds")
HTTP_MODES = ("c", "python")
# Every header a client could send to claim another address or scheme.
SPOOFED = [
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("Forwarded", 'for="[2001:db8::6]";proto=https, for=6.6.6.6'),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Real-IP", "6.6.6.6"),
]
# A loopback address outside the default --forwarded-allow-ips: a client that is no proxy.
UNTRUSTED_CLIENT = "127.0.0.5"


def start_fastserve(prefix: Path, upstream: str, mode: str, *flags: str) -> ServerProcess:
    """fastserve serving SCOPE_APP on a unix socket in `prefix` ("uds") or on loopback
    TCP ("tcp"), ready."""
    flags = (*flags, "--no-access-log")
    if upstream == "uds":
        return ServerProcess.http(SCOPE_APP, mode, flags, uds=str(prefix / "fastserve.sock"))
    return ServerProcess.http(SCOPE_APP, mode, flags)


def scope_through(url: str, headers=(), local_address: Optional[str] = None, **kwargs) -> dict:
    transport = httpx.HTTPTransport(local_address=local_address, **kwargs)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(url + "/scope", headers=list(headers))
    assert response.status_code == 200, response.text
    return response.json()


# The shipped example's fixture params: each header style, upstream and HTTP mode.
SHIPPED_PARAMS = [
    pytest.param(
        (style, upstream, mode), id=f"{style}-{upstream}-{mode}", marks=getattr(pytest.mark, mode)
    )
    for style in STYLES
    for upstream in UPSTREAMS
    for mode in HTTP_MODES
]
# No header, each spoofed header alone, all of them together.
SPOOF_CASES = [[], *([one] for one in SPOOFED), SPOOFED]


def assert_spoofing_changes_nothing(urls: dict, spoofed: list) -> None:
    """From 127.0.0.1, an address fastserve trusts, through a proxy that overwrites
    every header: the scope has the real client and scheme, over plain HTTP and TLS."""
    scope = scope_through(urls["url"], spoofed)
    assert (scope["client"], scope["scheme"]) == (["127.0.0.1", 0], "http")
    spoofed = [(name, value.replace("https", "http")) for name, value in spoofed]
    context = ssl.create_default_context(cafile=urls["ca"])
    scope = scope_through(urls["tls_url"], spoofed, verify=context)
    assert (scope["client"], scope["scheme"]) == (["127.0.0.1", 0], "https")


def assert_ipv6_client_comes_through(urls: dict) -> None:
    scope = scope_through(urls["ipv6_url"], SPOOFED)
    assert (scope["client"], scope["scheme"]) == (["::1", 0], "http")


# -- HAProxy ---------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "haproxy.cfg"


def haproxy_config(upstream: str, port: int, tls_port: int, pem: Path, tls_bind: str = "") -> str:
    """examples/haproxy.cfg with this test's upstream (`server ...`), ports (the same
    on 127.0.0.1 and ::1) and certificate; `tls_bind`: more options of the TLS bind
    line (`alpn h2,http/1.1`)."""
    text = HAPROXY_EXAMPLE.read_text()
    listen = f"bind 127.0.0.1:{port}"
    if HAS_IPV6:
        listen += f"\n    bind [::1]:{port}"
    replacements = {
        "server app1 /run/fastserve/app.sock": upstream,
        "bind :80": listen,
        "# bind :443 ssl crt /etc/haproxy/certs/example.pem": (
            f"bind 127.0.0.1:{tls_port} ssl crt {pem} {tls_bind}".rstrip()
        ),
    }
    for old, new in replacements.items():
        assert old in text, f"examples/haproxy.cfg changed: {old!r} is gone"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def haproxy_in_front(
    prefix: Path, upstream: str, mode: str, flags=(), server_options: str = "", tls_bind: str = ""
):
    """fastserve (`start_fastserve` with `flags`) behind HAProxy, the shipped config
    with `server_options` on its server line (`proto h2`) and `tls_bind` on its TLS
    bind line; yields the URLs: url, ipv6_url, tls_url, and ca (the CA file of the TLS
    listener's certificate)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(prefix / "ca.pem")
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(prefix / "site.pem")
    server = start_fastserve(prefix, upstream, mode, *flags)
    line = f"server app1 {server.uds or f'127.0.0.1:{server.port}'} {server_options}".rstrip()
    haproxy = None
    try:
        port, tls_port = free_port(), free_port()
        conf = prefix / "haproxy.cfg"
        conf.write_text(haproxy_config(line, port, tls_port, prefix / "site.pem", tls_bind))
        haproxy = start_listener([HAPROXY, "-db", "-f", str(conf)], port, "haproxy")
        yield {
            "url": f"http://127.0.0.1:{port}",
            "ipv6_url": f"http://[::1]:{port}",
            "tls_url": f"https://127.0.0.1:{tls_port}",
            "ca": str(prefix / "ca.pem"),
        }
    finally:
        if haproxy is not None:
            haproxy.cleanup()
        server.cleanup()
