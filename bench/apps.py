"""Raw ASGI apps for the benchmarks: no framework, so the server is what is measured.

Every server in the comparison runs exactly these apps (`bench.apps:hello` etc.).
All answers carry content-type and content-length, so no server has to fall back to
chunked encoding.
"""

import json

_HELLO_BODY = b"Hello, world!"
_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(_HELLO_BODY)),
    ],
}
_HELLO_BODY_MSG = {"type": "http.response.body", "body": _HELLO_BODY}


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    """GET → 200 "Hello, world!" (the hello and pipeline workloads)."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await send(_HELLO_START)
    await send(_HELLO_BODY_MSG)


# ~1 KiB once serialised; json.dumps runs on every request, as in a real API.
JSON_DOC = {
    "id": 12345,
    "name": "fastserve benchmark document",
    "active": True,
    "score": 98.6,
    "tags": ["asgi", "http", "benchmark", "json", "llhttp", "cython"],
    "owner": {"id": 7, "login": "octocat", "email": "octocat@example.com", "admin": False},
    "items": [
        {"sku": "SKU-%04d" % i, "qty": i, "price": round(i * 1.25, 2), "note": "item number %d" % i}
        for i in range(11)
    ],
}


async def json_app(scope, receive, send):
    """GET → 200 application/json, ~1 KiB (the json workload)."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    body = json.dumps(JSON_DOC).encode()
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


async def echo(scope, receive, send):
    """POST → 200 with the request body echoed back (the post workload)."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    chunks = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_WS_ACCEPT = {"type": "websocket.accept"}
_WS_ONLY = {
    "type": "http.response.start",
    "status": 426,
    "headers": [
        (b"upgrade", b"websocket"),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"0"),
    ],
}
_EMPTY_BODY = {"type": "http.response.body", "body": b""}


async def ws_echo(scope, receive, send):
    """WebSocket: accept, then echo every message back as it came, text as text and
    bytes as bytes (bench/ws_bench.py). A plain HTTP request gets 426."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] == "http":
        await send(_WS_ONLY)
        await send(_EMPTY_BODY)
        return
    await receive()  # websocket.connect
    await send(_WS_ACCEPT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":  # websocket.disconnect
            return
        text = message.get("text")
        if text is None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": text})
