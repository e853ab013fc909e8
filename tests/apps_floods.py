"""The ASGI app of tests/test_floods.py and tests/test_soak.py (floods and slow clients).

Small answers, so that tens of thousands of them cost the test little; what the app
did while a client was away is counted under a token the test chooses and read back
through `/_/counts?token=...`.

- `/_/stream?size=N&chunk=M&token=T`  N bytes in M-byte messages (message i filled
                     with byte i % 251, Content-Length declared); counts the bytes
                     sent so far under T ("sent"), and "done" at the end.
- `/_/hold?token=T`  counts "held" under T, then waits until `/_/release?token=T`.
- `/_/upload?token=T`  counts "started" under T, then reads the whole body (and
                     answers nothing when the client goes away meanwhile).
- `/_/counts?token=T`  the counts of T, as JSON.
- `/_/census`        asyncio tasks and fastserve protocol objects alive, as JSON.
- anything else      200 with the request's path as the body.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter, defaultdict
from urllib.parse import parse_qsl

from tests.apps import Disconnected, lifespan, pattern_chunk, read_body

COUNTS: defaultdict[str, Counter] = defaultdict(Counter)
RELEASES: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


async def respond(send, body: bytes, content_type: bytes = b"text/plain") -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def route_stream(receive, send, query, counts: Counter) -> None:
    size = int(query["size"])
    chunk = int(query.get("chunk", 65536))
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"%d" % size),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    index = sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        await send(
            {"type": "http.response.body", "body": pattern_chunk(index, n), "more_body": True}
        )
        sent += n
        index += 1
        counts["sent"] = sent
    await send({"type": "http.response.body", "body": b""})
    counts["done"] += 1


async def route_hold(receive, send, query, counts: Counter) -> None:
    counts["held"] += 1
    await RELEASES[query["token"]].wait()
    await respond(send, b"released")


async def route_release(receive, send, query, counts: Counter) -> None:
    RELEASES[query["token"]].set()
    await respond(send, b"released")


async def route_upload(receive, send, query, counts: Counter) -> None:
    counts["started"] += 1
    try:
        body, _ = await read_body(receive)
    except Disconnected:
        return  # the client went away: nothing to answer
    await respond(send, b"%d" % len(body))


def is_protocol(cls: type) -> bool:
    module = cls.__module__  # (a descriptor on a few builtin types)
    return (
        isinstance(module, str)
        and module.startswith("fastserve")
        and cls.__name__.endswith("Protocol")
    )


async def route_census(receive, send, query, counts: Counter) -> None:
    """What the server process holds: asyncio tasks, and fastserve protocol objects
    (connections), counted after a garbage collection."""
    gc.collect()
    protocols = sum(1 for obj in gc.get_objects() if is_protocol(type(obj)))
    census = {"tasks": len(asyncio.all_tasks()), "protocols": protocols}
    await respond(send, json.dumps(census).encode(), b"application/json")


async def route_counts(receive, send, query, counts: Counter) -> None:
    await respond(send, json.dumps(counts).encode(), b"application/json")


ROUTES = {
    "stream": route_stream,
    "hold": route_hold,
    "release": route_release,
    "upload": route_upload,
    "counts": route_counts,
    "census": route_census,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    route = ROUTES.get(path[3:]) if path.startswith("/_/") else None
    if route is None:
        await respond(send, scope["raw_path"])
        return
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    await route(receive, send, query, COUNTS[query.get("token", "")])
