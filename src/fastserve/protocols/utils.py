"""Connection facts every protocol needs, read once at connection_made."""

from __future__ import annotations

from typing import Optional

Address = Optional[tuple[str, int]]


def get_remote_addr(transport) -> Address:
    """The client address of a TCP connection, or None for a unix socket."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (list, tuple)) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


def get_local_addr(transport) -> Address:
    """The server address of a TCP connection, or None for a unix socket."""
    local = transport.get_extra_info("sockname")
    if isinstance(local, (list, tuple)) and len(local) >= 2:
        return (str(local[0]), int(local[1]))
    return None


def is_ssl(transport) -> bool:
    return transport.get_extra_info("sslcontext") is not None
