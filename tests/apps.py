"""ASGI apps that the HTTP conformance tests (tests/test_http_*.py) run under fastserve.

They are plain ASGI 3 callables, loaded by the server from the command line
(`python -m fastserve tests.apps:app ...`), so they run in the server process; a
test learns what an app saw either from the response or, when the client is gone
by then, from `EVENTS` through the `/_/events?token=...` route of `app`.

- `app`              the router most tests use: `/_/<name>` routes below, anything
                     else echoes the request as JSON; lifespan with state.
- `echo`             only the echo, for any path.
- `hello`            "Hello, world!".
- `task_factory`     `app`, with a task factory set on the loop at startup.
- `eager_task_factory` `app`, with a factory of eager Tasks (3.12+) set at startup.
- `failing_startup`  lifespan startup fails (the server must exit with code 3).

The Starlette app of the same tests is tests/apps_starlette.py's `app` (it records
into this module's `EVENTS`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import hashlib
import json
import os
import time
import weakref
from typing import Any, Optional
from urllib.parse import parse_qsl

# What apps record for tests to fetch later, by a token the test chooses.
EVENTS: dict[str, list] = {}

# Set by `/_/ctxvar`; a request must never see a value set by another request.
REQUEST_VALUE: contextvars.ContextVar[str] = contextvars.ContextVar("request_value")

LIFESPAN_STATE = {"started": True, "token": "lifespan-ok"}
SHUTDOWN_FILE_ENV = "FASTSERVE_TEST_SHUTDOWN_FILE"


def record(token: str, value: Any) -> None:
    EVENTS.setdefault(token, []).append(value)


class Disconnected(Exception):
    """The client went away while the app was reading the body."""


async def read_body(receive) -> tuple[bytes, int]:
    """The whole request body and the number of `http.request` messages it came in."""
    body = bytearray()
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        messages += 1
        if not message.get("more_body", False):
            return bytes(body), messages


async def respond(send, status=200, body=b"", headers=None, content_type=b"text/plain"):
    if isinstance(body, str):
        body = body.encode()
    head = [(b"content-type", content_type)]
    if headers:
        head.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, obj, status=200, headers=None):
    body = json.dumps(obj, default=repr).encode()
    await respond(send, status, body, headers, b"application/json")


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def describe(scope, body: bytes, messages: int) -> dict:
    """The request as the app saw it, JSON-able (bytes as latin-1 text)."""
    return {
        "type": scope["type"],
        "asgi": scope.get("asgi"),
        "http_version": scope.get("http_version"),
        "method": scope.get("method"),
        "scheme": scope.get("scheme"),
        "path": scope.get("path"),
        "raw_path": _plain(scope.get("raw_path")),
        "query_string": _plain(scope.get("query_string")),
        "root_path": scope.get("root_path"),
        "headers": [[_plain(name), _plain(value)] for name, value in scope.get("headers", [])],
        "header_types": sorted(
            {
                f"{type(name).__name__},{type(value).__name__}"
                for name, value in scope.get("headers", [])
            }
        ),
        "client": _plain(scope.get("client")),
        "server": _plain(scope.get("server")),
        "state": _plain(scope.get("state")),
        "keys": sorted(scope),
        "types": {key: type(value).__name__ for key, value in scope.items()},
        "body": body.decode("latin-1") if len(body) <= 1 << 20 else None,
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_messages": messages,
    }


async def lifespan(scope, receive, send, state: Optional[dict] = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if state is not None and "state" in scope:
                scope["state"].update(state)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            path = os.environ.get(SHUTDOWN_FILE_ENV)
            if path:
                with open(path, "w") as f:
                    f.write("shutdown complete")
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- echo / hello -------------------------------------------------------------------


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send, LIFESPAN_STATE)
    body, messages = await read_body(receive)
    await respond_json(send, describe(scope, body, messages))


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    await respond(send, 200, b"Hello, world!", [(b"content-length", b"13")])


# -- routes of `app` ------------------------------------------------------------------
# Each takes (scope, receive, send, query: dict[str, str]).


async def route_hello(scope, receive, send, query):
    await respond(send, 200, b"Hello, world!", [(b"content-length", b"13")])


async def route_nocl(scope, receive, send, query):
    """One body message, no content-length: the server must add it."""
    await respond(send, 200, query.get("body", "no content-length"))


async def route_stream(scope, receive, send, query):
    """Body in several messages (`parts`, comma-separated, may be empty), then an
    empty final message. `cl=1` declares the content-length up front, `te=1` sends
    the app's own `transfer-encoding: chunked` header."""
    parts = [part.encode() for part in query.get("parts", "one,two,three").split(",")]
    headers = [(b"content-type", b"text/plain")]
    if query.get("cl"):
        headers.append((b"content-length", str(sum(map(len, parts))).encode()))
    if query.get("te"):
        headers.append((b"transfer-encoding", b"chunked"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for part in parts:
        await send({"type": "http.response.body", "body": part, "more_body": True})
        await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def pattern_chunk(index: int, size: int) -> bytes:
    return bytes([index % 251]) * size


async def route_big_stream(scope, receive, send, query):
    """`size` bytes in `chunk`-sized messages (chunk i filled with byte i % 251);
    records the longest time one send() awaited (flow control)."""
    size = int(query.get("size", 1 << 20))
    chunk = int(query.get("chunk", 65536))
    token = query.get("token", "")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    longest = 0.0
    index = sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        started = time.monotonic()
        await send(
            {"type": "http.response.body", "body": pattern_chunk(index, n), "more_body": True}
        )
        longest = max(longest, time.monotonic() - started)
        sent += n
        index += 1
    await send({"type": "http.response.body", "body": b""})
    record(token, {"longest_send_wait": longest, "sent": sent})


async def route_cl_long(scope, receive, send, query):
    """Declares `declared` bytes, sends `send` bytes (in two messages if `split`)."""
    declared = int(query.get("declared", 10))
    size = int(query.get("send", 20))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(declared).encode())],
        }
    )
    body = b"x" * size
    try:
        if query.get("split"):
            half = declared // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            await send({"type": "http.response.body", "body": body[half:]})
        else:
            await send({"type": "http.response.body", "body": body})
    except Exception as exc:
        record(query.get("token", ""), type(exc).__name__)
        raise


