"""Proxy trust: which peers may set X-Forwarded-For / X-Forwarded-Proto, and how
a scope takes `client` and `scheme` from them (HTTP and WebSocket scopes alike)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Optional, Union

# Trust answers cached per peer address; the cache is emptied when it holds this many.
TRUST_CACHE_SIZE = 1024


class ProxyTrust:
    """`forwarded_allow_ips` is a comma-separated string or a list of IP addresses,
    CIDR networks, or `*` for everyone. A peer on a unix socket (no address) is
    trusted: only a local process with access to the socket file can be one, and
    that is how Nginx sits in front of fastserve.
    """

    def __init__(self, forwarded_allow_ips: Union[str, Iterable[str]]) -> None:
        if isinstance(forwarded_allow_ips, str):
            items = [item.strip() for item in forwarded_allow_ips.split(",")]
        else:
            items = [str(item).strip() for item in forwarded_allow_ips]
        self.always = "*" in items
        self.networks = []
        self.literals = set()
        for item in items:
            if not item or item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)
        # Parsing an address costs more than the rest of a request, and peers repeat.
        self._answers: dict[Optional[str], bool] = {}

    def is_trusted(self, host: Optional[str]) -> bool:
        answer = self._answers.get(host)
        if answer is None:
            if len(self._answers) >= TRUST_CACHE_SIZE:
                self._answers.clear()
            answer = self._answers[host] = self._is_trusted(host)
        return answer

    def _is_trusted(self, host: Optional[str]) -> bool:
        if self.always or host is None or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_from_forwarded_for(self, value: str) -> Optional[str]:
        """The client in an X-Forwarded-For chain: the rightmost untrusted hop."""
        hops = [hop.strip() for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else None


def apply_proxy_headers(scope: dict, trust: ProxyTrust) -> None:
    """Take `client` and `scheme` from X-Forwarded-* when the peer is trusted."""
    forwarded_proto = forwarded_for = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            forwarded_proto = value
        elif name == b"x-forwarded-for":
            forwarded_for = value
    if forwarded_proto is None and forwarded_for is None:
        return
    client = scope.get("client")
    if not trust.is_trusted(client[0] if client else None):
        return
    if forwarded_proto is not None:
        proto = forwarded_proto.decode("latin-1").split(",")[-1].strip().lower()
        if proto in ("http", "https", "ws", "wss"):
            secure = proto in ("https", "wss")
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"
    if forwarded_for is not None:
        host = trust.client_from_forwarded_for(forwarded_for.decode("latin-1"))
        if host:
            scope["client"] = (host, 0)
