"""Connection facts every protocol needs, read once at connection_made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

Address = Optional[tuple[str, int]]

# (client, server) that a PROXY protocol header gave, by transport: set only while
# the HTTP protocol's connection_made reads them (protocols/proxy_protocol.py), so
# both modes take them here, where they take the socket's addresses otherwise.
_header_addresses: dict = {}


@contextmanager
def addresses_from_header(transport, client: Address, server: Address) -> Iterator[None]:
    _header_addresses[transport] = (client, server)
    try:
        yield
    finally:
        del _header_addresses[transport]


def get_remote_addr(transport) -> Address:
    """The client address of a TCP connection, or None for a unix socket."""
    if _header_addresses and transport in _header_addresses:
        return _header_addresses[transport][0]
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (list, tuple)) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


def get_local_addr(transport) -> Address:
    """The server address of a TCP connection, or None for a unix socket."""
    if _header_addresses and transport in _header_addresses:
        return _header_addresses[transport][1]
    local = transport.get_extra_info("sockname")
    if isinstance(local, (list, tuple)) and len(local) >= 2:
        return (str(local[0]), int(local[1]))
    return None


def is_ssl(transport) -> bool:
    return transport.get_extra_info("sslcontext") is not None
