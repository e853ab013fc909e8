"""Apps for test_uvicorn_compat.py: ASGI 2 apps (class and function), a WSGI app, and
an app that reports its context and loop."""

import asyncio
import contextvars
import json

# Set when this module is imported, in the server's context: a request sees it,
# unless --reset-contextvars gives it an empty context.
SET_AT_IMPORT = contextvars.ContextVar("set_at_import")
SET_AT_IMPORT.set("set at import")

LIFESPAN = {"started": False}


async def _json(send, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            LIFESPAN["started"] = True
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _serve(scope, receive, send) -> None:
    """Answer as an ASGI 2 instance would: what the scope and the lifespan said."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await receive()
        payload = {"asgi": scope["asgi"]["version"], "lifespan": LIFESPAN["started"]}
        await _json(send, payload)
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        reply = f"{scope['asgi']['version']}:{message.get('text')}"
        await send({"type": "websocket.send", "text": reply})
        await send({"type": "websocket.close", "code": 1000})


class ASGI2Class:
    """ASGI 2, the class form: instantiated with the scope, then called."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await _serve(self.scope, receive, send)


def asgi2_function(scope):
    """ASGI 2, the function form: returns the instance for the scope."""

    async def instance(receive, send):
        await _serve(scope, receive, send)

    return instance


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"a WSGI app"]


async def context(scope, receive, send):
    """What a request's (or a WebSocket's) context and loop hold."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(SET_AT_IMPORT.get(None))})
        await send({"type": "websocket.close", "code": 1000})
        return
    if scope["type"] != "http":
        return
    loop = asyncio.get_running_loop()
    payload = {
        "set_at_import": SET_AT_IMPORT.get(None),
        "loop": type(loop).__module__ + "." + type(loop).__name__,
        "client": scope["client"][0],
    }
    await _json(send, payload)


class CustomLoop(asyncio.SelectorEventLoop):
    """The loop `--loop tests.apps_uvicorn:new_custom_loop` makes."""


def new_custom_loop():
    return CustomLoop()
