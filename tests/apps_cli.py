"""Apps for test_cli.py: they report what the CLI set up around them."""

import asyncio
import json
import logging
import os


async def report(scope, receive, send):
    """JSON with the loop class, an env var, and whether a log line reached the config."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        logging.getLogger("fastserve.error").info("slow request started")
        await asyncio.sleep(30)
    logging.getLogger("fastserve.error").info("report app was called")
    body = json.dumps(
        {
            "loop": type(asyncio.get_running_loop()).__module__,
            "env": os.environ.get("FASTSERVE_TEST_VALUE"),
        }
    ).encode()
    await send_json(send, body)


async def whoami(scope, receive, send):
    """JSON of the serving process: pid, parent pid, uid, gid, groups, working
    directory, and $FASTSERVE_TEST_VALUE."""
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "cwd": os.getcwd(),
            "env": os.environ.get("FASTSERVE_TEST_VALUE"),
        }
    ).encode()
    await send_json(send, body)


async def send_json(send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
