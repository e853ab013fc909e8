"""Raw ASGI apps that tests/test_websockets.py runs under fastserve (in the server
process). `app` routes a websocket by its path (the table `ROUTES`); each route
reads what it needs from the query string. Over plain HTTP, `app` answers
`/_/events?token=T` with what routes recorded under T (JSON), and `/_/go?token=T`
releases the route waiting under T.

Routes:
- `/echo`          accept, echo every message (text as text, bytes as bytes); on
                   disconnect, record its code and reason.
- `/subprotocol`   accept with the last subprotocol the client offered, and a header
                   `x-extra: yes`; then echo.
- `/close`         accept, then close with `code` and `reason` from the query.
- `/reject`        close before accepting (403).
- `/http-response` answer with an HTTP 418 (`websocket.http.response`), the body in
                   two messages.
- `/raise-before`  raise before accepting (500); `/raise-after`: after accepting (1011).
- `/invalid-message` send a `websocket.send` before accepting (an ASGI error: 500).
- `/stream`        accept, send `count` binary messages of `size` bytes (message i
                   starts with i as 8 bytes), recording the number sent so far.
- `/wait-then-read` accept, wait for `/_/go`, then read `count` text messages
                   ("<index>:<padding>") and answer with how many came and whether in
                   order; then echo.
- `/send-after-disconnect` accept, read until disconnected, then send: record the
                   error's class name and whether it is an OSError.
- `/shutdown-watch` accept and send "ready" (or, with `accept=no`, print `WAITING
                   <token>`), then print `DISCONNECT <token> <code>` when disconnected.
- `/return-without-accept` return without answering the handshake (500).
- `/scope`         accept, send the scope as JSON text (bytes as latin-1 strings), close.
- `/starlette/echo` a Starlette WebSocket endpoint: echo; the text "close" closes
                   with 4002; on disconnect, record its code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import parse_qsl

EVENTS: dict[str, list] = {}
GO: dict[str, asyncio.Event] = {}
INDEX_BYTES = 8  # /stream: each message starts with its index, big-endian


def record(token: str, value: Any) -> None:
    EVENTS.setdefault(token, []).append(value)


def go_event(token: str) -> asyncio.Event:
    return GO.setdefault(token, asyncio.Event())


async def echo_until_disconnect(receive, send, token: str) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record(token, {"code": message["code"], "reason": message.get("reason", "")})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def route_echo(scope, receive, send, query):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await echo_until_disconnect(receive, send, query.get("token", ""))


async def route_subprotocol(scope, receive, send, query):
    await receive()
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": scope["subprotocols"][-1],
            "headers": [(b"x-extra", b"yes")],
        }
    )
    await echo_until_disconnect(receive, send, query.get("token", ""))


async def route_close(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    await send(
        {"type": "websocket.close", "code": int(query["code"]), "reason": query.get("reason", "")}
    )


async def route_reject(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.close"})


async def route_http_response(scope, receive, send, query):
    await receive()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 418,
            "headers": [(b"content-type", b"text/plain"), (b"x-teapot", b"short and stout")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": b"I'm a ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"teapot"})


async def route_raise_before(scope, receive, send, query):
    await receive()
    raise RuntimeError(f"boom-before-accept {query['token']}")


async def route_raise_after(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    raise RuntimeError(f"boom-after-accept {query['token']}")


async def route_invalid_message(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.send", "text": query["token"]})


async def route_stream(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    token = query["token"]
    size = int(query["size"])
    filler = bytes(size - INDEX_BYTES)
    for index in range(int(query["count"])):
        await send({"type": "websocket.send", "bytes": index.to_bytes(INDEX_BYTES, "big") + filler})
        EVENTS[token] = [index + 1]
    await send({"type": "websocket.close"})


async def route_wait_then_read(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    await go_event(query["token"]).wait()
    indexes = []
    for _ in range(int(query["count"])):
        message = await receive()
        if message["type"] != "websocket.receive":
            break
        indexes.append(int(message["text"].partition(":")[0]))
    in_order = indexes == list(range(len(indexes)))
    await send({"type": "websocket.send", "text": json.dumps([len(indexes), in_order])})
    await echo_until_disconnect(receive, send, query["token"])


async def route_send_after_disconnect(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except Exception as exc:
        record(query["token"], [type(exc).__name__, isinstance(exc, OSError)])
    else:
        record(query["token"], ["no error", False])


async def route_shutdown_watch(scope, receive, send, query):
    await receive()
    if query.get("accept") == "no":
        print(f"WAITING {query['token']}", file=sys.stderr, flush=True)
    else:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "ready"})
    message = await receive()
    print(f"DISCONNECT {query['token']} {message.get('code')}", file=sys.stderr, flush=True)


async def route_return_without_accept(scope, receive, send, query):
    await receive()


async def starlette_echo(websocket) -> None:
    """Starlette's WebSocket API over fastserve: echo text and bytes; the text
    "close" closes with 4002."""
    from starlette.websockets import WebSocketDisconnect

    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message["code"])
            if message.get("text") == "close":
                await websocket.close(code=4002, reason="starlette bye")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as exc:
        record(websocket.query_params.get("token", ""), {"code": exc.code, "reason": ""})


def make_starlette_app():
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    return Starlette(routes=[WebSocketRoute("/starlette/echo", starlette_echo)])


async def route_scope(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    shown = {
        key: value.decode("latin-1") if isinstance(value, bytes) else value
        for key, value in scope.items()
        if key != "headers"
    }
    shown["headers"] = [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
    ]
    await send({"type": "websocket.send", "text": json.dumps(shown)})
    await send({"type": "websocket.close"})


async def route_task(scope, receive, send, query):
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": asyncio.current_task().get_name()})
    await send({"type": "websocket.close"})


ROUTES = {
    "/echo": route_echo,
    "/task": route_task,
    "/scope": route_scope,
    "/subprotocol": route_subprotocol,
    "/close": route_close,
    "/reject": route_reject,
    "/http-response": route_http_response,
    "/raise-before": route_raise_before,
    "/raise-after": route_raise_after,
    "/invalid-message": route_invalid_message,
    "/stream": route_stream,
    "/wait-then-read": route_wait_then_read,
    "/shutdown-watch": route_shutdown_watch,
    "/send-after-disconnect": route_send_after_disconnect,
    "/return-without-accept": route_return_without_accept,
    "/starlette/echo": make_starlette_app(),
}


async def http(scope, receive, send, query):
    """`/_/events` and `/_/go` for the tests; 404 for anything else."""
    token = query.get("token", "")
    if scope["path"] == "/_/events":
        body = json.dumps(EVENTS.get(token, [])).encode()
        status = 200
    elif scope["path"] == "/_/go":
        go_event(token).set()
        body, status = b"go", 200
    else:
        body, status = b"not found", 404
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        scope["state"]["from_lifespan"] = "yes"
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    if scope["type"] == "http":
        await http(scope, receive, send, query)
        return
    path = scope["path"]
    if scope["root_path"] and path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]) :]
    route = ROUTES[path]
    if path.startswith("/starlette/"):
        await route(scope, receive, send)
    else:
        await route(scope, receive, send, query)
