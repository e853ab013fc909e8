"""ASGI rules every protocol family shares: message checks, how an app's call
ended, and `ClientDisconnected` (re-exported as `fastserve.ClientDisconnected`).

Everything here runs at most once per message or per app call, never per parser
callback.
"""

from __future__ import annotations

import builtins
import logging
from typing import Optional

error_logger = logging.getLogger("fastserve.error")

# A chain of exception causes is followed this deep, no further (a loop guard).
CAUSE_DEPTH_LIMIT = 16


class ClientDisconnected(OSError):
    """Raised by `send()` when the app sends a message after the connection is
    gone (ASGI spec 2.4: a server-specific OSError subclass). Every protocol
    raises it, and none logs it as an application error when the app lets it
    propagate."""


class ASGIMessageError(RuntimeError):
    """The app sent a message the ASGI spec does not allow at this point."""


def expect_message(message, expected: str) -> None:
    message_type = message.get("type") if isinstance(message, dict) else None
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


def response_start(message) -> tuple[int, list]:
    """Validate `http.response.start`; return (status, headers)."""
    expect_message(message, "http.response.start")
    status = message.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ASGIMessageError(
            f"ASGI message 'http.response.start' has an invalid status {status!r}"
        )
    headers = message.get("headers", ())
    if not isinstance(headers, list):
        headers = list(headers)
    return status, headers


def bad_header(name, value) -> ASGIMessageError:
    return ASGIMessageError(
        f"ASGI message 'http.response.start' has an invalid header {name!r}: {value!r:.200}"
    )


def malformed_header(header) -> ASGIMessageError:
    return ASGIMessageError(
        f"ASGI message 'http.response.start' has a malformed header {header!r:.200}"
    )


def response_body(message) -> tuple[bytes, bool]:
    """Validate `http.response.body`; return (body, more_body)."""
    expect_message(message, "http.response.body")
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ASGIMessageError(
            "ASGI message 'http.response.body' has a non-bytes body of type "
            f"{type(body).__name__}"
        )
    return body, bool(message.get("more_body", False))


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
        error_logger.error(
            "Invalid ASGI message sent by the application\n", exc_info=message_error
        )
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
