#!/usr/bin/env python3
"""A lean WebSocket echo load generator: raw sockets, uvloop, no WebSocket library.

    python bench/ws_client.py --port 8000 [--connections 64] [--size 32] [--window 16]
                              [--warmup 2] [--duration 10]

First one check connection: a binary and a text message of `--size` bytes must come
back exactly as sent. Then `--connections` WebSockets, each with a real opening
handshake (Sec-WebSocket-Accept checked), send windows of `--window` messages: the
masked frame is built once and the window is one write of the same bytes; the next
window goes when the whole window came back. Echoes are counted from frame headers
alone (server frames are unmasked, so a payload is skipped, never read), and every
header must be the expected one (binary, FIN, `--size` bytes). After `--warmup`
seconds, messages echoed in the next `--duration` seconds are counted; then every
connection finishes its window and closes with a close handshake.

Prints one JSON object: messages, seconds, messages_per_s, mib_per_s (payload bytes
echoed, one direction), client_cpu (this process's CPU time over the measured
seconds: near 1.0, the client and not the server was the limit), connections,
errors. Exit code 1 when the check fails or a connection does not last the run.
Used by bench/ws_bench.py; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
import time
from typing import Optional

import uvloop

HOST = "127.0.0.1"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
KEY_BYTES = 16
MASK_BYTES = 4
HEAD_END = b"\r\n\r\n"

FIN = 0x80
OPCODE_BITS = 0x0F
MASK_BIT = 0x80
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
FIRST_CONTROL_OPCODE = 0x8
CLOSE_NORMAL = 1000

LENGTH_7_MAX = 125  # payload lengths up to this fit in the second header byte
LENGTH_16 = 126  # second-byte value: a 16-bit length follows
LENGTH_64 = 127  # second-byte value: a 64-bit length follows
LENGTH_16_MAX = 0xFFFF
SHORT_HEAD = 2
HEAD_16 = 4
HEAD_64 = 10

CONNECT_TIMEOUT = 30.0  # seconds for every connection's handshake
CLOSE_TIMEOUT = 30.0  # seconds for the last windows and the close handshakes
CHECK_TIMEOUT = 30.0
CHECK_TEXT_CHARACTER = "✓"  # the text check holds a multi-byte character
MIN_SIZE = len(CHECK_TEXT_CHARACTER.encode())
MIB = 1024 * 1024


class EchoError(Exception):
    """The server answered something else than the echo or handshake expected."""


# -- frames and the handshake --------------------------------------------------------


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """`payload` XOR the repeated 4-byte `mask` (one big-int XOR, not a Python loop)."""
    size = len(payload)
    repeated = (mask * (size // MASK_BYTES + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(size, "big")


def length_field(size: int, mask_bit: int) -> bytes:
    if size <= LENGTH_7_MAX:
        return bytes([mask_bit | size])
    if size <= LENGTH_16_MAX:
        return bytes([mask_bit | LENGTH_16]) + size.to_bytes(2, "big")
    return bytes([mask_bit | LENGTH_64]) + size.to_bytes(8, "big")


def frame_head(data: bytes, position: int, end: int) -> Optional[tuple[int, int]]:
    """(head length, payload length) of the server frame at `position`; None when its
    head is not all in `data[:end]`; ValueError for a masked frame."""
    size = data[position + 1]
    if size < LENGTH_16:
        return SHORT_HEAD, size
    if size == LENGTH_16:
        head = HEAD_16
    elif size == LENGTH_64:
        head = HEAD_64
    else:  # the mask bit, which a server must not set
        raise ValueError("the server masked a frame")
    if end - position < head:
        return None
    return head, int.from_bytes(data[position + SHORT_HEAD : position + head], "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (a client must mask; the key is drawn once per frame
    built, and the bytes are reused for every send)."""
    mask = os.urandom(MASK_BYTES)
    head = bytes([FIN | opcode]) + length_field(len(payload), MASK_BIT) + mask
    return head + mask_payload(payload, mask)


def close_frame(code: int = CLOSE_NORMAL) -> bytes:
    return client_frame(OP_CLOSE, code.to_bytes(2, "big"))


def handshake_request(host: str, port: int, key: bytes) -> bytes:
    # no Sec-WebSocket-Extensions: permessage-deflate is not negotiated
    return (
        b"GET /echo HTTP/1.1\r\n"
        b"Host: %s:%d\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, key)
    )