async def route_cl_short(scope, receive, send, query):
    declared = int(query.get("declared", 10))
    size = int(query.get("send", 5))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(declared).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"x" * size})


async def route_raise_before(scope, receive, send, query):
    raise RuntimeError(f"boom-before-start-{query.get('token', '')}")


async def route_raise_after(scope, receive, send, query):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0.05)
    raise RuntimeError(f"boom-after-start-{query.get('token', '')}")


async def route_return_early(scope, receive, send, query):
    return None


async def route_return_after_start(scope, receive, send, query):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


async def route_slow(scope, receive, send, query):
    started = time.monotonic()
    token = query.get("token")
    if token:
        record(token, "started")
    await asyncio.sleep(float(query.get("delay", 1)))
    await respond_json(send, {"start": started, "end": time.monotonic(), "path": scope["path"]})


async def route_timed(scope, receive, send, query):
    """Like echo, with the app's start/end times (pipelining order checks)."""
    started = time.monotonic()
    body, messages = await read_body(receive)
    await asyncio.sleep(float(query.get("delay", 0)))
    result = describe(scope, body, messages)
    result.update(start=started, end=time.monotonic())
    await respond_json(send, result)


async def route_noread(scope, receive, send, query):
    """Answers without reading the request body."""
    await respond(send, 200, b"did not read the body")


