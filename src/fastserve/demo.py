"""The built-in demo app: `fastserve` with no APP serves it (on loopback unless
--host is on the command line: cli.py). It shows the request's scope, with the values
of credential headers redacted: a demo left running must not echo a visitor's
credentials back to whoever can make it send them."""

from __future__ import annotations

import html
import json
import platform

import fastserve

# Request headers whose values are never shown.
CREDENTIAL_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie"})
REDACTED = "(redacted)"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fastserve</title></head>
<body>
<h1>fastserve {version} is running</h1>
<p>HTTP mode: <b>{mode}</b>, Python {python}. Serve your own app with
<code>fastserve module:app</code>.</p>
<h2>This request's ASGI scope</h2>
<pre>{scope}</pre>
<p>Also: <a href="/health">/health</a> (JSON).</p>
</body></html>
"""


def _http_mode() -> str:
    try:
        from fastserve import _parser
    except ImportError:
        return "python (h11)"
    return f"c (llhttp {_parser.LLHTTP_VERSION})"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        body = json.dumps({"status": "ok", "version": fastserve.__version__}).encode()
        content_type = b"application/json"
    else:
        shown = {
            key: (value.decode("latin-1") if isinstance(value, bytes) else value)
            for key, value in scope.items()
            if key not in ("headers", "state")
        }
        shown["headers"] = [
            [
                name.decode("latin-1"),
                REDACTED if name in CREDENTIAL_HEADERS else value.decode("latin-1"),
            ]
            for name, value in scope["headers"]
        ]
        body = PAGE.format(
            version=fastserve.__version__,
            mode=html.escape(_http_mode()),
            python=platform.python_version(),
            scope=html.escape(json.dumps(shown, indent=2, default=str)),
        ).encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
