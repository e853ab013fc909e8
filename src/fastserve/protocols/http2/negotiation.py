"""How a connection comes to speak HTTP/2 (--http2), in both HTTP modes:

- TLS: ALPN offers `h2, http/1.1` (config.create_ssl_context); `ALPNDispatch` is the
  listener's protocol, and once the handshake is done it gives the connection to the
  protocol the client chose. Under --proxy-protocol the PROXY header's reader makes
  it as it makes any HTTP protocol, so it works there too.
- Plain TCP, prior knowledge (h2c): the HTTP/1.1 protocols see the preface's first
  line (`PRI * HTTP/2.0`) and `hand_over` the connection, with the bytes read so far.
- The obsolete h2c `Upgrade:` (RFC 9113 removed it) is not taken: such a request is
  served as HTTP/1.1, as most servers do.

Which protocol serves a connection is the HTTP mode's (`http2_protocol_class`, which
Config.load puts in the settings): the C mode's Nghttp2Protocol over nghttp2
(fastserve._http2), the pure mode's H2Protocol over `h2`, also the C mode's when the
extension is not built. Nothing else here imports either: the C mode's HTTP/2 runs
without the `h2` package (Config asks for it only where H2Protocol serves).
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from fastserve.protocols.utils import Address, addresses_from_header

ALPN_H2 = "h2"


def nghttp2_protocol_class(http_mode: str) -> Optional[type]:
    """The C mode's HTTP/2 over nghttp2, which needs no `h2` (none of its imports
    reach `h2`, `hpack` or `hyperframe`); None for another mode, or a C mode whose
    compiled extension is not built."""
    if http_mode != "c":
        return None
    try:
        from fastserve.protocols.http2.nghttp2_impl import Nghttp2Protocol
    except ImportError:  # an install without the compiled extension
        return None
    return Nghttp2Protocol


def http2_protocol_class(http_mode: str) -> type:
    """The HTTP/2 protocol of an HTTP mode ("c", "python"; a protocol class of
    one's own, by its name, gets the pure one, over `h2`)."""
    protocol_class = nghttp2_protocol_class(http_mode)
    if protocol_class is not None:
        return protocol_class
    from fastserve.protocols.http2.h2_impl import H2Protocol

    return H2Protocol


def hand_over(
    transport, settings, server_state, app_state, client: Address, server: Address, data, loop
) -> None:
    """Give a plain connection whose first bytes `data` are HTTP/2's preface to the
    HTTP/2 protocol; `client` and `server` are what the HTTP/1.1 protocol took (a
    PROXY header's addresses, for one)."""
    protocol = settings.h2_protocol_class(settings, server_state, app_state, loop)
    transport.set_protocol(protocol)
    with addresses_from_header(transport, client, server):
        protocol.connection_made(transport)
    protocol.data_received(bytes(data))


class ALPNDispatch(asyncio.Protocol):
    """A TLS connection's protocol until its handshake is done (asyncio calls
    `connection_made` then): HTTP/2's when the client chose `h2`, else HTTP/1.1's."""

    __slots__ = ("make_http1", "settings", "server_state", "app_state")

    def __init__(self, make_http1: Callable, settings, server_state, app_state) -> None:
        self.make_http1 = make_http1
        self.settings = settings
        self.server_state = server_state
        self.app_state = app_state

    def connection_made(self, transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == ALPN_H2:
            protocol = self.settings.h2_protocol_class(
                self.settings, self.server_state, self.app_state
            )
        else:
            protocol = self.make_http1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


def alpn_factory(make_http1: Callable, settings, server_state, app_state) -> Callable:
    """The protocol factory of a TLS listener under --http2."""

    def create_protocol() -> asyncio.Protocol:
        return ALPNDispatch(make_http1, settings, server_state, app_state)

    return create_protocol
