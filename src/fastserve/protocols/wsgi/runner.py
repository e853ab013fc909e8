"""`WSGIApp`: a WSGI app as the ASGI 3 app the HTTP protocols call, so that every
feature of theirs (access log, metrics, limits, timeouts, graceful shutdown, TLS,
proxies, --root-path) serves WSGI unchanged.

On the event loop: the request body is received in full (`input.receive_body`),
then the app is called on one of its --threads threads (`threads.AppThreads`). A
client that sends its body slowly holds no thread; requests beyond the threads wait
for one (--limit-concurrency answers 503 beyond its bound, as for any app).

On the app's thread (`Responder`): `start_response`, `write()` and the iterable's
chunks become ASGI messages handed to the loop one at a time, each waited for
(`asyncio.run_coroutine_threadsafe` on the request's `send`): a client that does
not read blocks the app's thread at the protocol's flow control, never grows the
server's memory. The message that completes the response is kept instead and sent
by the request's coroutine once the call has returned: a whole-body response costs
one hand-off to the thread and one back. The head goes with the first non-empty
chunk; a list or tuple body goes in one message (the protocols then send its
Content-Length); a `wsgi.file_wrapper` around a real file goes by pathsend, after
the call too (a duplicate of its descriptor is kept open for it). The iterable's
`close()` always runs, also when the client went away (the next send raises
ClientDisconnected in the app's thread) or the request was cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any, Callable, Optional

from fastserve.protocols.asgi import DISCONNECTED, PATHSEND, ClientDisconnected
from fastserve.protocols.http.errors import INTERNAL_SERVER_ERROR, error_body
from fastserve.protocols.tls import TLS
from fastserve.protocols.wsgi.environ import base_environ, build_environ
from fastserve.protocols.wsgi.input import WSGIInput, receive_body
from fastserve.protocols.wsgi.response import (
    FileWrapper,
    WSGIResponseError,
    body_chunk,
    content_length,
    encode_headers,
    parse_status,
    proc_path,
    sendable_file,
)
from fastserve.protocols.wsgi.threads import AppThreads

error_logger = logging.getLogger("fastserve.error")

ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


class Responder:
    """One request's response, made on the app's thread: `start_response`, `write`,
    and the delivery of each message to the event loop."""

    def __init__(
        self,
        environ: dict,
        send: Callable,
        loop: asyncio.AbstractEventLoop,
        pathsend: bool,
        on_loop: bool = False,
    ) -> None:
        self.environ = environ
        self.send = send
        self.loop = loop
        # whether a file may go by pathsend: the protocol offers it, and not under
        # TLS (where pathsend reads the file in blocks, as the iteration does)
        self.pathsend = pathsend
        # --threads 0: the app runs on the loop's thread, which must not wait on itself:
        # every message is kept for send_last
        self.on_loop = on_loop
        self.status: Optional[int] = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.complete = False
        # body bytes the app's Content-Length still allows (None: it set none)
        self.remaining: Optional[int] = None
        # the cross-thread send in flight, and whether the request's Task is gone
        # (cancelled: --timeout-request, shutdown); guarded by `lock`
        self.pending: Optional[concurrent.futures.Future] = None
        self.abandoned = False
        # the messages that complete the response, for the loop to send (send_last),
        # and the duplicate descriptor of a file they send by pathsend (keep_file)
        self.last: list[dict] = []
        self.kept_file: Optional[int] = None
        self.lock = threading.Lock()

    # -- PEP 3333's callables

    def start_response(self, status: Any, headers: Any, exc_info: Any = None) -> Callable:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code, encoded = parse_status(status), encode_headers(headers)
        self.status, self.headers = code, encoded
        return self.write

    def write(self, data: Any) -> None:
        """The imperative write() start_response returns (PEP 3333: for old apps)."""
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        chunk = body_chunk(data)
        if chunk and not self.send_body(chunk, more_body=True):
            raise RuntimeError("write() past the response's Content-Length")

    # -- the call

    def run(self, app: Callable) -> None:
        """Call the app and send its response; its iterable's close() always runs."""
        try:
            result = app(self.environ, self.start_response)
            try:
                self.respond(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except WSGIResponseError as exc:
            if self.head_sent:
                raise  # the response is broken half-way: the protocol closes
            error_logger.error("Invalid WSGI response from the application: %s", exc)
            self.status, self.headers = INTERNAL_SERVER_ERROR, list(ERROR_HEADERS)
            self.send_body(error_body(INTERNAL_SERVER_ERROR), more_body=False)

    def respond(self, result: Any) -> None:
        if isinstance(result, (list, tuple)) and not self.head_sent:
            self.require_start()
            self.send_body(b"".join([body_chunk(chunk) for chunk in result]), more_body=False)
            return
        if isinstance(result, FileWrapper) and not self.head_sent:
            self.require_start()
            fd = sendable_file(result, self.headers) if self.pathsend else None
            if fd is not None and self.keep_file(fd):
                self.complete = True
                path = proc_path(self.kept_file)
                self.last = [self.start_message(), {"type": PATHSEND, "path": path}]
                return
        for chunk in result:
            chunk = body_chunk(chunk)
            if chunk:
                self.require_start()
                if not self.send_body(chunk, more_body=True):
                    return  # PEP 3333: the iteration stops at the app's Content-Length
        self.require_start()
        self.send_body(b"", more_body=False)

    def require_start(self) -> None:
        if self.status is None:
            raise RuntimeError("the WSGI app returned a body before calling start_response()")

    def send_body(self, chunk: bytes, more_body: bool) -> bool:
        """Send a body message (after the head, when it has not gone); False once the
        response is complete. No byte goes past the app's Content-Length (PEP 3333):
        the chunk that reaches it ends the response."""
        if self.complete:
            return False
        messages = [] if self.head_sent else [self.start_message()]
        if self.remaining is not None:
            chunk = chunk[: self.remaining]
            self.remaining -= len(chunk)
            more_body = more_body and self.remaining > 0
        self.complete = not more_body
        messages.append({"type": "http.response.body", "body": chunk, "more_body": more_body})
        if more_body:
            self.deliver(messages)
        else:
            self.last.extend(messages)
        return more_body

    def start_message(self) -> dict:
        """The head, which goes with the first body message (or the pathsend)."""
        self.head_sent = True
        self.remaining = content_length(self.headers)
        return {"type": "http.response.start", "status": self.status, "headers": self.headers}

    # -- to the event loop

    def deliver(self, messages: list) -> None:
        """Send `messages` on the loop and wait until they are sent (the protocol's
        flow control waits for a slow client): one message in flight at a time."""
        if self.on_loop:
            self.last.extend(messages)
            return
        with self.lock:
            if self.abandoned:
                raise ClientDisconnected(DISCONNECTED)
            pending = self.pending = asyncio.run_coroutine_threadsafe(
                self.send_all(messages), self.loop
            )
        try:
            pending.result()
        except concurrent.futures.CancelledError:
            raise ClientDisconnected(DISCONNECTED) from None

    async def send_all(self, messages: list) -> None:
        for message in messages:
            await self.send(message)

    async def send_last(self) -> None:
        """On the loop, after the app's call: the messages that complete the response."""
        await self.send_all(self.last)

    def keep_file(self, fd: int) -> bool:
        """Keep a duplicate of the app's file open for the pathsend that send_last
        makes after close() has closed the app's own (False: the request is gone)."""
        with self.lock:
            if self.abandoned:
                return False
            self.kept_file = os.dup(fd)
            return True

    def release(self) -> None:
        """On the loop, when the request is done (after `abandon`, so that no thread
        keeps a file any more): the kept file is closed."""
        with self.lock:
            kept_file, self.kept_file = self.kept_file, None
        if kept_file is not None:
            os.close(kept_file)

    def abandon(self) -> None:
        """The request's Task is done: a send still in flight is cancelled, the next
        one raises, and the app's thread goes on to close()."""
        with self.lock:
            self.abandoned = True
            if self.pending is not None:
                self.pending.cancel()


class WSGIApp:
    """A WSGI app as an ASGI 3 app for HTTP requests (`--interface wsgi`, or a WSGI
    app found by `auto`), called on its threads (`threads.AppThreads`)."""

    def __init__(self, app: Callable, threads: int, multiprocess: bool) -> None:
        self.app = app
        self.threads = threads
        self.multiprocess = multiprocess
        self.app_threads = AppThreads(threads)
        self.base_environ = base_environ(threads > 1, multiprocess, FileWrapper)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # Config gives a WSGI app no lifespan, no WebSocket
            raise RuntimeError(f"a WSGI app serves HTTP only, not {scope['type']!r}")
        body = await receive_body(receive)
        if body is None:
            return  # the client went away before the app was called
        extensions = scope.get("extensions") or {}
        pathsend = PATHSEND in extensions and TLS not in extensions
        environ = build_environ(scope, body, body.length, self.base_environ)
        loop = asyncio.get_running_loop()
        responder = Responder(environ, send, loop, pathsend, on_loop=not self.threads)
        try:
            await self.respond(responder, body)
        finally:
            responder.release()

    async def respond(self, responder: Responder, body: WSGIInput) -> None:
        """The app's call (on a thread, or with --threads 0 here), then the messages
        that complete its response."""
        try:
            if self.threads:
                await self.app_threads.call(self.call, responder, body)
            else:
                self.call(responder, body)
        except Exception:
            await responder.send_last()  # a response made whole before close() raised
            raise
        finally:
            responder.abandon()
        await responder.send_last()

    def call(self, responder: Responder, body: WSGIInput) -> None:
        """On an app thread: the app's call, then its body is dropped and what it left
        unfinished in wsgi.errors is logged."""
        errors = responder.environ["wsgi.errors"]
        try:
            responder.run(self.app)
        finally:
            body.close()
            errors.flush()
