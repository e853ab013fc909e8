"""A raw ASGI app for the WebSocket deployment tests (tests/test_websockets_deploy.py).

app  WebSocket (any path): accept, send a greeting, then echo every message
     back as it came (text as text, bytes as bytes). The greeting is JSON:
     {"pid": the worker's pid, "scheme": scope["scheme"], "path": scope["path"]}.
     On websocket.disconnect it writes "ws disconnect code=<code> pid=<pid>"
     to stderr, for tests to wait for.
     HTTP GET (any path): "pid=<pid>", as tests/apps_process.py does.
"""

from __future__ import annotations

import json
import os
import sys


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(send) -> None:
    body = b"pid=%d" % os.getpid()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _echo(scope, receive, send) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect", message
    await send({"type": "websocket.accept"})
    greeting = {"pid": os.getpid(), "scheme": scope["scheme"], "path": scope["path"]}
    await send({"type": "websocket.send", "text": json.dumps(greeting)})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            sys.stderr.write(f"ws disconnect code={message['code']} pid={os.getpid()}\n")
            sys.stderr.flush()
            return
        text = message.get("text")
        if text is None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": text})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(send)
    else:
        await _echo(scope, receive, send)
