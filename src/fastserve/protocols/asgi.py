"""ASGI rules every protocol family shares: how an app's call starts (its Task) and
ended, message checks (HTTP and WebSocket), and `ClientDisconnected` (re-exported as
`fastserve.ClientDisconnected`).

Everything here runs at most once per message or per app call, never per parser
callback.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import logging
import os
import sys
from typing import Optional, Union

error_logger = logging.getLogger("fastserve.error")

# A chain of exception causes is followed this deep, no further (a loop guard).
CAUSE_DEPTH_LIMIT = 16


# The names of the Tasks an app's calls run in, instead of asyncio's "Task-<n>": on
# Python 3.11, formatting that name cost a twentieth of the C mode's own time per
# request (bench/NOTES.md).
# A scope's "asgi" key (HTTP and WebSocket): copied per scope, never handed out itself.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

REQUEST_TASK_NAME = "fastserve.request"
WEBSOCKET_TASK_NAME = "fastserve.websocket"
# asyncio.Task takes the context to run in (3.11+); before, the Task is made inside it.
TASK_TAKES_CONTEXT = sys.version_info >= (3, 11)


def connection_context(reset_contextvars: bool) -> contextvars.Context:
    """The context a connection's app calls run in copies of: the one the connection
    was made in, or with --reset-contextvars (uvicorn's) an empty one, so that nothing
    set before (at import, in the lifespan, by instrumentation) shows in a request."""
    return contextvars.Context() if reset_contextvars else contextvars.copy_context()


def start_task(loop, context, coro, name: str) -> asyncio.Task:
    """Run `coro` (an app call) in a new Task, in a copy of `context`: a contextvar one
    call sets never shows in another. The loop's task factory, when one is set, makes
    the Task. (The C mode makes its request Tasks the same way, inline.)"""
    if loop.get_task_factory() is not None:
        coro = _in_a_loop_pass_of_its_own(coro)
    elif TASK_TAKES_CONTEXT:
        return asyncio.Task(coro, loop=loop, context=context.copy(), name=name)
    return context.run(loop.create_task, coro, name=name)


async def _in_a_loop_pass_of_its_own(coro):
    """A task factory may start its Tasks eagerly (`asyncio.eager_task_factory`, 3.12+):
    the first step of the app's call would run inside the protocol's parsing, before the
    protocol has recorded the Task. One yield first: the app starts in a loop pass,
    as the Task of a loop without a factory does."""
    try:
        await asyncio.sleep(0)
    except BaseException:
        coro.close()  # never started: nothing of it runs
        raise
    return await coro


class ClientDisconnected(OSError):
    """Raised by `send()` when the app sends a message after the connection is
    gone (ASGI spec 2.4: a server-specific OSError subclass). Every protocol
    raises it, and none logs it as an application error when the app lets it
    propagate."""


DISCONNECTED = "the client disconnected"  # ClientDisconnected's message


class ASGIMessageError(RuntimeError):
    """The app sent a message the ASGI spec does not allow at this point."""


def message_type_of(message) -> Optional[str]:
    return message.get("type") if isinstance(message, dict) else None


def expect_message(message, expected: str) -> None:
    message_type = message_type_of(message)
    if message_type != expected:
        raise ASGIMessageError(
            f"Expected ASGI message {expected!r}, but got {message_type!r}: {message!r:.200}"
        )


def after_complete(message) -> ASGIMessageError:
    """The error for any message sent after the response (or connection) is done."""
    message_type = message.get("type") if isinstance(message, dict) else message
    return ASGIMessageError(
        f"Unexpected ASGI message {message_type!r} sent, after response already completed."
    )


def response_start(message, message_type: str = "http.response.start") -> tuple[int, list]:
    """Validate `http.response.start` (or `websocket.http.response.start`, the same
    fields); return (status, headers)."""
    expect_message(message, message_type)
    status = message.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ASGIMessageError(f"ASGI message {message_type!r} has an invalid status {status!r}")
    return status, _headers(message)


def _headers(message) -> list:
    headers = message.get("headers", ())
    return headers if isinstance(headers, list) else list(headers)


def bad_header(name, value, message_type: str = "http.response.start") -> ASGIMessageError:
    return ASGIMessageError(
        f"ASGI message {message_type!r} has an invalid header {name!r}: {value!r:.200}"
    )


def malformed_header(header, message_type: str = "http.response.start") -> ASGIMessageError:
    return ASGIMessageError(f"ASGI message {message_type!r} has a malformed header {header!r:.200}")


def response_body(message, message_type: str = "http.response.body") -> tuple[bytes, bool]:
    """Validate `http.response.body` (or `websocket.http.response.body`); return
    (body, more_body)."""
    expect_message(message, message_type)
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ASGIMessageError(
            f"ASGI message {message_type!r} has a non-bytes body of type {type(body).__name__}"
        )
    return body, bool(message.get("more_body", False))


PATHSEND = "http.response.pathsend"


def response_pathsend(message) -> str:
    """Validate `http.response.pathsend` (the path-send extension); return its path,
    an absolute path as a str."""
    expect_message(message, PATHSEND)
    path = message.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ASGIMessageError(
            f"ASGI message {PATHSEND!r} needs an absolute path as a str, not {path!r:.200}"
        )
    return path


def pathsend_after_body(message) -> ASGIMessageError:
    """The error for a pathsend after body messages: it replaces them, all of them."""
    return ASGIMessageError(
        f"ASGI message {PATHSEND!r} sent after 'http.response.body': {message!r:.200}"
    )


TRAILERS = "http.response.trailers"  # the HTTP Trailers extension
EARLY_HINT = "http.response.early_hint"  # the Early Hints extension


def announces_trailers(message) -> bool:
    """`http.response.start`'s `trailers`: True when the app will send
    `http.response.trailers` after its last body message."""
    return bool(message.get("trailers", False))


def response_trailers(message) -> tuple[list, bool]:
    """Validate `http.response.trailers`; return (headers, more_trailers). The
    fields are checked where they are encoded (headers.trailer_fields)."""
    expect_message(message, TRAILERS)
    return _headers(message), bool(message.get("more_trailers", False))


def unexpected_trailers(message, announced: bool) -> ASGIMessageError:
    """The error for trailers the start did not announce, or sent before the last
    body message."""
    if not announced:
        return ASGIMessageError(
            f"ASGI message {TRAILERS!r} sent, but 'http.response.start' did not set "
            f"'trailers': {message!r:.200}"
        )
    return ASGIMessageError(
        f"ASGI message {TRAILERS!r} sent before the last 'http.response.body': {message!r:.200}"
    )


def early_hint_links(message) -> list:
    """Validate `http.response.early_hint`; return its links (each a Link field's
    value, checked where it is encoded: headers.link_fields)."""
    expect_message(message, EARLY_HINT)
    links = message.get("links", ())
    if isinstance(links, (bytes, str)):
        raise ASGIMessageError(
            f"ASGI message {EARLY_HINT!r} needs 'links' as an iterable of bytes: {links!r:.200}"
        )
    return list(links)


# -- websocket messages -------------------------------------------------------------------

WEBSOCKET_NORMAL_CLOSURE = 1000  # `websocket.close` without a code
# Close codes an application may send (RFC 6455 7.4): the registered ones that are
# not reserved for an endpoint's own use (1004-1006, 1015), and 3000-4999.
WEBSOCKET_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)
WEBSOCKET_REGISTERED_CLOSE_CODES = range(3000, 5000)
# A close frame's payload is at most 125 bytes: the 2-byte code, then the reason.
WEBSOCKET_CLOSE_REASON_MAX = 123


def unexpected_message(message, expected: tuple) -> ASGIMessageError:
    """The error for a message of a type not allowed in this state of the connection."""
    names = " or ".join(repr(name) for name in expected)
    return ASGIMessageError(
        f"Expected ASGI message {names}, but got {message_type_of(message)!r}: {message!r:.200}"
    )


def after_close(message) -> ASGIMessageError:
    """The error for any message sent after the app closed (or refused) the WebSocket."""
    return ASGIMessageError(
        f"Unexpected ASGI message {message_type_of(message)!r} sent, after the application "
        "closed the WebSocket."
    )


def websocket_accept(message, offered: list) -> tuple[Optional[str], list]:
    """Validate `websocket.accept`; return (subprotocol or None, headers). The
    subprotocol must be one the client offered (RFC 6455 4.2.2)."""
    subprotocol = message.get("subprotocol")
    if subprotocol is not None:
        if not isinstance(subprotocol, str):
            raise ASGIMessageError(
                f"ASGI message 'websocket.accept' has a non-str subprotocol {subprotocol!r:.200}"
            )
        if subprotocol not in offered:
            raise ASGIMessageError(
                f"ASGI message 'websocket.accept' has subprotocol {subprotocol!r:.200}, which "
                f"the client did not offer (it offered {offered!r:.200})"
            )
    return subprotocol, _headers(message)


def websocket_send(message) -> Union[str, bytes]:
    """Validate `websocket.send`; return its text (str) or bytes."""
    data = message.get("bytes")
    text = message.get("text")
    if (data is None) == (text is None):
        raise ASGIMessageError(
            "ASGI message 'websocket.send' must have exactly one of 'bytes' and 'text': "
            f"{message!r:.200}"
        )
    if text is not None:
        if not isinstance(text, str):
            raise ASGIMessageError(
                f"ASGI message 'websocket.send' has a non-str text of type {type(text).__name__}"
            )
        return text
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ASGIMessageError(
            f"ASGI message 'websocket.send' has non-bytes bytes of type {type(data).__name__}"
        )
    return data


def websocket_close(message) -> tuple[int, str]:
    """Validate `websocket.close`; return (code, reason)."""
    code = message.get("code")
    if code is None:
        code = WEBSOCKET_NORMAL_CLOSURE
    elif (
        not isinstance(code, int)
        or isinstance(code, bool)
        or not (code in WEBSOCKET_CLOSE_CODES or code in WEBSOCKET_REGISTERED_CLOSE_CODES)
    ):
        raise ASGIMessageError(f"ASGI message 'websocket.close' has an invalid code {code!r:.200}")
    reason = message.get("reason") or ""
    if not isinstance(reason, str):
        raise ASGIMessageError(
            f"ASGI message 'websocket.close' has a non-str reason of type {type(reason).__name__}"
        )
    if len(reason.encode("utf-8")) > WEBSOCKET_CLOSE_REASON_MAX:
        raise ASGIMessageError(
            "ASGI message 'websocket.close' has a reason longer than "
            f"{WEBSOCKET_CLOSE_REASON_MAX} bytes: {reason!r:.200}"
        )
    return int(code), reason


# -- when the app is done ---------------------------------------------------------------

_ExceptionGroup = getattr(builtins, "BaseExceptionGroup", None)  # 3.11+


def from_disconnect(exc: Optional[BaseException]) -> bool:
    """True when `exc` is ClientDisconnected, or was raised while handling one
    (Starlette turns it into its own ClientDisconnect), or is a group of such."""
    depth = 0
    while exc is not None and depth < CAUSE_DEPTH_LIMIT:
        if isinstance(exc, ClientDisconnected):
            return True
        if _ExceptionGroup is not None and isinstance(exc, _ExceptionGroup):
            return all(from_disconnect(sub) for sub in exc.exceptions)
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
        depth += 1
    return False


def log_app_exception(exc: BaseException, disconnected: bool) -> None:
    """Log an exception the app let out, once; the protocol then fails the request."""
    if disconnected and from_disconnect(exc):
        # A client that went away is normal, not an application error.
        error_logger.debug(
            "Client disconnected; the application stopped with %s", type(exc).__name__
        )
    else:
        error_logger.error("Exception in ASGI application\n", exc_info=exc)


# What a protocol does once the app returned without a clean, complete response.
APP_DONE = 0  # nothing: the response is complete
APP_FAIL = 1  # answer 500 if the response has not started, then close
APP_CLOSE = 2  # close the connection (the response started but is broken)


def app_returned(
    result: object,
    message_error: Optional[BaseException],
    response_started: bool,
    response_complete: bool,
    disconnected: bool,
) -> int:
    """Judge how the app's call ended, log what was wrong, and say what to do."""
    if message_error is not None:
        error_logger.error("Invalid ASGI message sent by the application\n", exc_info=message_error)
        return APP_FAIL
    if result is not None:
        error_logger.error("ASGI callable should return None, but returned %r.", result)
        return APP_CLOSE
    if not response_started:
        if not disconnected:
            error_logger.error("ASGI callable returned without starting response.")
        return APP_FAIL
    if not response_complete:
        if not disconnected:
            error_logger.error("ASGI callable returned without completing response.")
        return APP_CLOSE
    return APP_DONE
