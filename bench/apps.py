"""Raw ASGI apps for the benchmarks: no framework, so the server is what is measured.

Every server in the comparison runs exactly these apps (`bench.apps:hello` etc.).
All answers carry content-type and content-length, so no server has to fall back to
chunked encoding, except `stream`'s, which is chunked on purpose.

The FastAPI and Starlette apps (`fastapi_app`, `file_app`) are built on first access
(module `__getattr__`), so importing this module stays cheap and needs neither.
"""

import json
import tempfile
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

HELLO_BODY = b"Hello, world!"
_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(HELLO_BODY)),
    ],
}
_HELLO_BODY_MSG = {"type": "http.response.body", "body": HELLO_BODY}


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


def _bytes_app(size: int):
    """An app that answers every GET with `size` bytes of b"x", built once."""
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"%d" % size),
        ],
    }
    body = {"type": "http.response.body", "body": b"x" * size}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await _lifespan(receive, send)
        await send(start)
        await send(body)

    app.__doc__ = f"GET → 200 with {size} bytes of b'x'."
    return app


BYTES_64K_SIZE = 64 * KIB
BYTES_1M_SIZE = MIB
bytes_64k = _bytes_app(BYTES_64K_SIZE)  # the 64k workload
bytes_1m = _bytes_app(BYTES_1M_SIZE)  # the 1m workload

STREAM_CHUNKS = 100
STREAM_CHUNK = b"x" * KIB
_STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/octet-stream")],  # no length: chunked
}
_STREAM_CHUNK_MSG = {"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True}


async def stream(scope, receive, send):
    """GET → 200, chunked: STREAM_CHUNKS sends of 1 KiB, then an empty last one (the
    stream workload)."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await send(_STREAM_START)
    for _ in range(STREAM_CHUNKS):
        await send(_STREAM_CHUNK_MSG)
    await send(_EMPTY_BODY)


FASTAPI_PATH = "/items/42"  # the fastapi workload's request; 42 is the path parameter
FILE_PATH = "/file"  # the file workload's request (and flask-file's)
FLASK_JSON_PATH = "/json"  # the flask-json workload's request
# The file workload's file: 1 MiB of a repeating byte pattern, written on first use.
FILE_CONTENT = bytes(range(256)) * (MIB // 256)
BENCH_FILE = Path(tempfile.gettempdir()) / "fastserve-bench-1mib.bin"


def bench_file() -> Path:
    """BENCH_FILE, written when it is missing or wrong (the file workloads, ASGI and WSGI)."""
    if not BENCH_FILE.is_file() or BENCH_FILE.read_bytes() != FILE_CONTENT:
        BENCH_FILE.write_bytes(FILE_CONTENT)
    return BENCH_FILE


def _make_fastapi_app():
    """FastAPI with a path parameter and a Pydantic response model (the fastapi
    workload): GET /items/{item_id} → the item as JSON."""
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Item(BaseModel):
        id: int
        name: str
        price: float
        tags: list[str]

    app = FastAPI()

    @app.get("/items/{item_id}", response_model=Item)
    async def read_item(item_id: int) -> Item:
        return Item(id=item_id, name="widget", price=9.99, tags=["asgi", "benchmark"])

    return app


def _make_file_app():
    """Starlette: GET /file → FileResponse of BENCH_FILE (the file workload). A server
    offering the http.response.pathsend extension gets the path, not the bytes."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    bench_file()

    async def file(request):
        return FileResponse(BENCH_FILE, media_type="application/octet-stream")

    return Starlette(routes=[Route(FILE_PATH, file)])


_LAZY_APPS = {"fastapi_app": _make_fastapi_app, "file_app": _make_file_app}


def __getattr__(name: str):
    """`bench.apps:fastapi_app` and `bench.apps:file_app`, built on first access."""
    if name not in _LAZY_APPS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = _LAZY_APPS[name]()
    globals()[name] = app
    return app


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