async def route_status(scope, receive, send, query):
    code = int(query.get("code", 200))
    body = query.get("body", "").encode()
    headers = [(b"x-status", str(code).encode())]
    if query.get("cl"):
        headers.append((b"content-length", query["cl"].encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def route_ctxvar(scope, receive, send, query):
    before = REQUEST_VALUE.get(None)
    REQUEST_VALUE.set(query.get("value", ""))
    await asyncio.sleep(0.01)
    body, _ = await read_body(receive)
    await respond_json(send, {"before": before, "after": REQUEST_VALUE.get(None)})


async def route_gc(scope, receive, send, query):
    """The number of objects out of the cyclic GC's reach (gc.freeze)."""
    await respond_json(send, {"frozen": gc.get_freeze_count()})


async def route_task(scope, receive, send, query):
    task = asyncio.current_task()
    await respond_json(send, {"name": task.get_name(), "factory": task in FACTORY_TASKS})


async def route_wait_disconnect(scope, receive, send, query):
    """Reads the body, then waits for the next message (the client going away).
    `announce=1`: records "reading" first (the app runs: the server parsed the head)."""
    token = query.get("token", "")
    if query.get("announce"):
        record(token, "reading")
    try:
        await read_body(receive)
    except Disconnected:
        record(token, "http.disconnect (while reading body)")
        return
    record(token, "waiting")
    try:
        message = await asyncio.wait_for(receive(), 8)
    except asyncio.TimeoutError:
        record(token, "timeout")
        return
    record(token, message["type"])


async def route_receive_after_response(scope, receive, send, query):
    token = query.get("token", "")
    await read_body(receive)
    await respond(send, 200, b"done")
    try:
        message = await asyncio.wait_for(receive(), 3)
    except asyncio.TimeoutError:
        record(token, "timeout")
        return
    record(token, message["type"])


async def route_events(scope, receive, send, query):
    await respond_json(send, EVENTS.get(query.get("token", ""), []))


async def route_upload(scope, receive, send, query):
    """Reads the body message by message; answers its length and sha256."""
    digest = hashlib.sha256()
    length = messages = largest = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        digest.update(chunk)
        length += len(chunk)
        largest = max(largest, len(chunk))
        messages += 1
        if not message.get("more_body", False):
            break
    await respond_json(
        send,
        {
            "length": length,
            "sha256": digest.hexdigest(),
            "messages": messages,
            "largest_message": largest,
        },
    )


async def route_slow_upload(scope, receive, send, query):
    """Reads one message, then stops reading for `pause` seconds."""
    token = query.get("token", "")
    message = await receive()
    record(token, "first message")
    await asyncio.sleep(float(query.get("pause", 3)))
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            record(token, "http.disconnect")
            return
    await respond(send, 200, b"read everything")


async def route_invalid(scope, receive, send, query):
    """Sends an invalid ASGI message (`kind`); records what send() raised."""
    kind = query.get("kind", "body-before-start")
    token = query.get("token", "")
    messages = {
        "body-before-start": [{"type": "http.response.body", "body": b"too early"}],
        "unknown-type": [{"type": "http.response.bogus"}],
        "bad-status": [{"type": "http.response.start", "status": "200", "headers": []}],
        "bad-header-value": [
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-injected", b"a\r\nset-cookie: evil=1")],
            }
        ],
        "bad-header-name": [
            {"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"value")]}
        ],
        "str-header": [
            {"type": "http.response.start", "status": 200, "headers": [("x-str", "value")]}
        ],
        "str-body": [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": "text, not bytes"},
        ],
        "start-twice": [
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.start", "status": 200, "headers": []},
        ],
    }[kind]
    try:
        for message in messages:
            await send(message)
    except Exception as exc:
        record(token, type(exc).__name__)
        raise
    record(token, "no error")


async def route_state_mutate(scope, receive, send, query):
    before = dict(scope.get("state", {}))
    scope["state"]["mutated"] = True
    await respond_json(send, before)


async def route_close(scope, receive, send, query):
    await respond(send, 200, b"closing", [(b"connection", b"close")])


async def route_headers(scope, receive, send, query):
    """Response headers as given in the query (name=value pairs, in order)."""
    headers = [(name.encode(), value.encode()) for name, value in query.items()]
    await respond(send, 200, b"headers", headers)


async def route_pathsend(scope, receive, send, query):
    """The file at `path` by http.response.pathsend; `cl`: a Content-Length to
    declare; `token`: record the extensions seen and what send() raised."""
    token = query.get("token", "")
    record(token, sorted(scope.get("extensions", {})))
    headers = [(b"content-type", b"application/octet-stream")]
    if "cl" in query:
        headers.append((b"content-length", query["cl"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        await send({"type": "http.response.pathsend", "path": query["path"]})
    except Exception as exc:
        record(token, type(exc).__name__)
        raise
    record(token, "sent")


ROUTES = {
    "hello": route_hello,
    "nocl": route_nocl,
    "stream": route_stream,
    "big-stream": route_big_stream,
    "cl-long": route_cl_long,
    "cl-short": route_cl_short,
    "raise-before": route_raise_before,
    "raise-after": route_raise_after,
    "return-early": route_return_early,
    "return-after-start": route_return_after_start,
    "slow": route_slow,
    "timed": route_timed,
    "noread": route_noread,
    "status": route_status,
    "ctxvar": route_ctxvar,
    "task": route_task,
    "gc": route_gc,
    "wait-disconnect": route_wait_disconnect,
    "receive-after-response": route_receive_after_response,
    "events": route_events,
    "upload": route_upload,
    "slow-upload": route_slow_upload,
    "invalid": route_invalid,
    "state-mutate": route_state_mutate,
    "close": route_close,
    "headers": route_headers,
    "pathsend": route_pathsend,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send, LIFESPAN_STATE)
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if path.startswith("/_/"):
        route = ROUTES.get(path[3:])
        if route is not None:
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
            return await route(scope, receive, send, query)
    return await echo(scope, receive, send)


# The Tasks made by the factory `task_factory` sets: the server makes the Task of a
# request through the loop's task factory when there is one.
FACTORY_TASKS: weakref.WeakSet = weakref.WeakSet()


def _recording_task_factory(loop, coro, **kwargs):
    task = asyncio.Task(coro, loop=loop, **kwargs)
    FACTORY_TASKS.add(task)
    return task


async def task_factory(scope, receive, send):
    if scope["type"] == "lifespan":
        asyncio.get_running_loop().set_task_factory(_recording_task_factory)
    return await app(scope, receive, send)


async def eager_task_factory(scope, receive, send):
    """`app`, with a factory of eager Tasks (Python 3.12+), as `asyncio.eager_task_factory`:
    a Task's first step runs at once, inside the call that makes it."""
    if scope["type"] == "lifespan":
        factory = functools.partial(_recording_task_factory, eager_start=True)
        asyncio.get_running_loop().set_task_factory(factory)
    return await app(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "startup failed on purpose"})
        return
    await respond(send, 200, b"should never run")
