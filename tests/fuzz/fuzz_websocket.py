"""Fuzz harness: the WebSocket frame path (protocols/websockets/), with each framing
library (`websockets`, `wsproto`).

A valid handshake (offering permessage-deflate) goes to the C HTTP protocol, which
hands the connection over; the app accepts and echoes every message. The input is
the frame bytes the client sends next: the first read comes with the handshake (the
bytes a client sends right after it), the rest in reads cut as `fuzz_common.reads_of`
says. Then the client goes.

Invariants, for each library and each way of cutting the input:
- nothing escapes into the event loop, the server logs no error or traceback;
- the server writes the 101, then well-formed frames (unmasked, known opcodes),
  nothing after a close frame, whose code is one a peer may send (RFC 6455 7.4)
  and whose reason is UTF-8;
- the run settles: every task ends once the client has gone (no hang);
- whether the server sent a close frame is the same however the input was cut,
  and with both libraries for whole uncompressed messages (see `_closed_by_server`
  for why not the code, `_comparable_across_libraries` for why only then).
"""

from __future__ import annotations

import struct

from fuzz_common import ClientTransport, InvariantError, Run, reads_of

from fastserve import _parser
from protocol_fakes import FakeServerState, make_settings

LIBRARIES = ("websockets", "wsproto")
MAX_SIZE = 4096  # ws_max_size: small, so that short inputs reach 1009
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
SWITCHING = b"HTTP/1.1 101 "
CLOSE = 0x8
OPCODES = {0x0, 0x1, 0x2, CLOSE, 0x9, 0xA}
# Close codes an endpoint may send (RFC 6455 7.4.1-2: 1004-1006 and 1015 are reserved).
CLOSE_CODES = {1000, 1001, 1002, 1003, *range(1007, 1015)} | set(range(3000, 5000))


CLIENT_MASK = b"\x37\xfa\x21\x3d"
RSV1 = 0x40  # a compressed message (permessage-deflate)


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked), for seeds and tests."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", size)
    masked = bytes(byte ^ CLIENT_MASK[i % 4] for i, byte in enumerate(payload))
    return bytes([(0x80 if fin else 0) | rsv | opcode]) + length + CLIENT_MASK + masked


async def echo(scope, receive, send):
    message = await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


SETTINGS = {library: make_settings(echo, ws=library, ws_max_size=MAX_SIZE) for library in LIBRARIES}


def exchange(library: str, reads: list[bytes]) -> bytes:
    """What the server wrote after the 101 for frames sent in `reads`."""
    with Run() as run:
        state = FakeServerState()
        transport = ClientTransport(run.loop)
        protocol = _parser.HttpProtocol(SETTINGS[library], state, {}, _loop=run.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(HANDSHAKE + (reads[0] if reads else b""))
        if not run.settle(lambda: transport.data.startswith(SWITCHING) or transport.closed):
            raise InvariantError("no answer to the handshake: %r" % transport.data)
        if not transport.data.startswith(SWITCHING):
            raise InvariantError("handshake refused: %r" % transport.data)
        for data in reads[1:]:
            if not run.settle(lambda: transport.reading or transport.closed):
                raise InvariantError("reading stays paused")
            if transport.closed:
                break
            transport.protocol.data_received(data)
            run.settle()
        run.settle_until_quiet(lambda: (len(transport.data), transport.closed))
        transport.lose()  # the client goes
        if not run.settle(lambda: not state.tasks):
            raise InvariantError("the app still runs after the client has gone")
        run.check_errors()
    data = transport.data
    return data[data.index(b"\r\n\r\n") + 4 :]


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """The server's frames (opcode, payload); checks them as the module says."""
    frames = []
    pos = 0
    while pos < len(data):
        if frames and frames[-1][0] == CLOSE:
            raise InvariantError("bytes after the close frame: %r" % data[pos:])
        if len(data) - pos < 2:
            raise InvariantError("a cut frame: %r" % data[pos:])
        first, second = data[pos], data[pos + 1]
        opcode = first & 0x0F
        if opcode not in OPCODES or second & 0x80:
            raise InvariantError("bad frame header %02x %02x" % (first, second))
        length = second & 0x7F
        pos += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        payload = data[pos : pos + length]
        if len(payload) != length:
            raise InvariantError("a cut frame payload")
        pos += length
        if opcode == CLOSE:
            if len(payload) == 1:
                raise InvariantError("a close frame with a 1-byte payload")
            if payload:
                (code,) = struct.unpack_from("!H", payload)
                if code not in CLOSE_CODES:
                    raise InvariantError("close code %d" % code)
                try:
                    payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    raise InvariantError("close reason not UTF-8: %r" % payload) from None
        frames.append((opcode, payload))
    return frames


def _closed_by_server(frames: list[tuple[int, bytes]]) -> bool:
    """Whether the server sent a close frame. Not which code, nor the echoes and pongs
    before it: a framing library handles a whole read before the base class checks
    the text frames in it (UTF-8, 1007), so when one read holds a bad text frame and
    then another error or the client's close frame, the library's answer to the
    later frame goes out first; in smaller reads the 1007 does."""
    return any(opcode == CLOSE for opcode, _ in frames)


def _comparable_across_libraries(data: bytes) -> bool:
    """Whether `data` is whole frames, none compressed, each length in the fewest
    bytes, ending no message halfway. The libraries may differ otherwise: wsproto
    checks a message's payload as it comes (UTF-8, inflating), the websockets
    package once the frame or the message is whole; the websockets package inflates
    the data after a deflate stream's final block to nothing, where wsproto fails
    the connection (1007); wsproto refuses a length in more bytes than it needs
    (1002), the websockets package takes it."""
    pos = 0
    in_message = False
    while pos < len(data):
        if len(data) - pos < 2 or data[pos] & RSV1:
            return False
        fin, opcode = data[pos] & 0x80, data[pos] & 0x0F
        if opcode < CLOSE:  # a data frame: the message ends with its FIN
            in_message = not fin
        length = data[pos + 1] & 0x7F
        header = 2 + (4 if data[pos + 1] & 0x80 else 0)
        if length == 126:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            header += 2
            if length < 126:
                return False
        elif length == 127:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            header += 8
            if length < 65536:
                return False
        pos += header + length
    return pos == len(data) and not in_message


def check(data: bytes) -> None:
    outcomes = {}
    for library in LIBRARIES:
        for reads in reads_of(data):
            written = exchange(library, reads)
            try:
                closed = _closed_by_server(frames_of(written))
            except InvariantError as exc:
                raise InvariantError("%s, %d reads: %s" % (library, len(reads), exc)) from None
            first = outcomes.setdefault(library, closed)
            if closed != first:
                raise InvariantError(
                    "%s: in %d reads %r:\n%r\n!= at once:\n%r"
                    % (library, len(reads), reads, closed, first)
                )
    websockets, wsproto = (outcomes[library] for library in LIBRARIES)
    if websockets != wsproto and _comparable_across_libraries(data):
        raise InvariantError(
            "the libraries differ:\nwebsockets: %r\nwsproto:    %r" % (websockets, wsproto)
        )
