"""What both HTTP/1.1 protocols do off the hot path, written once over their twin
names (docs/architecture.md, "One request, both modes"): a connection's start (the
Python protocols': HTTP/1.1's pure one and both HTTP/2 connections), a request the
server answers itself, how an app's call ended, a request past --timeout-request, an app
that breaks its own Content-Length, a pathsend after its head, and the messages of
the Trailers and Early Hints extensions (`send_extension`).

Each function takes a `RequestCycle` (or an `HttpProtocol` / `H11Protocol`) of
either mode and uses only the names the two share: in the C mode those are
`public` attributes and `cpdef` methods of `final` classes, so the C code calls
them directly and only these functions go through Python."""

from __future__ import annotations

import asyncio
import logging

from fastserve.logging import access_logger, log_access
from fastserve.protocols.asgi import (
    APP_CLOSE,
    APP_FAIL,
    EARLY_HINT,
    TRAILERS,
    ClientDisconnected,
    app_returned,
    connection_context,
    early_hint_links,
    log_app_exception,
    message_type_of,
    pathsend_after_body,
    response_pathsend,
    response_trailers,
    unexpected_trailers,
)
from fastserve.protocols.http import framing as fr
from fastserve.protocols.http.errors import (
    CONTENT_SHORTER,
    REQUEST_TIMEOUT,
    error_body,
    error_logger,
    error_response,
    log_request_timeout,
)
from fastserve.protocols.http.flow import FlowControl
from fastserve.protocols.http.headers import field_lines, link_fields, trailer_fields
from fastserve.protocols.http.pathsend import chunk_frame, length_error, open_path, send_file
from fastserve.protocols.tls import tls_extension
from fastserve.protocols.utils import get_local_addr, get_remote_addr, is_ssl


def open_connection(protocol, transport) -> None:
    """The `connection_made` of a Python protocol (the pure HTTP/1.1 one, both HTTP/2
    connections; the C mode's writes the same into its C fields): the transport, its
    flow control, the connection counted, its addresses and TLS, the context every
    request Task of it starts in a copy of (so that a contextvar set by one request
    never shows up in the next), and whether its access lines are wanted."""
    protocol.transport = transport
    protocol.flow = FlowControl(transport, protocol.loop)
    protocol.server_state.connections.add(protocol)
    protocol.client = get_remote_addr(transport)
    protocol.server = get_local_addr(transport)
    if is_ssl(transport):
        protocol.scheme = "https"
        protocol.tls = tls_extension(transport, protocol.settings.tls_server_cert)
    protocol.context = connection_context(protocol.settings.reset_contextvars)
    if protocol.access_log and not access_logger.isEnabledFor(logging.INFO):
        protocol.access_log = False


def lose_connection(protocol) -> None:
    """The protocol's `connection_lost`: closed, its timer stopped, the request in
    flight sees a disconnect and a send() waiting to drain wakes."""
    protocol.closed = True
    protocol.server_state.connections.discard(protocol)
    timer = protocol.timer
    if timer is not None:
        protocol.timer = None
        timer.cancel()
    cycle = protocol.cycle
    if cycle is not None:
        cycle.disconnected = True
        cycle.wake()
    if protocol.flow is not None:
        protocol.flow.resume_writing()
    protocol.pending = b""


def shut_down(protocol) -> None:
    """The protocol's `shutdown`, a graceful stop: close now if idle, else after
    the current response."""
    protocol.shutting_down = True
    cycle = protocol.cycle
    if cycle is None or cycle.response_complete:
        protocol._close()
    else:
        cycle.keep_alive = False


def skip_body(protocol, cycle) -> None:
    """The app answered without reading the whole body: read and discard it, then
    go on -- unless the client still waits for a 100 Continue that never came (it
    might never send the body): close then."""
    if cycle.expect_100:
        protocol._close()
        return
    cycle.body_chunks = None
    cycle.body_buffered = 0
    protocol._resume_reading()


def fail_connection(protocol, status: int, response: bytes | None) -> None:
    """The protocol's `_fail`: answer with `response` (or the canned answer for
    `status`) unless the app's response has begun, end the request, close."""
    cycle = protocol.cycle
    started = False
    protocol.pending = b""
    if cycle is not None:
        started = cycle.response_started
        if not cycle.response_complete:
            cycle.disconnected = True
            cycle.keep_alive = False
        cycle.wake()
    if not started and not protocol.closed:
        protocol._out(response if response is not None else error_response(status))
    protocol._close()


def fail_cycle(cycle, status: int) -> None:
    """The cycle's `_fail`: the app failed (or timed out); answer with `status` if
    nothing of its response is written yet (its head may be, unwritten), close."""
    protocol = cycle.protocol
    if (
        (not cycle.response_started or cycle.head_pending)
        and not cycle.disconnected
        and not protocol.closed
    ):
        cycle.response_started = True
        cycle.head_pending = False
        cycle.status = status
        protocol._out(error_response(status))
        cycle.body_bytes = len(error_body(status))
        # the app's request got an answer: logged and counted as one
        if protocol.access_log:
            log_access(cycle.scope, status, cycle.started, cycle.body_bytes, None)
        if protocol.metrics is not None:
            protocol._count_response(cycle)
    cycle.response_complete = True
    cycle.wake()
    protocol._close()