def check_handshake_response(head: bytes, key: bytes) -> None:
    """`head` (up to the blank line) must switch protocols with the right accept value."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101 "):
        raise EchoError(f"handshake answered {lines[0]!r}")
    expected = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            if value.strip() != expected:
                raise EchoError(f"Sec-WebSocket-Accept {value.strip()!r}, expected {expected!r}")
            return
    raise EchoError("handshake answer without Sec-WebSocket-Accept")


def new_key() -> bytes:
    return base64.b64encode(os.urandom(KEY_BYTES))


# -- the correctness check: one connection, whole frames read ----------------------------


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of one whole unmasked server frame (not fragmented)."""
    first, second = await reader.readexactly(SHORT_HEAD)
    if second & MASK_BIT:
        raise EchoError("the server masked a frame")
    size = second & ~MASK_BIT
    if size == LENGTH_16:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == LENGTH_64:
        size = int.from_bytes(await reader.readexactly(8), "big")
    if not first & FIN:
        raise EchoError("the server fragmented an echo")
    return first & OPCODE_BITS, await reader.readexactly(size)


async def check_echo(host: str, port: int, size: int) -> None:
    """A binary and a text message of `size` bytes come back exactly as sent, then a
    clean close; EchoError otherwise."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        key = new_key()
        writer.write(handshake_request(host, port, key))
        check_handshake_response(await reader.readuntil(HEAD_END), key)
        text = CHECK_TEXT_CHARACTER + "x" * (size - MIN_SIZE)  # `size` bytes of UTF-8
        for opcode, payload in ((OP_BINARY, os.urandom(size)), (OP_TEXT, text.encode())):
            writer.write(client_frame(opcode, payload))
            echoed = await read_frame(reader)
            while echoed[0] in (OP_PING, OP_PONG):
                if echoed[0] == OP_PING:
                    writer.write(client_frame(OP_PONG, echoed[1]))
                echoed = await read_frame(reader)
            if echoed != (opcode, payload):
                raise EchoError(
                    f"sent opcode {opcode} with {len(payload)} bytes, got back opcode "
                    f"{echoed[0]} with {len(echoed[1])} bytes that differ"
                )
        writer.write(close_frame())
        opcode, payload = await read_frame(reader)
        if opcode != OP_CLOSE or int.from_bytes(payload[:2], "big") != CLOSE_NORMAL:
            raise EchoError(f"close answered with opcode {opcode}, payload {payload[:20]!r}")
    finally:
        writer.close()


# -- the load ---------------------------------------------------------------------------


class EchoLoad:
    """What every connection shares: the pre-built window, the expected echo header,
    the running count of echoed messages."""

    def __init__(self, host: str, port: int, size: int, window: int) -> None:
        self.host = host
        self.port = port
        self.window = window
        self.window_bytes = client_frame(OP_BINARY, os.urandom(size)) * window
        self.close_bytes = close_frame()
        self.echo_first_byte = FIN | OP_BINARY
        self.echo_size = size
        self.messages = 0
        self.running = True


class EchoConnection(asyncio.Protocol):
    """One WebSocket of the load: handshake, then windows of frames until the load
    stops, then a close handshake. `opened` and `closed` are futures for the runner."""

    def __init__(self, load: EchoLoad, loop: asyncio.AbstractEventLoop) -> None:
        self.load = load
        self.key = new_key()
        self.transport: Optional[asyncio.Transport] = None
        self.head = b""  # the handshake answer, until its blank line
        self.handshake_done = False
        self.partial = b""  # an incomplete frame header, or control frame, from the last read
        self.skip = 0  # payload bytes of the last data frame not received yet
        self.outstanding = 0  # messages of the current window not echoed yet
        self.close_sent = False
        self.opened = loop.create_future()
        self.closed = loop.create_future()
        self.error: Optional[str] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(handshake_request(self.load.host, self.load.port, self.key))

    def connection_lost(self, exc) -> None:
        if not self.close_sent and self.error is None:
            self.error = f"connection lost during the run ({exc or 'closed by the server'})"
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_result(None)

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.transport.abort()

    def send_window(self) -> None:
        self.outstanding = self.load.window
        self.transport.write(self.load.window_bytes)

    def data_received(self, data: bytes) -> None:
        if self.handshake_done:
            self.read_frames(data)
            return
        self.head += data
        end = self.head.find(HEAD_END)
        if end < 0:
            return
        try:
            check_handshake_response(self.head[:end], self.key)
        except EchoError as exc:
            self.fail(str(exc))
            return
        rest = self.head[end + len(HEAD_END) :]
        self.head = b""
        self.handshake_done = True
        self.opened.set_result(None)
        if rest:
            self.read_frames(rest)

    def read_frames(self, data: bytes) -> None:
        """Count the echoes in `data` from their headers; payloads are skipped."""
        if self.partial:
            data = self.partial + data
            self.partial = b""
        end = len(data)
        position = self.skip
        if position >= end:
            self.skip = position - end
            return
        load = self.load
        echoed = 0
        while end - position >= SHORT_HEAD:
            first = data[position]
            try:
                frame = frame_head(data, position, end)
            except ValueError as exc:
                self.fail(str(exc))
                return
            if frame is None:
                break
            head, size = frame
            if first & OPCODE_BITS >= FIRST_CONTROL_OPCODE:
                if end - position < head + size:
                    break  # a control frame is read whole: keep it for the next read
                if not self.control_frame(
                    first & OPCODE_BITS, data[position + head : position + head + size]
                ):
                    return
            elif first != load.echo_first_byte or size != load.echo_size:
                self.fail(f"unexpected frame: first byte {first:#x}, {size} bytes")
                return
            else:
                echoed += 1
            position += head + size
        if position > end:
            self.skip = position - end
        else:
            self.skip = 0
            self.partial = data[position:]
        if echoed:
            self.count_echoes(echoed)

    def count_echoes(self, echoed: int) -> None:
        """`echoed` messages came back: the next window, or the close once the run ends."""
        load = self.load
        load.messages += echoed
        self.outstanding -= echoed
        if self.outstanding == 0:
            if load.running:
                self.send_window()
            elif not self.close_sent:
                self.close_sent = True
                self.transport.write(load.close_bytes)

    def control_frame(self, opcode: int, payload: bytes) -> bool:
        """Answer a ping, accept a pong, end on close; False when the connection ends."""
        if opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if not self.close_sent:
                code = int.from_bytes(payload[:2], "big") if payload else None
                self.fail(f"the server closed the connection during the run (code {code})")
                return False
            self.transport.close()
            return False
        return True


async def run_load(args) -> dict:
    await asyncio.wait_for(check_echo(args.host, args.port, args.size), CHECK_TIMEOUT)
    loop = asyncio.get_running_loop()
    load = EchoLoad(args.host, args.port, args.size, args.window)
    connections = [EchoConnection(load, loop) for _ in range(args.connections)]
    await asyncio.wait_for(
        asyncio.gather(
            *(loop.create_connection(lambda c=c: c, args.host, args.port) for c in connections)
        ),
        CONNECT_TIMEOUT,
    )
    await asyncio.wait_for(asyncio.gather(*(c.opened for c in connections)), CONNECT_TIMEOUT)
    for connection in connections:
        if connection.handshake_done:
            connection.send_window()
    await asyncio.sleep(args.warmup)
    start_count, start_time, start_cpu = load.messages, time.perf_counter(), time.process_time()
    await asyncio.sleep(args.duration)
    messages, seconds = load.messages - start_count, time.perf_counter() - start_time
    cpu_seconds = time.process_time() - start_cpu
    load.running = False
    await asyncio.wait([c.closed for c in connections], timeout=CLOSE_TIMEOUT)
    errors = [c.error for c in connections if c.error]
    errors += ["no close handshake in time" for c in connections if not c.closed.done()]
    for connection in connections:
        connection.transport.abort()
    return {
        "messages": messages,
        "seconds": seconds,
        "messages_per_s": messages / seconds,
        "mib_per_s": messages * args.size / seconds / MIB,
        "client_cpu": cpu_seconds / seconds,
        "connections": args.connections,
        "errors": errors,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="payload bytes per message")
    parser.add_argument("--window", type=int, default=16, help="messages sent per write")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE or args.connections < 1 or args.window < 1 or args.duration <= 0:
        parser.error(
            f"--size must be at least {MIN_SIZE}; --connections, --window, --duration positive"
        )
    try:
        result = uvloop.run(run_load(args))
    except (EchoError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
        print(f"ws_client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
