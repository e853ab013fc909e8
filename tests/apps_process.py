"""Small ASGI apps for the process-manager tests (supervisor, reload, gunicorn, nginx).

app            GET /          → "pid=<worker pid>"
               GET /slow?s=N  → waits N seconds (asyncio), then "slow done pid=<pid>"
               GET /block?s=N → blocks the event loop N seconds with time.sleep
               (both first write "<slow|block> request started pid=<pid>" to stderr,
               for tests to wait for)
               GET /scope     → JSON of the scope's client, scheme, http_version
               POST /upload   → JSON {"size": bytes received, "sha256": hex digest}
               GET /download?mb=N → N MiB streamed in 64 KiB chunks, pattern `download_chunk(i)`
               GET /sse       → a Server-Sent Events stream, one event every SSE_PERIOD
               seconds until the client goes; it writes "sse started pid=<pid>" and, when
               receive() gives http.disconnect, "sse got http.disconnect pid=<pid>"
               WebSocket /hold → accepted, then held open by an app that never reads
               (it writes "ws held pid=<pid>", and "ws hold cancelled" when cancelled)
startup_fails  lifespan startup fails (exit 3 in a worker)
startup_blocks lifespan startup blocks the event loop (time.sleep) for an hour
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs

CHUNK = 64 * 1024
SSE_PERIOD = 0.2
# Longer than any test: only the server ends it.
FOREVER = 3600.0


def download_chunk(index: int) -> bytes:
    """The deterministic content of chunk `index` of /download."""
    return bytes([index % 251]) * CHUNK


async def _text(send, body: bytes, status: int = 200, content_type: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _sse(receive, send) -> None:
    """As an SSE library does it: events go out while a task waits in receive() for
    the client to go, then stops the stream."""
    pid = os.getpid()
    sys.stderr.write(f"sse started pid={pid}\n")
    sys.stderr.flush()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )

    async def events() -> None:
        number = 0
        while True:
            number += 1
            body = b"data: %d\n\n" % number
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(SSE_PERIOD)

    sender = asyncio.ensure_future(events())
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
        sys.stderr.write(f"sse got http.disconnect pid={pid}\n")
        sys.stderr.flush()
    finally:
        sender.cancel()


async def _hold_websocket(receive, send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    sys.stderr.write(f"ws held pid={os.getpid()}\n")
    sys.stderr.flush()
    try:
        await asyncio.sleep(FOREVER)
    except asyncio.CancelledError:
        sys.stderr.write("ws hold cancelled\n")
        sys.stderr.flush()
        raise


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _hold_websocket(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    seconds = float(query.get("s", ["1"])[0])
    pid = os.getpid()
    if path in ("/slow", "/block"):
        sys.stderr.write(f"{path[1:]} request started pid={pid}\n")
        sys.stderr.flush()
    if path == "/slow":
        await asyncio.sleep(seconds)
        await _text(send, b"slow done pid=%d" % pid)
    elif path == "/block":
        time.sleep(seconds)
        await _text(send, b"unblocked pid=%d" % pid)
    elif path == "/scope":
        data = {
            "client": scope.get("client"),
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "pid": pid,
        }
        await _text(send, json.dumps(data).encode(), content_type=b"application/json")
    elif path == "/upload":
        digest = hashlib.sha256()
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            more = message.get("more_body", False)
        data = {"size": size, "sha256": digest.hexdigest()}
        await _text(send, json.dumps(data).encode(), content_type=b"application/json")
    elif path == "/sse":
        await _sse(receive, send)
    elif path == "/download":
        chunks = int(float(query.get("mb", ["1"])[0]) * 1024 * 1024) // CHUNK
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for index in range(chunks):
            await send(
                {"type": "http.response.body", "body": download_chunk(index), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
    else:
        await _text(send, b"pid=%d" % pid)


async def startup_fails(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send(
                {"type": "lifespan.startup.failed", "message": "the database is unreachable"}
            )
        return
    await _text(send, b"never")


async def startup_blocks(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        time.sleep(FOREVER)  # as a synchronous client waiting on a server that is down
    await _text(send, b"never")
