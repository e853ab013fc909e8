"""Fuzz harness: the whole HTTP protocol, in both modes (C `fastserve._parser.
HttpProtocol`, pure `H11Protocol`), over a transport that plays the client, with an
app that echoes what it got (method, target, body length). fuzz_wsgi runs the same
with the echo's WSGI twin (`Served`: the app as the protocols get it).

The input is what a client sends on one connection; it is fed in reads (see
`fuzz_common.reads_of`), a few loop passes between reads (a WSGI app's call in its
thread ends within one), never while the protocol has paused reading, and no more
once the connection is closed. Then the client goes.

Invariants, for each mode and each way of cutting the input:
- nothing escapes into the event loop, the server logs no error or traceback;
- every request the app got is answered, once, in order (the responses name it);
  only the last may go unanswered: its body did not all come, or a bad byte in
  it was answered with an error;
- a response the server gives itself (400, 413, 414, 431; 426 for a refused
  WebSocket handshake) is the last bytes written, and the connection closes;
- nothing is written after a response with `connection: close`, which closes;
- the run settles: reading paused is resumed once the answer is out, and every
  task (and every call of a WSGI app's threads) ends once the client has gone;
- the bytes written and the requests the app answered are the same however the
  input was cut (100 Continue aside: it depends on whether the body came with the
  head; a request both malformed and over a limit may get either answer, see
  `_same_refusal`), and the same in both modes (see `_same_in_both_modes`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Optional

from fuzz_common import (
    ClientTransport,
    InvariantError,
    Run,
    WatchedThreads,
    body_size,
    reads_of,
)

from fastserve import _parser
from fastserve.config import ProtocolSettings
from fastserve.protocols.http.h11_impl import H11Protocol
from protocol_fakes import FakeServerState, make_settings

MODES = {"c": _parser.HttpProtocol, "python": H11Protocol}
# Small limits, so that short inputs reach every limit's path (see fuzz_llhttp).
LIMITS = {
    "limit_request_head": 2048,
    "limit_request_line": 512,
    "limit_request_fields": 16,
    "limit_request_field_size": 256,
    "limit_request_body": 4096,
}
# The answers the server gives without the app, to a request it will not serve.
ERROR_STATUSES = {400, 413, 414, 426, 431}
BAD_REQUEST = 400
# What the app answers a WebSocket handshake with: websocket.close before accepting.
WEBSOCKET_REFUSED = 403
APP_STATUS = 200
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


async def echo(scope, receive, send):
    """Records the request in the connection's list and answers with its number,
    method, target and body length, after reading the whole body. The target is the
    raw path, or percent-decoded when the state says `decoded_target` (as the WSGI
    echo sees it: fuzz_wsgi)."""
    state = scope["state"]
    calls = state["calls"]
    number = len(calls)
    target = scope["raw_path"]
    if state.get("decoded_target"):
        target = urllib.parse.unquote_to_bytes(target)
    if scope["type"] == "websocket":
        calls.append(["WEBSOCKET", target, 0])
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})
        return
    call = [scope["method"], target, None]
    calls.append(call)
    size = await body_size(receive)
    if size is None:
        return
    call[2] = size
    body = echo_body(scope["method"], target, size)
    await send(
        {
            "type": "http.response.start",
            "status": APP_STATUS,
            "headers": [(b"x-call", b"%d" % number)],
        }
    )
    await send({"type": "http.response.body", "body": body})


def echo_body(method: str, target: bytes, size: int) -> bytes:
    """What the echo apps answer (the WSGI one too: fuzz_wsgi)."""
    return b"%s %s %d" % (method.encode(), target, size)


@dataclass(frozen=True)
class Served:
    """An echo app as the protocols serve it: their settings (the app, as Config
    wraps it), the threads its calls run on (None: on the loop), and how a
    connection's list of calls reaches it (it returns the app state the protocol
    puts in each scope)."""

    settings: ProtocolSettings
    threads: Optional[WatchedThreads]
    bind_calls: Callable[[list], dict]


ASGI = Served(make_settings(echo, ws="websockets", **LIMITS), None, lambda calls: {"calls": calls})


def exchange(protocol_class, reads: list[bytes], served: Served = ASGI) -> tuple[bytes, bool, list]:
    """Feed `reads` to one connection: what the server wrote, whether it closed, and
    the requests the app got."""
    calls: list = []
    with Run(served.threads) as run:
        state = FakeServerState()
        transport = ClientTransport(run.loop)
        app_state = served.bind_calls(calls)
        protocol = protocol_class(served.settings, state, app_state, _loop=run.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in reads:
            if not run.settle(lambda: transport.reading or transport.closed):
                raise InvariantError(
                    "reading stays paused: %d requests, wrote %r" % (len(calls), transport.data)
                )
            if transport.closed:
                break
            transport.protocol.data_received(data)
            run.settle()
        run.settle_until_quiet(lambda: (len(transport.data), len(calls), len(state.tasks)))
        closed = transport.closed
        transport.lose()  # the client goes
        if not run.settle(lambda: not state.tasks and run.idle()):
            raise InvariantError("tasks still running after the client has gone: %r" % calls)
        run.check_errors()
    return transport.data, closed, calls


def check_responses(data: bytes, closed: bool, calls: list) -> None:
    """The responses in `data` answer `calls` in order (see the module docstring)."""
    answered = 0
    pos = 0
    while pos < len(data):
        if data.startswith(CONTINUE, pos):
            pos += len(CONTINUE)
            continue
        status, headers, body_at = _read_head(data, pos)
        length = int(headers[b"content-length"])
        if status == APP_STATUS:
            if calls[_call_number(headers, answered, calls)][0] == "HEAD":
                length = 0
            elif data[body_at : body_at + length] != _expected_body(calls[answered]):
                raise InvariantError("request %d answered with the wrong body" % answered)
        elif status == WEBSOCKET_REFUSED:
            if calls[answered][0] != "WEBSOCKET":
                raise InvariantError("403 to request %d, not a handshake" % answered)
        elif status not in ERROR_STATUSES:
            raise InvariantError("unexpected status %d" % status)
        pos = body_at + length
        if status == APP_STATUS or status == WEBSOCKET_REFUSED:
            answered += 1
        elif pos != len(data):
            raise InvariantError("bytes after the %d answer: %r" % (status, data[pos:]))
        if headers.get(b"connection") == b"close":
            _check_closed(data, pos, closed)
    # Only the last request may go unanswered (its body is incomplete, or an error
    # answer interrupted it).
    if answered < len(calls) - 1:
        raise InvariantError("%d requests, %d answered: %r" % (len(calls), answered, calls))


def _read_head(data: bytes, pos: int) -> tuple[int, dict, int]:
    """The status and headers of the response head at `pos`, and where its body starts."""
    line = _STATUS_LINE.match(data, pos)
    end = data.find(b"\r\n\r\n", pos)
    if line is None or end < 0:
        raise InvariantError("not a response at %d: %r" % (pos, data[pos:]))
    headers = dict(
        field.split(b": ", 1) for field in data[line.end() : end].split(b"\r\n") if field
    )
    return int(line.group(1)), headers, end + 4


def _call_number(headers: dict, answered: int, calls: list) -> int:
    """The app's response names its request (x-call): the next one, its body read."""
    number = int(headers[b"x-call"])
    if number != answered:
        raise InvariantError("response to request %d, expected %d" % (number, answered))
    if calls[number][2] is None:
        raise InvariantError("request %d answered before its body" % number)
    return number


