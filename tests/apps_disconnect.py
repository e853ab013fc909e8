"""ASGI apps for tests/test_http_disconnect.py: `send()` after the client went away.

ASGI spec 2.4 (the scope's spec_version): `send()` on a closed connection raises a
server-specific OSError subclass, fastserve.ClientDisconnected. What an app
saw is recorded in `tests.apps.EVENTS` and read back through `/_/events?token=...`
(the client that would have been told is gone by then).

- `app`            raw ASGI routes under `/_/` (below), plus `/_/events`.
- `starlette_app`  a Starlette StreamingResponse whose generator never ends on its
                   own, wrapped in a middleware that records what the app raised.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qsl

from tests.apps import EVENTS, lifespan, record, respond_json

STREAM_LIMIT = 10.0  # seconds an app streams before it gives up waiting for the close


def _error_record(exc: BaseException) -> dict:
    from fastserve import ClientDisconnected

    return {
        "error": type(exc).__name__,
        "module": type(exc).__module__,
        "oserror": isinstance(exc, OSError),
        "client_disconnected": isinstance(exc, ClientDisconnected),
    }


async def route_stream_forever(scope, receive, send, query):
    """Streams 1 KiB every 10 ms until send() raises (the client closed)."""
    token = query.get("token", "")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    record(token, "streaming")
    deadline = time.monotonic() + STREAM_LIMIT
    try:
        while time.monotonic() < deadline:
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.01)
    except OSError as exc:
        record(token, _error_record(exc))
        raise  # let it reach the server: it must not be logged as an app error
    record(token, "never disconnected")
    await send({"type": "http.response.body", "body": b""})


async def route_send_after_disconnect(scope, receive, send, query):
    """`what=body`: starts the response and sends one body part, then waits for
    http.disconnect and sends another part. `what=start`: waits for
    http.disconnect first, then starts the response. Records each step."""
    token = query.get("token", "")
    what = query.get("what", "body")
    try:
        if what == "body":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"before", "more_body": True})
            record(token, "sent before the disconnect")
        while True:  # the request has no body: the next message is the disconnect
            message = await asyncio.wait_for(receive(), STREAM_LIMIT)
            if message["type"] == "http.disconnect":
                break
        record(token, "http.disconnect")
        if what == "body":
            await send({"type": "http.response.body", "body": b"after", "more_body": True})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
    except asyncio.TimeoutError:
        record(token, "timeout")
        return
    except OSError as exc:
        record(token, _error_record(exc))
        raise
    record(token, "no error")


async def route_complete(scope, receive, send, query):
    """A streamed response sent in full (each message before any disconnect)."""
    token = query.get("token", "")
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except OSError as exc:
        record(token, _error_record(exc))
        raise
    record(token, "completed")


async def route_events(scope, receive, send, query):
    await respond_json(send, EVENTS.get(query.get("token", ""), []))


ROUTES = {
    "stream-forever": route_stream_forever,
    "send-after-disconnect": route_send_after_disconnect,
    "complete": route_complete,
    "events": route_events,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    route = ROUTES.get(path[3:]) if path.startswith("/_/") else None
    if route is None:
        await respond_json(send, {"error": "no such route"}, status=404)
        return
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    await route(scope, receive, send, query)


# -- Starlette ----------------------------------------------------------------------


def _make_starlette_app():
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def stream(request: Request):
        token = request.query_params["token"]

        async def forever():
            count = 0
            deadline = time.monotonic() + STREAM_LIMIT
            try:
                while time.monotonic() < deadline:
                    count += 1
                    if count == 1:
                        record(token, "first chunk")
                    yield b"x" * 1024
                    await anyio.sleep(0.01)
                record(token, "never disconnected")
            finally:
                record(token, {"generator closed after": count})

        return StreamingResponse(forever(), media_type="application/octet-stream")

    async def events(request: Request):
        return JSONResponse(EVENTS.get(request.query_params["token"], []))

    inner = Starlette(routes=[Route("/stream", stream), Route("/events", events)])

    async def recording(scope, receive, send):
        """Records what the Starlette app let out, then lets the server see it."""
        token = ""
        if scope["type"] == "http":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            token = query.get("token", "")
        try:
            await inner(scope, receive, send)
        except BaseException as exc:
            if token:
                cause = exc.__cause__ or exc.__context__
                record(
                    token,
                    {
                        "app raised": type(exc).__name__,
                        "while handling": type(cause).__name__ if cause else None,
                    },
                )
            raise

    return recording


def __getattr__(name: str):
    # Starlette is imported only by the server that runs this app.
    if name == "starlette_app":
        value = _make_starlette_app()
        globals()[name] = value
        return value
    raise AttributeError(name)
