"""WebSocket framing by `wsproto` (`--ws wsproto`); the ASGI side is
`base.WebSocketProtocol`.

wsproto only goes from CONNECTING to OPEN through its own handshake parser, so when
the app accepts, it is fed the handshake request again (rebuilt from the scope's
target and headers, which the HTTP protocol already checked) and answers with
`AcceptConnection`. It then frames, unmasks, inflates, checks the protocol (1002)
and UTF-8 (1007), reporting a parse failure as a `CloseConnection` event while its
state is still OPEN. It has no message size limit: the base class counts (1009), and
`BoundedPerMessageDeflate` bounds what one piece inflates to.
"""

from __future__ import annotations

import zlib
from typing import Optional, Union

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from fastserve.protocols.websockets.base import (
    DEFLATE_MAX_WINDOW_BITS,
    HandshakeRefused,
    WebSocketProtocol,
)

_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate inflates all the compressed bytes at hand in one
    call, so a few hundred KiB of deflated zeros would become hundreds of MiB before
    any size check. Here one call inflates at most ws_max_size bytes; more is 1009
    (the base class counts the whole message). A control frame between the
    fragments of a compressed message leaves it compressed."""

    def __init__(self, max_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_size = max_size

    def frame_inbound_payload_data(self, proto, data: bytes):
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        try:
            inflated = self._decompressor.decompress(bytes(data), self.max_size + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(inflated) > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated

    def frame_inbound_complete(self, proto, fin: bool):
        # wsproto forgets that a message is compressed at the end of any frame that
        # cannot be, so a ping between two fragments of a compressed message made
        # it take the next fragments as plain bytes.
        if not self._inbound_is_compressible:
            return None  # a control frame: the message it came within goes on
        return super().frame_inbound_complete(proto, fin)


class WSProtoProtocol(WebSocketProtocol):
    __slots__ = ("connection",)

    def __init__(self, settings, server_state, scope: dict, loop) -> None:
        super().__init__(settings, server_state, scope, loop)
        self.connection: Optional[WSConnection] = None

    def _handshake(self, subprotocol: Optional[str], headers: list) -> bytes:
        scope = self.scope
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = b"GET %s HTTP/1.1\r\n%s\r\n" % (
            target,
            b"".join(b"%s: %s\r\n" % header for header in scope["headers"]),
        )
        connection = WSConnection(ConnectionType.SERVER)
        extensions = []
        if self.settings.ws_per_message_deflate:
            extensions.append(
                BoundedPerMessageDeflate(
                    self.settings.ws_max_size, server_max_window_bits=DEFLATE_MAX_WINDOW_BITS
                )
            )
        try:
            connection.receive_data(request)
            if not any(isinstance(event, Request) for event in connection.events()):
                raise HandshakeRefused("wsproto did not parse the handshake request")
            head = connection.send(
                AcceptConnection(
                    subprotocol=subprotocol, extensions=extensions, extra_headers=headers
                )
            )
        except (RemoteProtocolError, LocalProtocolError) as exc:
            raise HandshakeRefused(exc) from exc
        self.connection = connection
        return head

    def _receive(self, data: bytes) -> None:
        connection = self.connection
        try:
            connection.receive_data(data)
        except LocalProtocolError:
            return  # bytes after the closing handshake completed: the transport is closing
        for event in connection.events():
            kind = type(event)
            if kind is TextMessage:
                self._on_data(event.data, True, event.message_finished)
            elif kind is BytesMessage:
                self._on_data(event.data, False, event.message_finished)
            elif kind is Ping:
                if connection.state is _OPEN:
                    self._write(connection.send(event.response()))
            elif kind is Pong:
                self._on_pong(event.payload)
            elif kind is CloseConnection:
                state = connection.state
                if state is _REMOTE_CLOSING:  # the peer closes: echo its code
                    self._write(connection.send(event.response()))
                    self._on_close(event.code, event.reason or "")
                elif state is _CLOSED:  # the answer to our close frame
                    self._on_close(event.code, event.reason or "")
                else:  # a parse failure, which wsproto reports this way
                    self._fail_connection(event.code, event.reason or "")

    def _data_frame(self, data: Union[str, bytes]) -> bytes:
        if type(data) is str:
            return self.connection.send(TextMessage(data=data))
        return self.connection.send(BytesMessage(data=data))

    def _close_frame(self, code: int, reason: str) -> bytes:
        connection = self.connection
        if connection.state is not _OPEN:
            return b""
        return connection.send(CloseConnection(code=code, reason=reason))

    def _ping_frame(self, payload: bytes) -> bytes:
        return self.connection.send(Ping(payload=payload))