def _expected_body(call: tuple) -> bytes:
    return echo_body(*call)


def _check_closed(data: bytes, pos: int, closed: bool) -> None:
    """After a `connection: close` answer: nothing more, and the connection closed."""
    if pos != len(data):
        raise InvariantError("bytes after connection: close: %r" % data[pos:])
    if not closed:
        raise InvariantError("connection: close, and the connection stays open")


def _before_error_answer(outcome: tuple) -> tuple:
    """The outcome as it was before the server's own error answer, if it ends with one."""
    written, closed, calls = outcome
    last = written.rfind(b"HTTP/1.1 ")
    line = _STATUS_LINE.match(written, last) if last >= 0 else None
    if closed and line and int(line.group(1)) in ERROR_STATUSES:
        return written[:last], False, calls
    return outcome


def _error_status(outcome: tuple) -> int:
    """The status of the server's own error answer that ends `outcome` (0: none)."""
    written = outcome[0]
    line = _STATUS_LINE.match(written, max(written.rfind(b"HTTP/1.1 "), 0))
    return int(line.group(1)) if line and outcome[1] else 0


def _same_refusal(one: tuple, other: tuple) -> bool:
    """Both refuse the same request after the same responses, one for a bad byte
    (400), the other for a limit its bytes crossed: in C mode, llhttp reports a bad
    byte in a target or value before the callbacks that count the limits see the
    span, and where a read ends decides whether they saw part of it first. Two
    limits crossed must still get the same answer."""
    statuses = {_error_status(one), _error_status(other)}
    return (
        BAD_REQUEST in statuses
        and 0 not in statuses
        and _before_error_answer(one) == _before_error_answer(other)
    )


def _same_in_both_modes(c_mode: tuple, pure: tuple) -> bool:
    """Whether the modes agree. Two differences are by design: the C mode rejects a
    bad byte in a head as soon as it comes, the pure mode once the head is complete
    (or over the limit), so an input that ends mid-head may be answered in C mode
    only; and a head that breaks two rules gets the answer to the first in byte
    order in C mode, to the first the pure mode checks (e.g. 431 for too many
    fields before 400 for a bad byte in a later one's name) in pure mode."""
    before = _before_error_answer(c_mode)
    return c_mode == pure or before == pure or before == _before_error_answer(pure)


def check(data: bytes) -> None:
    check_served(ASGI, data)


def outcome_of(written: bytes, closed: bool, calls: list) -> tuple:
    """An exchange's result as the invariants compare it: 100 Continue aside, and only
    the calls the app could answer (whether the app ran for a request whose body
    broke a rule in the read that completed its head depends on the reads; the
    responses may not)."""
    answerable = [call for call in calls if call[2] is not None]
    return written.replace(CONTINUE, b""), closed, answerable


def check_served(served: Served, data: bytes) -> dict:
    """The invariants of the module docstring, for `data` sent to `served`; returns
    each mode's outcome (`outcome_of`) of the input at once."""
    outcomes = {}
    for mode, protocol_class in MODES.items():
        for reads in reads_of(data):
            written, closed, calls = exchange(protocol_class, reads, served)
            try:
                check_responses(written, closed, calls)
            except InvariantError as exc:
                raise InvariantError("%s mode, %d reads: %s" % (mode, len(reads), exc)) from None
            outcome = outcome_of(written, closed, calls)
            first = outcomes.setdefault(mode, outcome)
            if outcome != first and not _same_refusal(outcome, first):
                raise InvariantError(
                    "%s mode: in %d reads %r:\n%r\n!= at once:\n%r"
                    % (mode, len(reads), reads, outcome, first)
                )
    if not _same_in_both_modes(outcomes["c"], outcomes["python"]):
        raise InvariantError(
            "the modes differ:\nc:      %r\npython: %r" % (outcomes["c"], outcomes["python"])
        )
    return outcomes
