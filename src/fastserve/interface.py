"""The app's interface (`--interface`): ASGI 3, ASGI 2 (adapted to ASGI 3 once, at
load), or WSGI (served through `protocols/wsgi/runner.WSGIApp`, which Config wraps
it in).

Detection follows uvicorn's: a class is ASGI 3 when its instances are awaitable, a
function or a callable object when it is a coroutine function; anything else is
ASGI 2. fastserve adds two cases uvicorn's `auto` misses: a plain callable taking
`(environ, start_response)` is WSGI (a Flask or Django app is found so), and one
taking `(scope, receive, send)` that returns the coroutine (a wrapper written
without `async def`) is ASGI 3.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

INTERFACES = ("auto", "asgi3", "asgi2", "wsgi")
# The ASGI version each interface puts in scope["asgi"]["version"] (uvicorn's mapping).
ASGI_VERSIONS = {"asgi3": "3.0", "asgi2": "2.0", "wsgi": "3.0"}
# The positional parameters of a WSGI app: (environ, start_response).
WSGI_ARGUMENTS = 2
# An ASGI 3 app's: (scope, receive, send); an ASGI 2 app takes (scope) alone.
ASGI3_ARGUMENTS = 3


class ASGI2App:
    """An ASGI 2 app (`app(scope)` returns `instance(receive, send)`) as an ASGI 3 one,
    for HTTP, WebSocket and lifespan alike."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        asgi = scope.get("asgi")
        if asgi is not None:  # a new dict per scope, in every protocol
            asgi["version"] = ASGI_VERSIONS["asgi2"]
        instance = self.app(scope)
        await instance(receive, send)


def _positional_arguments(app: Any) -> Optional[int]:
    """How many positional arguments calling `app` takes (None: any number, or unknown)."""
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return None
    positional = 0
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional


def detect(app: Any) -> str:
    """ "asgi3", "asgi2" or "wsgi" for a loaded app, as `--interface auto` decides."""
    if inspect.isclass(app):
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    # a function, a method or a partial of one; else an object with an async __call__
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return "asgi3"
    arguments = _positional_arguments(app)
    if arguments == WSGI_ARGUMENTS:
        return "wsgi"
    if arguments == ASGI3_ARGUMENTS:
        return "asgi3"  # a plain callable that returns the app's coroutine
    return "asgi2"


def looks_like_factory(app: Any) -> bool:
    """A plain function that takes no arguments: an app factory given without --factory
    (uvicorn calls it, with a warning)."""
    return inspect.isfunction(app) and _positional_arguments(app) == 0


def adapt(app: Any, interface: str) -> Any:
    """The app as the server calls it (ASGI 3); `interface` is "asgi3" or "asgi2"."""
    return ASGI2App(app) if interface == "asgi2" else app
