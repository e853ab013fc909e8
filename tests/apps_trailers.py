"""The app of tests/test_trailers_hints.py: responses with trailers (the ASGI HTTP
Trailers extension) and early hints (the Early Hints extension), right and wrong.

- `/trailers`            two body messages, then trailers in two messages
- `/trailers/one`        one body message, then trailers
- `/trailers/empty`      an empty last body message, then trailers
- `/trailers/length`     the app's Content-Length, then trailers
- `/trailers/none`       trailers announced, an empty trailers message
- `/trailers/pathsend`   the body by pathsend (`?path=`), then trailers
- `/trailers/bad-name`, `/trailers/pseudo`, `/trailers/framing`: a trailer field
                         refused (a bad name, `:status`, `content-length`)
- `/trailers/unannounced`  trailers after a body the start did not announce them for
- `/trailers/early`      trailers before any body message (the head not sent)
- `/trailers/late`       a body message after the last one, instead of trailers
- `/hints`               an early hint before the start, another after it, then the body
- `/hints/bad`           an early hint whose link has a CR LF in it
- `/hints/late`          an early hint after the head went out (ignored)
- `/echo-scope`          the scope's extensions' keys, as the body

Every other path is a 404.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

BODY = [b"hello, ", b"world"]
TRAILERS = [(b"x-checksum", b"abc123")]
MORE_TRAILERS = [(b"x-count", b"2")]
LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
LATE_LINK = [b"</late.css>; rel=preload"]
START_HEADERS = [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]


def start(headers=START_HEADERS, trailers: bool = True) -> dict:
    return {"type": "http.response.start", "status": 200, "headers": headers, "trailers": trailers}


def body(data: bytes, more_body: bool = False) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": more_body}


def trailers(headers, more_trailers: bool = False) -> dict:
    return {"type": "http.response.trailers", "headers": headers, "more_trailers": more_trailers}


def hint(links) -> dict:
    return {"type": "http.response.early_hint", "links": links}


async def _streamed(scope, send) -> None:
    await send(start())
    await send(body(BODY[0], True))
    await send(body(BODY[1]))
    await send(trailers(TRAILERS, True))
    await send(trailers(MORE_TRAILERS))


async def _one(scope, send) -> None:
    await send(start())
    await send(body(b"".join(BODY)))
    await send(trailers(TRAILERS + MORE_TRAILERS))


async def _empty(scope, send) -> None:
    await send(start())
    await send(body(b"".join(BODY), True))
    await send(body(b""))
    await send(trailers(TRAILERS + MORE_TRAILERS))


async def _length(scope, send) -> None:
    size = str(len(b"".join(BODY))).encode()
    await send(start([*START_HEADERS, (b"content-length", size)]))
    await send(body(BODY[0], True))
    await send(body(BODY[1]))
    await send(trailers(TRAILERS))


async def _none(scope, send) -> None:
    await send(start())
    await send(body(b"".join(BODY)))
    await send(trailers([]))


async def _pathsend(scope, send) -> None:
    path = dict(parse_qsl(scope["query_string"].decode()))["path"]
    await send(start())
    await send({"type": "http.response.pathsend", "path": path})
    await send(trailers(TRAILERS + MORE_TRAILERS))


def _refused(field):
    async def route(scope, send) -> None:
        await send(start())
        await send(body(b"".join(BODY)))
        await send(trailers([field]))

    return route


async def _unannounced(scope, send) -> None:
    await send(start(trailers=False))
    await send(body(BODY[0], True))
    await send(trailers(TRAILERS))


async def _early(scope, send) -> None:
    await send(start())
    await send(trailers(TRAILERS))


async def _late(scope, send) -> None:
    await send(start())
    await send(body(BODY[0]))
    await send(body(BODY[1]))


async def _hints(scope, send) -> None:
    await send(hint(LINKS))
    await send(start([(b"content-type", b"text/plain")], trailers=False))
    await send(hint(LATE_LINK))
    await send(body(b"".join(BODY)))


async def _bad_hint(scope, send) -> None:
    await send(hint([b"</a.css>\r\nx-injected: 1"]))
    await send(start(trailers=False))
    await send(body(b"".join(BODY)))


async def _late_hint(scope, send) -> None:
    await send(start([(b"content-type", b"text/plain")], trailers=False))
    await send(body(BODY[0], True))
    await send(hint(LATE_LINK))
    await send(body(BODY[1]))


async def _echo_scope(scope, send) -> None:
    await send(start(trailers=False))
    await send(body(" ".join(sorted(scope["extensions"])).encode()))


ROUTES = {
    "/trailers": _streamed,
    "/trailers/one": _one,
    "/trailers/empty": _empty,
    "/trailers/length": _length,
    "/trailers/none": _none,
    "/trailers/pathsend": _pathsend,
    "/trailers/bad-name": _refused((b"x bad", b"1")),
    "/trailers/pseudo": _refused((b":status", b"200")),
    "/trailers/framing": _refused((b"content-length", b"5")),
    "/trailers/unannounced": _unannounced,
    "/trailers/early": _early,
    "/trailers/late": _late,
    "/hints": _hints,
    "/hints/bad": _bad_hint,
    "/hints/late": _late_hint,
    "/echo-scope": _echo_scope,
}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    route = ROUTES.get(scope["path"])
    if route is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send(body(b"not found"))
        return
    await route(scope, send)
