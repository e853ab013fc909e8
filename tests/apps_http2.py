"""The app of tests/test_http2.py: every route of `tests.apps.app`, and

- `/h2/barrier?n=N&token=T`  answers once N requests of T are in the app at the same
  time (they run concurrently, or all time out); the answer is the scope's client,
  http_version and extensions' keys.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from tests.apps import app as routes
from tests.apps import respond_json

# A barrier's wait: long enough for a loaded machine, short enough to fail a test.
BARRIER_SECONDS = 20
_arrivals: dict[str, int] = {}
_released: dict[str, asyncio.Event] = {}


async def barrier(scope, receive, send) -> None:
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    token = query["token"]
    _arrivals[token] = _arrivals.get(token, 0) + 1
    released = _released.setdefault(token, asyncio.Event())
    if _arrivals[token] >= int(query["n"]):
        released.set()
    await asyncio.wait_for(released.wait(), BARRIER_SECONDS)
    await respond_json(
        send,
        {
            "client": scope["client"],
            "http_version": scope["http_version"],
            "extensions": sorted(scope["extensions"]),
        },
    )


async def app(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["path"] == "/h2/barrier":
        await barrier(scope, receive, send)
        return
    await routes(scope, receive, send)