def app_raised(cycle, exc: BaseException) -> bool:
    """The cycle's `run`: the app's call raised `exc`. A cancellation (or the coroutine
    closed) closes the connection and is the caller's to re-raise (True); anything
    else is logged and fails the cycle."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        cycle.protocol._close()
        return True
    log_app_exception(exc, cycle.disconnected)
    cycle._fail()
    return False


def app_finished(cycle, result) -> None:
    """The cycle's `run`: the app's call returned `result` (asgi.app_returned's rule)."""
    outcome = app_returned(
        result,
        cycle.message_error,
        cycle.response_started,
        cycle.response_complete,
        cycle.disconnected,
    )
    if outcome == APP_FAIL:
        cycle._fail()
    elif outcome == APP_CLOSE:
        cycle.protocol._close()


def timed_out(cycle, task, timeout: float) -> None:
    """--timeout-request passed (the rule: errors.log_request_timeout); the cycle's
    `run` schedules this with the loop when the app starts."""
    if cycle.response_complete:
        return
    log_request_timeout(cycle.scope, timeout)
    cycle._fail(REQUEST_TIMEOUT)
    task.cancel()


def broken_length(cycle, reason: str) -> None:
    """The cycle's `_length_error`: the app broke its own Content-Length. Log it and
    close; nothing of the message that overran is written."""
    error_logger.error(reason)
    cycle.response_complete = True
    cycle.keep_alive = False
    cycle.disconnected = True
    cycle.wake()
    cycle.protocol._close()


async def send_path(cycle, message) -> None:
    """The cycle's `_pathsend`: `http.response.pathsend`, the body is the file at the
    message's path, framed as a body of its size in one message (see pathsend.py).
    The cycle's `_framing` ends the head, its `_write_head` writes it."""
    if not cycle.head_pending:
        raise pathsend_after_body(message)
    opened = open_path(response_pathsend(message))
    try:
        size = opened.size
        section_follows = trailers_follow(cycle)
        cycle._framing(size, section_follows)
        framing = cycle.framing
        if framing == fr.LENGTH and cycle.content_length != size:
            # the app's Content-Length: nothing of the response is written
            cycle._length_error(length_error(cycle.content_length, size))
            return
        prefix = tail = b""
        if framing == fr.CHUNKED:
            prefix, tail = chunk_frame(size, not section_follows)
        cycle._write_head(prefix)
        if framing != fr.NONE and size:  # (NONE: HEAD, 204, 304: the head only)
            protocol = cycle.protocol
            try:
                sent = await send_file(protocol.transport, protocol.flow, opened)
            except ClientDisconnected:
                cycle.disconnected = True
                protocol._close()
                raise
            cycle.body_bytes = sent
            if sent < size:  # the file shrank since it was opened
                cycle._length_error(CONTENT_SHORTER)
                return
            if tail:
                protocol._out(tail)
    finally:
        opened.close()
    cycle._complete()


# -- the Trailers and Early Hints extensions (rare: off the hot path) --------------------


def send_extension(cycle, message) -> bool:
    """The cycle's `send`, for a message that is no start or body message: while
    trailers are due, the trailers (any other message is refused); an early hint;
    trailers sent too soon (refused). False: none of these (the caller's own checks
    name the error)."""
    if cycle.trailers_due:
        send_trailers(cycle, message)
        return True
    message_type = message_type_of(message)
    if message_type == EARLY_HINT:
        send_early_hint(cycle, message)
        return True
    if message_type == TRAILERS:
        raise unexpected_trailers(message, cycle.trailers != fr.NO_TRAILERS)
    return False


def trailers_follow(cycle) -> bool:
    """The cycle's last body message is being sent: when the app announced trailers
    they are due now (the response completes at them). True when a trailer section
    follows (framing.TRAILERS_SENT): the body is framed as if more came."""
    if cycle.trailers != fr.NO_TRAILERS:
        cycle.trailers_due = True
    return cycle.trailers == fr.TRAILERS_SENT


def send_trailers(cycle, message) -> None:
    """`http.response.trailers`: the fields checked and gathered; at the last message
    the trailer section after the last chunk (when sent: framing.trailer_mode), and
    the response is complete."""
    headers, more_trailers = response_trailers(message)
    fields = trailer_fields(headers)
    if cycle.trailers == fr.TRAILERS_SENT:
        cycle.trailer_lines = (cycle.trailer_lines or b"") + field_lines(fields)
    if more_trailers:
        return
    cycle.trailers_due = False
    if cycle.trailers == fr.TRAILERS_SENT:
        section = (fr.LAST_CHUNK_LINE, cycle.trailer_lines or b"", fr.CHUNK_END)
        cycle.protocol._out(b"".join(section))
    cycle._complete()


def send_early_hint(cycle, message) -> None:
    """`http.response.early_hint`: a 103 head of its Link fields, while the response's
    own head is not written (after it, ignored: the extension lets a server), and not
    to an HTTP/1.0 client (RFC 9110 15.2: no 1xx to it)."""
    fields = link_fields(early_hint_links(message))
    if (not cycle.response_started or cycle.head_pending) and not cycle.http10:
        cycle.protocol._out(fr.EARLY_HINTS_LINE + field_lines(fields) + fr.CHUNK_END)
