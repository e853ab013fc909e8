"""The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer
sends before the client's first byte to say whom the connection is from.

`parse_proxy_header` is sans-I/O: bytes in, a `ProxyHeader` (or "need more") out.
`ProxyHeaderReader` is the asyncio glue, put in front of the HTTP protocol by
`server.py` when --proxy-protocol is on: it reads the header of a trusted peer, then
hands the connection, with the bytes after the header, to the HTTP protocol, which
takes its `client` and `server` from `utils.get_remote_addr` / `get_local_addr`
as always (they answer with the header's addresses during that hand-over).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from dataclasses import dataclass
from typing import Callable, Optional

from fastserve.protocols.utils import Address, addresses_from_header, get_remote_addr

logger = logging.getLogger("fastserve.error")

V1_SIGNATURE = b"PROXY "
V1_MAX_LENGTH = 107  # the whole line, CRLF included (the specification's bound)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")  # signature, version+command, family+transport, length
V2_VERSION = 0x2
V2_LOCAL, V2_PROXY = 0x0, 0x1
V2_AF_UNSPEC, V2_AF_INET, V2_AF_INET6, V2_AF_UNIX = 0x0, 0x1, 0x2, 0x3
V2_TRANSPORTS = (0x0, 0x1, 0x2)  # UNSPEC, STREAM, DGRAM
V2_INET = struct.Struct("!4s4sHH")
V2_INET6 = struct.Struct("!16s16sHH")
V2_UNIX_LENGTH = 216

# --proxy-protocol -> the header versions a trusted peer may send.
VERSIONS = {"v1": (1,), "v2": (2,), "auto": (1, 2)}


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header this server accepts."""


@dataclass(frozen=True)
class ProxyHeader:
    """A complete header: its length in bytes, and the addresses it gave; both None
    when the socket's own addresses stay (v1 UNKNOWN, v2 LOCAL, AF_UNSPEC, and
    AF_UNIX, whose client has no address an ASGI scope can hold)."""

    length: int
    client: Address = None
    server: Address = None


def parse_proxy_header(data: bytes, versions: tuple[int, ...]) -> Optional[ProxyHeader]:
    """The header at the start of `data`, or None when more bytes are needed.
    Raises ProxyHeaderError when `data` cannot start a header of `versions`."""
    if 2 in versions and data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data) if len(data) >= V2_HEADER.size else None
    if 1 in versions and data[: len(V1_SIGNATURE)] == V1_SIGNATURE[: len(data)]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> Optional[ProxyHeader]:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        return None
    length = end + 2
    fields = data[len(V1_SIGNATURE) : end].split(b" ")
    if fields[0] == b"UNKNOWN":  # the rest of the line, if any, is ignored
        return ProxyHeader(length)
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed v1 header")
    family = ipaddress.IPv4Address if fields[0] == b"TCP4" else ipaddress.IPv6Address
    try:
        client_host, server_host = (str(family(field.decode("ascii"))) for field in fields[1:3])
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError("malformed v1 address") from None
    client_port, server_port = (_v1_port(field) for field in fields[3:5])
    return ProxyHeader(length, (client_host, client_port), (server_host, server_port))


def _v1_port(field: bytes) -> int:
    if not field.isdigit() or len(field) > 5 or (len(field) > 1 and field[0] == ord("0")):
        raise ProxyHeaderError("malformed v1 port")
    port = int(field)
    if port > 65535:
        raise ProxyHeaderError("malformed v1 port")
    return port


def _parse_v2(data: bytes) -> Optional[ProxyHeader]:
    _, version_command, family_transport, body_length = V2_HEADER.unpack_from(data)
    length = V2_HEADER.size + body_length
    version, command = version_command >> 4, version_command & 0xF
    family, transport = family_transport >> 4, family_transport & 0xF
    if version != V2_VERSION or command not in (V2_LOCAL, V2_PROXY):
        raise ProxyHeaderError("unsupported v2 version or command")
    if family > V2_AF_UNIX or transport not in V2_TRANSPORTS:
        raise ProxyHeaderError("unsupported v2 address family or transport")
    if len(data) < length:
        return None
    if command == V2_LOCAL or family in (V2_AF_UNSPEC, V2_AF_UNIX):
        if family == V2_AF_UNIX and body_length < V2_UNIX_LENGTH:
            raise ProxyHeaderError("v2 address block too short")
        return ProxyHeader(length)  # TLVs, if any, are skipped
    block = V2_INET if family == V2_AF_INET else V2_INET6
    if body_length < block.size:
        raise ProxyHeaderError("v2 address block too short")
    client_host, server_host, client_port, server_port = block.unpack_from(data, V2_HEADER.size)
    address = ipaddress.IPv4Address if family == V2_AF_INET else ipaddress.IPv6Address
    return ProxyHeader(
        length,
        (str(address(client_host)), client_port),
        (str(address(server_host)), server_port),
    )


class ProxyHeaderReader:
    """An asyncio protocol for the first bytes of a connection. A peer that
    `settings.proxy_trust` does not trust is handed to the HTTP protocol at once (its
    bytes are HTTP: a PROXY line from it is a 400). A trusted peer must send a header
    within --timeout-request-header; a missing, malformed or oversized one closes the
    connection with one debug line."""

    __slots__ = ("versions", "settings", "server_state", "make_protocol", "transport",
                 "buffer", "timer")  # fmt: skip

    def __init__(self, versions, settings, server_state, make_protocol: Callable) -> None:
        self.versions = versions
        self.settings = settings
        self.server_state = server_state
        self.make_protocol = make_protocol
        self.transport = None
        self.buffer = b""
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        client = get_remote_addr(transport)
        if not self.settings.proxy_trust.is_trusted(client[0] if client else None):
            self._hand_over(None, b"")
            return
        # Registered like a connection, so that shutdown() closes one still waiting.
        self.server_state.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(
            self.settings.timeout_request_header, self._time_out
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            header = parse_proxy_header(self.buffer, self.versions)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._hand_over(header, self.buffer[header.length :])

    def eof_received(self) -> None:
        self._refuse("connection closed before its PROXY header")

    def connection_lost(self, exc) -> None:
        self._forget()

    def pause_writing(self) -> None:
        pass  # nothing is written before the hand-over

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        self.transport.close()

    def _time_out(self) -> None:
        self.timer = None
        self._refuse("no PROXY header in time")

    def _refuse(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        peer = get_remote_addr(self.transport)
        logger.debug("PROXY protocol: %s from %s; closing", reason, peer[0] if peer else "unix")
        self._forget()
        self.transport.close()

    def _forget(self) -> None:
        self.server_state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buffer = b""

    def _hand_over(self, header: Optional[ProxyHeader], rest: bytes) -> None:
        self._forget()
        transport = self.transport
        protocol = self.make_protocol()
        transport.set_protocol(protocol)
        if header is None or header.client is None:
            protocol.connection_made(transport)
        else:
            with addresses_from_header(transport, header.client, header.server):
                protocol.connection_made(transport)
        if rest:
            protocol.data_received(rest)
