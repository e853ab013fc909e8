"""The Starlette app of the framework tests (test_http_starlette.py, the pathsend
tests): `app` (lifespan state, streaming, background tasks, disconnects, a task group,
JSON, FileResponse behind a middleware that records the pathsend extension).
Imported only by the server that runs it."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    StreamingResponse,
)
from starlette.routing import Route

from tests.apps import EVENTS, record


class RecordSends:
    """For `/file`: records the scope's extensions and the types of the
    messages the app sends, under the request's `token` query parameter."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        token = query.get("token")
        if scope["type"] != "http" or scope["path"] != "/file" or token is None:
            return await self.app(scope, receive, send)
        record(token, sorted(scope.get("extensions", {})))

        async def recording_send(message):
            record(token, message["type"])
            await send(message)

        return await self.app(scope, receive, recording_send)


@contextlib.asynccontextmanager
async def starlette_lifespan(_app):
    yield {"greeting": "hello from lifespan"}


async def index(request: Request):
    return JSONResponse(
        {
            "greeting": request.state.greeting,
            "path": request.url.path,
            "scheme": request.url.scheme,
        }
    )


async def stream(request: Request):
    async def numbers():
        for i in range(5):
            yield f"chunk {i}\n"
            await anyio.sleep(0.01)

    return StreamingResponse(numbers(), media_type="text/plain")


async def background(request: Request):
    token = request.query_params["token"]

    async def later(value: str):
        await anyio.sleep(0.1)
        record(token, value)

    tasks = BackgroundTasks()
    tasks.add_task(later, "background ran")
    return PlainTextResponse("scheduled", background=tasks)


async def disconnect(request: Request):
    token = request.query_params["token"]
    record(token, "waiting")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            record(token, "disconnected")
            return PlainTextResponse("gone")
        await anyio.sleep(0.05)
    record(token, "timeout")
    return PlainTextResponse("still connected")


async def task_group(request: Request):
    """Three tasks that each wait for all three to have started: they finish only
    if they run concurrently (else "timeout" after 10 s)."""
    results = {}
    started = []
    all_started = anyio.Event()

    async def work(name: str):
        started.append(name)
        if len(started) == 3:
            all_started.set()
        with anyio.move_on_after(10):
            await all_started.wait()
        results[name] = "done" if all_started.is_set() else "timeout"

    async with anyio.create_task_group() as group:
        for i in range(3):
            group.start_soon(work, f"task{i}")
    return JSONResponse({"results": results})


async def post_json(request: Request):
    data = await request.json()
    return JSONResponse({"received": data, "length": len(await request.body())})


async def file(request: Request):
    return FileResponse(request.query_params["path"])


async def events(request: Request):
    return JSONResponse(EVENTS.get(request.query_params["token"], []))


app = Starlette(
    routes=[
        Route("/", index),
        Route("/stream", stream),
        Route("/background", background),
        Route("/disconnect", disconnect),
        Route("/taskgroup", task_group),
        Route("/json", post_json, methods=["POST"]),
        Route("/events", events),
        Route("/file", file, methods=["GET", "HEAD"]),
    ],
    middleware=[Middleware(RecordSends)],
    lifespan=starlette_lifespan,
)
