"""An app that records every request it is handed -- method, path, body and whether
the body came whole -- as one JSON line in the file named by $FASTSERVE_TEST_RECORD,
then answers 200 (tests/test_smuggling_nginx.py)."""

from __future__ import annotations

import json
import os


async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b""
    complete = False
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body"):
            complete = True
            break
    record = {
        "method": scope["method"],
        "path": scope["raw_path"].decode("latin-1"),
        "body": body.decode("latin-1"),
        "complete": complete,
    }
    with open(os.environ["FASTSERVE_TEST_RECORD"], "a") as file:
        file.write(json.dumps(record) + "\n")
    if complete:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"seen"})
