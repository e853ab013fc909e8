"""The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer
sends before the client's first byte to say whom the connection is from.

`parse_proxy_header` is sans-I/O: bytes in, a `ProxyHeader` (or "need more") out.
`ProxyHeaderReader` is the asyncio glue, put in front of the HTTP protocol by
`server.py` when --proxy-protocol is on (the listeners then have no TLS of their own):
it reads the header of a trusted peer, starts TLS after it when --ssl-* is on, then
hands the connection, with the bytes after the header, to the HTTP protocol, which
takes its `client` and `server` from `utils.get_remote_addr` / `get_local_addr`
as always (they answer with the header's addresses during that hand-over). Off, none
of this runs: the HTTP protocol is the listener's protocol, as before.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import logging
import ssl
import struct
from dataclasses import dataclass
from typing import Callable, Optional

from fastserve.protocols.utils import Address, addresses_from_header, get_remote_addr

logger = logging.getLogger("fastserve.error")

V1_SIGNATURE = b"PROXY "
V1_MAX_LENGTH = 107  # the whole line, CRLF included (the specification's bound)
V1_MIN_LENGTH = len(b"PROXY UNKNOWN\r\n")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")  # signature, version+command, family+transport, length
V2_VERSION = 0x2
V2_LOCAL, V2_PROXY = 0x0, 0x1
V2_AF_UNSPEC, V2_AF_INET, V2_AF_INET6, V2_AF_UNIX = 0x0, 0x1, 0x2, 0x3
V2_TRANSPORTS = (0x0, 0x1, 0x2)  # UNSPEC, STREAM, DGRAM
V2_INET = struct.Struct("!4s4sHH")
V2_INET6 = struct.Struct("!16s16sHH")
V2_UNIX_LENGTH = 216

# A read of a plain connection's first bytes: the header, and what follows it.
PLAIN_READ_SIZE = 65536

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


def safe_read_size(data: bytes, versions: tuple[int, ...]) -> int:
    """How many more bytes can be read after `data` without reading past the header
    (over TLS the bytes after it are the handshake's, which the TLS layer must read)."""
    if not data:
        return V1_MIN_LENGTH if 1 in versions else V2_HEADER.size
    if data[:1] == V2_SIGNATURE[:1]:  # v1 starts with "P"
        if len(data) < V2_HEADER.size:
            return V2_HEADER.size - len(data)
        return V2_HEADER.size + V2_HEADER.unpack_from(data)[3] - len(data)
    return 1 if data.endswith(b"\r") else 2  # the earliest the line can end


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
    if command == V2_LOCAL:
        return ProxyHeader(length)  # whatever follows is ignored, as the spec says
    if family in (V2_AF_UNSPEC, V2_AF_UNIX):
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


class ProxyHeaderReader(asyncio.BufferedProtocol):
    """The protocol of a connection until its PROXY header is read. A peer that
    `settings.proxy_trust` does not trust is handed on at once (its bytes are HTTP: a
    PROXY line from it is a 400). A trusted peer must send a header within
    --timeout-request-header; a missing, malformed or oversized one closes the
    connection with one debug line. With `sslcontext`, TLS starts after the header
    (read without a byte more), and the HTTP protocol gets the TLS transport."""

    __slots__ = ("versions", "settings", "server_state", "make_protocol", "sslcontext",
                 "transport", "buffer", "chunk", "timer")  # fmt: skip

    def __init__(
        self,
        versions: tuple[int, ...],
        settings,
        server_state,
        make_protocol: Callable[[], asyncio.Protocol],
        sslcontext: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.versions = versions
        self.settings = settings
        self.server_state = server_state
        self.make_protocol = make_protocol
        self.sslcontext = sslcontext
        self.transport = None
        self.buffer = b""
        self.chunk = bytearray()
        self.timer = None

    # -- asyncio.BufferedProtocol ----------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        client = get_remote_addr(transport)
        if not self.settings.proxy_trust.is_trusted(client[0] if client else None):
            self._start(None)
            return
        # Registered like a connection, so that shutdown() closes one still waiting.
        self.server_state.connections.add(self)
        self.timer = asyncio.get_running_loop().call_later(
            self.settings.timeout_request_header, self._time_out
        )

    def get_buffer(self, sizehint: int) -> bytearray:
        if self.sslcontext is None:
            size = PLAIN_READ_SIZE  # what follows the header goes to the HTTP protocol
        else:
            size = safe_read_size(self.buffer, self.versions)
        if len(self.chunk) != size:
            self.chunk = bytearray(size)
        return self.chunk

    def buffer_updated(self, nbytes: int) -> None:
        self.buffer += self.chunk[:nbytes]
        try:
            header = parse_proxy_header(self.buffer, self.versions)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._start(header, self.buffer[header.length :])

    def eof_received(self) -> None:
        self._refuse("connection closed before its PROXY header")

    def connection_lost(self, exc) -> None:
        self._forget()

    def shutdown(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    # -- the header, then TLS, then HTTP ------------------------------------------------

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
        self.chunk = bytearray()

    def _start(self, header: Optional[ProxyHeader], rest: bytes = b"") -> None:
        self._forget()
        protocol = self.make_protocol()
        if self.sslcontext is None:
            _hand_over(self.transport, protocol, header, rest)
            return
        # TLS starts on the bytes after the header, none of which was read (`rest` is
        # empty); asyncio's own TLS layer, as create_server(ssl=...) stacks it, set
        # up now (loop.start_tls would start a loop iteration later, and uvloop may
        # read in between). The HTTP protocol gets the connection after the handshake.
        tls = asyncio.sslproto.SSLProtocol(
            asyncio.get_running_loop(),
            HandshakeDone(lambda transport: _hand_over(transport, protocol, header, b"")),
            self.sslcontext,
            None,
            server_side=True,
        )
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)


class HandshakeDone(asyncio.Protocol):
    """The TLS layer's first protocol: hands the connection on once it is made."""

    __slots__ = ("hand_over",)

    def __init__(self, hand_over: Callable) -> None:
        self.hand_over = hand_over

    def connection_made(self, transport) -> None:
        self.hand_over(transport)


def _hand_over(transport, protocol, header: Optional[ProxyHeader], rest: bytes) -> None:
    """Give the connection to `protocol`, with the header's addresses (if any) and
    the bytes that came after the header."""
    transport.set_protocol(protocol)
    if header is None or header.client is None:
        protocol.connection_made(transport)
    else:
        with addresses_from_header(transport, header.client, header.server):
            protocol.connection_made(transport)
    if rest:
        protocol.data_received(rest)
