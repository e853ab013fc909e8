"""WebSocket framing by the `websockets` package's sans-I/O `ServerProtocol` (`--ws
websockets`); the ASGI side is `base.WebSocketProtocol`.

The HTTP protocol already parsed and checked the handshake request, so the library
never sees its bytes: `accept()` gets a `Request` built from the scope, and the
library is created in the OPEN state at that moment, its subprotocol selection
returning the app's choice. It then frames, unmasks, inflates, checks the protocol
(1002), bounds message size (1009, before reading a frame's payload) and answers
pings; text is decoded (1007) by the base class, which sees whole frames.
"""

from __future__ import annotations

from typing import Optional, Union

from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from fastserve.protocols.websockets.base import (
    ABNORMAL_CLOSURE,
    DEFLATE_MAX_WINDOW_BITS,
    SWITCHING_PROTOCOLS,
    HandshakeRefused,
    WebSocketProtocol,
)

# zlib memLevel for permessage-deflate, as the websockets server sets it by default:
# with the small window (base.DEFLATE_MAX_WINDOW_BITS), far less memory per connection
# than zlib's defaults for nearly the same compression.
DEFLATE_MEM_LEVEL = 5

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE


class WebSocketsProtocol(WebSocketProtocol):
    __slots__ = ("connection",)

    def __init__(self, settings, server_state, scope: dict, loop) -> None:
        super().__init__(settings, server_state, scope, loop)
        self.connection: Optional[ServerProtocol] = None

    def _handshake(self, subprotocol: Optional[str], headers: list) -> bytes:
        scope = self.scope
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = Request(
            target.decode("latin-1"),
            Headers(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in scope["headers"]
            ),
        )
        extensions = None
        if self.settings.ws_per_message_deflate:
            extensions = [
                ServerPerMessageDeflateFactory(
                    server_max_window_bits=DEFLATE_MAX_WINDOW_BITS,
                    compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
                )
            ]
        connection = ServerProtocol(
            extensions=extensions,
            select_subprotocol=lambda _protocol, _offered: subprotocol,
            state=OPEN,
            max_size=self.settings.ws_max_size,
        )
        response = connection.accept(request)
        if response.status_code != SWITCHING_PROTOCOLS:
            raise HandshakeRefused(connection.handshake_exc or response.reason_phrase)
        response_headers = response.headers
        del response_headers["Date"]  # the server's own comes with the other headers
        for name, value in headers:
            response_headers[name.decode("latin-1")] = value.decode("latin-1")
        self.connection = connection
        return response.serialize()

    def _receive(self, data: bytes) -> None:
        connection = self.connection
        connection.receive_data(data)
        # pongs, the echo of a close frame, the close frame of a protocol error
        self._write(b"".join(connection.data_to_send()))
        for frame in connection.events_received():
            opcode = frame.opcode
            if opcode is _TEXT:
                self._on_data(frame.data, True, frame.fin)
            elif opcode is _BINARY:
                self._on_data(frame.data, False, frame.fin)
            elif opcode is _CONT:
                self._on_data(frame.data, None, frame.fin)
            elif opcode is _PONG:
                self._on_pong(frame.data)
            elif opcode is _CLOSE:
                close = connection.close_rcvd
                self._on_close(close.code, close.reason)
        error = connection.parser_exc
        if error is not None:
            close = connection.close_sent
            code = close.code if close is not None else ABNORMAL_CLOSURE
            self._fail_connection(code, str(error), frame_sent=True)

    def _data_frame(self, data: Union[str, bytes]) -> bytes:
        connection = self.connection
        if type(data) is str:
            connection.send_text(data.encode("utf-8"))
        else:
            connection.send_binary(data)
        return b"".join(connection.data_to_send())

    def _close_frame(self, code: int, reason: str) -> bytes:
        connection = self.connection
        if connection.state is not OPEN:
            return b""  # the library failed the connection and sent its close frame
        connection.send_close(code, reason)
        return b"".join(connection.data_to_send())

    def _ping_frame(self, payload: bytes) -> bytes:
        connection = self.connection
        connection.send_ping(payload)
        return b"".join(connection.data_to_send())
