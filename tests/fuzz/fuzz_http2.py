"""Fuzz harness: HTTP/2 (--http2) with both connection classes, the C mode's
Nghttp2Protocol (nghttp2) and the pure mode's H2Protocol (`h2`), over the transport
that plays the client (fuzz_common), with an app that reads the whole body and
answers its number, method, path and body length.

The input is what a client sends after the connection preface's magic (the harness
puts that first; the seeds start with the client's SETTINGS): frames, cut into reads
as `fuzz_common.reads_of` cuts them (the magic too), a few loop passes between reads;
then the client goes.

Invariants, for each class and each way of cutting the input:
- nothing escapes into the event loop, the server logs no error or traceback;
- what the server writes is whole frames, its SETTINGS first; every header block it
  sends decodes (HPACK, in order) and has a `:status`;
- every answer of the app is of a call the app got, once;
- the connection answers or closes: unless it has closed, sent GOAWAY, or the client
  reset a stream, every call whose app sent its response has its HEADERS out;
- the run settles: every stream's task ends once the client has gone.

The two libraries answer some protocol errors differently (README "HTTP/2": `h2`
ends the connection where nghttp2 resets a stream), and nghttp2 frames its window
updates as the reads come, so neither the bytes nor the outcome are compared.
"""

from __future__ import annotations

import struct

import hpack
from fuzz_common import ClientTransport, InvariantError, Run, body_size, reads_of

from fastserve.protocols.http2.h2_impl import H2Protocol
from fastserve.protocols.http2.nghttp2_impl import Nghttp2Protocol
from h2_raw import CONTINUATION, END_HEADERS, GOAWAY, HEADERS, PREFACE, RST_STREAM, SETTINGS
from protocol_fakes import FakeServerState, make_settings

MODES = {"c": Nghttp2Protocol, "python": H2Protocol}
# Small limits, so that short inputs reach them (a head over the limit, a body over it).
LIMITS = {"limit_request_head": 2048, "limit_request_body": 4096}
APP_STATUS = 200
# RFC 9113 4.1 and 6: the frame header, and the types and flags the checks read.
FRAME_HEADER = struct.Struct(">HBBBI")  # length (24 bits: 16 + 8), type, flags, stream id
FRAME_HEADER_SIZE = FRAME_HEADER.size
PADDED, PRIORITY = 0x8, 0x20
STREAM_ID_MASK = 0x7FFFFFFF
# The HPACK table the server's encoder may use: the client's SETTINGS choose it.
MAX_TABLE_SIZE = 2**32 - 1


async def echo(scope, receive, send):
    """Records the request in the connection's list (`[method, path, size, answered]`),
    reads its whole body, answers its number; `answered` once its last send returned."""
    calls = scope["state"]["calls"]
    number = len(calls)
    call = [scope["method"], scope["raw_path"], None, False]
    calls.append(call)
    size = await body_size(receive)
    if size is None:
        return
    call[2] = size
    headers = [(b"x-call", b"%d" % number)]
    await send({"type": "http.response.start", "status": APP_STATUS, "headers": headers})
    body = b"%s %s %d" % (scope["method"].encode(), scope["raw_path"], size)
    await send({"type": "http.response.body", "body": body})
    call[3] = True


SETTINGS_OF_THE_HARNESS = make_settings(echo, http2=True, **LIMITS)


