"""HAProxy in front of fastserve with the shipped examples/haproxy.cfg: a client's own
Forwarded, X-Forwarded-For, X-Forwarded-Proto and X-Real-IP never change the scope's
client or scheme, with either --proxy-headers-style, in both HTTP modes, over TCP and
unix-socket upstreams; over TLS the scheme is https. A real haproxy (the Debian package)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from process_util import free_port, start_listener
from proxy_stack import (
    HAS_IPV6,
    SHIPPED_PARAMS,
    SPOOF_CASES,
    assert_ipv6_client_comes_through,
    assert_spoofing_changes_nothing,
    start_fastserve,
)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed (apt-get install haproxy)"
    ),
]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "haproxy.cfg"


def haproxy_config(upstream: str, port: int, tls_port: int, pem: Path) -> str:
    """examples/haproxy.cfg with this test's upstream (`server ...`), ports (the same
    on 127.0.0.1 and ::1) and certificate."""
    text = EXAMPLE.read_text()
    listen = f"bind 127.0.0.1:{port}"
    if HAS_IPV6:
        listen += f"\n    bind [::1]:{port}"
    replacements = {
        "server app1 /run/fastserve/app.sock": upstream,
        "bind :80": listen,
        "# bind :443 ssl crt /etc/haproxy/certs/example.pem": (
            f"bind 127.0.0.1:{tls_port} ssl crt {pem}"
        ),
    }
    for old, new in replacements.items():
        assert old in text, f"examples/haproxy.cfg changed: {old!r} is gone"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def haproxy_in_front(prefix: Path, upstream: str, mode: str, flags=()):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(prefix / "ca.pem")
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(prefix / "site.pem")
    server = start_fastserve(prefix, upstream, mode, *flags)
    line = f"server app1 {server.uds or f'127.0.0.1:{server.port}'}"
    haproxy = None
    try:
        port, tls_port = free_port(), free_port()
        conf = prefix / "haproxy.cfg"
        conf.write_text(haproxy_config(line, port, tls_port, prefix / "site.pem"))
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


@pytest.fixture(
    scope="module",
    params=SHIPPED_PARAMS,
)
def shipped(request, tmp_path_factory):
    """The shipped example in front of fastserve with --proxy-headers-style `style`."""
    style, upstream, mode = request.param
    prefix = tmp_path_factory.mktemp(f"haproxy-{style}-{upstream}-{mode}")
    with haproxy_in_front(prefix, upstream, mode, ("--proxy-headers-style", style)) as urls:
        yield urls


@pytest.mark.parametrize("spoofed", SPOOF_CASES, ids=str)
def test_a_client_cannot_change_its_address_or_scheme(shipped, spoofed):
    assert_spoofing_changes_nothing(shipped, spoofed)


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_an_ipv6_client_comes_through(shipped):
    assert_ipv6_client_comes_through(shipped)
