"""The app the metrics and worker-memory tests run (`tests.apps_metrics:app`).

- `/status/CODE`  answers CODE with the body "ok" (2 bytes).
- `/fail`         raises before responding (the server answers 500).
- `/pid`          the worker's pid.
- `/block`        blocks the event loop (and so the heartbeat) for a minute.
- `/allocate?mib=N`  allocates N MiB, touched so that it is resident, and keeps it.
- a WebSocket: accepted, then echoed until the client leaves.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs

MIB = 1024 * 1024
BLOCK_SECONDS = 60
# What /allocate keeps alive for the life of the process.
KEPT: list = []


async def respond(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo_websocket(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        else:
            return


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await echo_websocket(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/status/"):
        await respond(send, int(path.rsplit("/", 1)[1]), b"ok")
    elif path == "/fail":
        raise RuntimeError("this route fails (tests.apps_metrics)")
    elif path == "/pid":
        await respond(send, 200, str(os.getpid()).encode())
    elif path == "/block":
        time.sleep(BLOCK_SECONDS)
    elif path == "/allocate":
        mib = int(parse_qs(scope["query_string"].decode())["mib"][0])
        KEPT.append(b"\x01" * (mib * MIB))
        await respond(send, 200, b"allocated")
    else:
        await respond(send, 404, b"not found")
