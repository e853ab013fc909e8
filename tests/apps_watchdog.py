"""Apps for tests/test_loop_stall.py and tests/test_request_timeout.py: handlers that
block the event loop, outlive a timeout, stall a streamed response, or ignore
cancellation. Each names itself in the output when it starts, so tests wait for
that instead of for a time."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from urllib.parse import parse_qs

# Long enough that only the server's timeout or kill ends it.
FOREVER = 3600.0


def started(name: str) -> None:
    sys.stderr.write(f"{name} started pid={os.getpid()}\n")
    sys.stderr.flush()


def blocking_handler(seconds: float) -> None:
    time.sleep(seconds)  # the loop-stall warning names this function


def stuck_forever() -> None:
    # As a C library that blocks signals while it waits: the SIGABRT handler can
    # never run here, only the watchdog thread can report where the loop is.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
    time.sleep(FOREVER)


async def _text(send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["1"])[0])
    if path == "/block":
        started("block")
        blocking_handler(seconds)
        await _text(send, b"unblocked")
    elif path == "/stuck":
        started("stuck")
        stuck_forever()
    elif path == "/sleep":
        started("sleep")
        await asyncio.sleep(seconds)
        await _text(send, b"slept")
    elif path == "/stream":
        started("stream")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"first part\n", "more_body": True})
        await asyncio.sleep(seconds)
        await send({"type": "http.response.body", "body": b"last part\n"})
    elif path == "/swallow":
        started("swallow")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            sys.stderr.write("swallow cancelled\n")
            sys.stderr.flush()
            await asyncio.sleep(FOREVER)  # and never returns
    else:
        await _text(send, b"pid=%d" % os.getpid())
