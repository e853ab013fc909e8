"""HAProxy in front of fastserve with the shipped examples/haproxy.cfg: a client's own
Forwarded, X-Forwarded-For, X-Forwarded-Proto and X-Real-IP never change the scope's
client or scheme, with either --proxy-headers-style, in both HTTP modes, over TCP and
unix-socket upstreams; over TLS the scheme is https. A real haproxy (the Debian package)."""

from __future__ import annotations

import os

import pytest

from proxy_stack import (
    HAPROXY,
    HAS_IPV6,
    SHIPPED_PARAMS,
    SPOOF_CASES,
    assert_ipv6_client_comes_through,
    assert_spoofing_changes_nothing,
    haproxy_in_front,
)

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed (apt-get install haproxy)"
    ),
]


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