def exchange(protocol_class, reads: list[bytes]) -> tuple[bytes, bool, list]:
    """Feed `reads` to one connection: what the server wrote, whether it closed, and
    the calls the app got."""
    calls: list = []
    with Run() as run:
        state = FakeServerState()
        transport = ClientTransport(run.loop)
        protocol = protocol_class(SETTINGS_OF_THE_HARNESS, state, {"calls": calls}, _loop=run.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in reads:
            if not run.settle(lambda: transport.reading or transport.closed):
                raise InvariantError("reading stays paused: wrote %r" % transport.data)
            if transport.closed:
                break
            protocol.data_received(data)
            run.settle()
        run.settle_until_quiet(lambda: (len(transport.data), len(calls), len(state.tasks)))
        closed = transport.closed
        transport.lose()  # the client goes
        if not run.settle(lambda: not state.tasks):
            raise InvariantError("streams still running after the client has gone: %r" % calls)
        run.check_errors()
    return transport.data, closed, calls


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The server's bytes as frames: (type, flags, stream id, payload)."""
    frames, pos = [], 0
    while pos < len(data):
        if len(data) - pos < FRAME_HEADER_SIZE:
            raise InvariantError("a cut frame header at %d: %r" % (pos, data[pos:]))
        high, low, kind, flags, stream_id = FRAME_HEADER.unpack_from(data, pos)
        length = high << 8 | low
        start = pos + FRAME_HEADER_SIZE
        if start + length > len(data):
            raise InvariantError("a cut frame at %d: %r" % (pos, data[pos:]))
        frames.append((kind, flags, stream_id & STREAM_ID_MASK, data[start : start + length]))
        pos = start + length
    return frames


def header_fragment(flags: int, payload: bytes) -> bytes:
    """A HEADERS frame's header block fragment, its padding and priority taken off."""
    pad = 0
    if flags & PADDED:
        pad, payload = payload[0], payload[1:]
    if flags & PRIORITY:
        payload = payload[5:]
    return payload[: len(payload) - pad]


def responses_of(frames: list) -> list[tuple[int, dict]]:
    """The server's header blocks, decoded in order: (stream id, fields)."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = MAX_TABLE_SIZE
    decoder.max_header_list_size = MAX_TABLE_SIZE
    blocks, block, stream = [], None, 0
    for kind, flags, stream_id, payload in frames:
        if block is not None and (kind != CONTINUATION or stream_id != stream):
            raise InvariantError("a header block cut by a %d frame on %d" % (kind, stream_id))
        if kind == HEADERS:
            block, stream = header_fragment(flags, payload), stream_id
        elif kind == CONTINUATION:
            if block is None:
                raise InvariantError("CONTINUATION without HEADERS on %d" % stream_id)
            block += payload
        if block is not None and flags & END_HEADERS:
            try:
                fields = dict(decoder.decode(block, raw=True))
            except hpack.HPACKError as exc:
                raise InvariantError(
                    "the server's header block does not decode: %r" % exc
                ) from None
            if not fields.get(b":status", b"").isdigit():
                raise InvariantError("a header block without :status: %r" % fields)
            blocks.append((stream, fields))
            block = None
    return blocks


def client_resets(data: bytes) -> bool:
    """Whether the client's frames (the input, as far as they are frames) hold a
    RST_STREAM: a stream it reset may lose the answer its app sent."""
    pos = len(PREFACE)
    while len(data) - pos >= FRAME_HEADER_SIZE:
        high, low, kind, _, _ = FRAME_HEADER.unpack_from(data, pos)
        if kind == RST_STREAM:
            return True
        pos += FRAME_HEADER_SIZE + (high << 8 | low)
    return False


def check_output(written: bytes, closed: bool, calls: list, sent: bytes) -> None:
    """The invariants of the module docstring, for what the server `written` to the
    client's bytes `sent`."""
    frames = frames_of(written)
    if not frames or frames[0][0] != SETTINGS or frames[0][2] != 0:
        raise InvariantError("the server did not open with its SETTINGS: %r" % written[:40])
    answered = [
        int(fields[b"x-call"])
        for _, fields in responses_of(frames)
        if int(fields[b":status"]) == APP_STATUS and b"x-call" in fields
    ]
    if len(set(answered)) != len(answered) or not set(answered) <= set(range(len(calls))):
        raise InvariantError("answers %r for %d calls" % (answered, len(calls)))
    ended = closed or any(kind == GOAWAY for kind, _, _, _ in frames)
    if ended or client_resets(sent):
        return
    lost = [number for number, call in enumerate(calls) if call[3] and number not in answered]
    if lost:
        raise InvariantError("calls %r sent their answer, which never came out" % lost)


def check(data: bytes) -> None:
    sent = PREFACE + data
    for mode, protocol_class in MODES.items():
        for reads in reads_of(sent):
            try:
                written, closed, calls = exchange(protocol_class, reads)
                check_output(written, closed, calls, sent)
            except InvariantError as exc:
                raise InvariantError("%s mode, %d reads: %s" % (mode, len(reads), exc)) from None
