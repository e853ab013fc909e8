"""Fuzz harness: the HTTP harness (fuzz_http) with a WSGI app, the WSGI twin of its
echo, served as `--interface wsgi` serves one: wrapped by `Config.load()` (today in
`protocols/wsgi/runner.WSGIApp`), its calls on its threads (`AppThreads`).

The invariants are fuzz_http's, unchanged: the echo answers what fuzz_http's does,
byte for byte, but for the target: PEP 3333's environ holds the path percent-decoded
(PATH_INFO), not the raw bytes, so the WSGI echo names PATH_INFO (its latin-1
bytes). A WSGI app has no WebSocket: an upgrade is a plain request to it (no 403).
Two more:
- CONTENT_LENGTH, when there is one, is the length of `wsgi.input` (the server
  gives a chunked body's);
- in each mode, the input at once gets what the ASGI echo gets where it names the
  target percent-decoded and the server has no WebSocket (`ASGI_TWIN`): the same
  bytes written, the same close, the same requests answered. The WSGI adapter
  changes nothing of HTTP.

The app's `app_threads` is replaced by a `fuzz_common.WatchedThreads` of the same
size, before its first call (AppThreads start their threads then): a run waits for
the app's calls to end (an event, not a count of loop passes), and ends with none in
flight; its one set of threads serves every run of the process. At import, a request
checks that the app's calls go through it (the harness fails to load otherwise: a
change of WSGIApp's wiring would leave the harness unable to wait for them). The
calls still go to threads (`--threads` is not 0): the hand-off to a thread and back
is fuzzed too.
"""

from __future__ import annotations

from fuzz_common import InvariantError, WatchedThreads, reads_of
from fuzz_http import (
    LIMITS,
    MODES,
    Served,
    check_served,
    echo,
    echo_body,
    exchange,
    outcome_of,
)

from fastserve.config import ProtocolSettings
from fastserve.protocols.wsgi.threads import AppThreads
from protocol_fakes import make_settings


class WSGIEcho:
    """Reads wsgi.input to its end, records the request in the connection's list of
    calls (`calls`: the harness serves one connection at a time, and binds its list
    before it starts), and answers its number, method, PATH_INFO and body length."""

    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, environ: dict, start_response):
        size = len(environ["wsgi.input"].read())
        declared = environ.get("CONTENT_LENGTH")
        if declared is not None and int(declared) != size:
            raise InvariantError("CONTENT_LENGTH %s, wsgi.input holds %d bytes" % (declared, size))
        method, target = environ["REQUEST_METHOD"], environ["PATH_INFO"].encode("latin-1")
        number = len(self.calls)
        self.calls.append([method, target, size])
        start_response("200 OK", [("x-call", str(number))])
        return [echo_body(method, target, size)]

    def bind_calls(self, calls: list) -> dict:
        self.calls = calls
        return {}  # (a WSGI app gets no ASGI state)


def _watch_threads(settings: ProtocolSettings) -> WatchedThreads:
    """Gives the WSGI app that Config made WatchedThreads for its calls, as many as
    its own (`_check_wiring` then checks that they are the ones it calls)."""
    wsgi_app = settings.app
    if not isinstance(getattr(wsgi_app, "app_threads", None), AppThreads):
        raise RuntimeError(
            "the WSGI app Config made (%r) has no AppThreads `app_threads` for the"
            " harness to replace" % wsgi_app
        )
    if not wsgi_app.threads:
        raise RuntimeError("the WSGI harness needs app threads (--threads is 0)")
    threads = WatchedThreads(wsgi_app.threads)
    wsgi_app.app_threads = threads
    return threads


WSGI_ECHO = WSGIEcho()
# ws: as fuzz_http's settings; Config gives a WSGI app none.
_SETTINGS = make_settings(WSGI_ECHO, interface="wsgi", ws="websockets", **LIMITS)
WSGI = Served(_SETTINGS, _watch_threads(_SETTINGS), WSGI_ECHO.bind_calls)


def _check_wiring() -> None:
    """One request, answered through the WatchedThreads, or the harness fails to
    load: a run that cannot see the app's calls would not wait for them."""
    threads = WSGI.threads
    made = threads.calls_made
    written, closed, calls = exchange(MODES["c"], [b"GET /%7e HTTP/1.1\r\nHost: a\r\n\r\n"], WSGI)
    if (
        threads.calls_made != made + 1
        or threads.busy()
        or calls != [["GET", b"/~", 0]]
        or not written.endswith(b"\r\n\r\nGET /~ 0")
        or closed
    ):
        raise RuntimeError(
            "the WSGI app's calls do not go through the WatchedThreads the harness"
            " installed as its `app_threads` (%d calls made, busy: %s): %r"
            % (threads.calls_made - made, threads.busy(), (written, closed, calls))
        )


_check_wiring()


# What the WSGI echo's answers are compared with (see the module docstring).
ASGI_TWIN = Served(
    make_settings(echo, ws="none", **LIMITS),
    None,
    lambda calls: {"calls": calls, "decoded_target": True},
)


def check(data: bytes) -> None:
    outcomes = check_served(WSGI, data)
    at_once = reads_of(data)[0]
    for mode, protocol_class in MODES.items():
        twin = outcome_of(*exchange(protocol_class, at_once, ASGI_TWIN))
        if outcomes[mode] != twin:
            raise InvariantError(
                "%s mode: WSGI and ASGI differ:\nwsgi: %r\nasgi: %r" % (mode, outcomes[mode], twin)
            )
