"""The app tests/test_tls_extension.py runs under fastserve: it answers every HTTP
request, and every WebSocket (accepted, one text message, closed), with the keys of
scope["extensions"] and the `tls` extension (JSON, which it already is)."""

from __future__ import annotations

import json


def describe_extensions(scope) -> bytes:
    extensions = scope["extensions"]
    return json.dumps({"keys": sorted(extensions), "tls": extensions.get("tls")}).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = describe_extensions(scope)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
