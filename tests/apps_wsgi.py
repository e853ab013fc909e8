"""Plain WSGI apps that tests/test_wsgi.py runs under fastserve (`--interface auto`
finds them WSGI). Each is wrapped in `wsgiref.validate.validator`, which asserts
PEP 3333 on both sides (the environ's keys and types, the input stream's methods,
start_response's arguments, close() called on the iterable), except where the
validator would hide what the test looks at: `list_body` (the validator turns the
list into an iterator), `file_body` (and the file wrapper), `bad_status` /
`bad_header` (the validator would refuse the value before the server's check).

`app` routes by PATH_INFO; `events` answers what the apps recorded (`EVENTS`, by a
test's token: `/events?token=...`), from the server's process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from urllib.parse import parse_qs
from wsgiref.validate import validator

EVENTS: dict[str, list] = {}
# A slow request waits for its release file (`hold`): a test frees a thread of the
# pool without another request, which would need a thread itself.
RELEASE_FILE_CHECK = 0.01
# How long a slow request waits for its release at most (seconds).
HOLD_LIMIT = 30.0
# The chunk an endless stream sends, and their count before it gives up.
STREAM_CHUNK = b"x" * 1024
STREAM_CHUNKS_MAX = 100000
# The block `digest` reads wsgi.input in, as an app that never holds the whole body.
INPUT_BLOCK = 64 * 1024
TEXT = [("Content-Type", "text/plain")]
JSON = [("Content-Type", "application/json")]


def record(token: str, value) -> None:
    EVENTS.setdefault(token, []).append(value)


def query(environ) -> dict:
    return {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}


def respond_json(start_response, value, status: str = "200 OK") -> list:
    start_response(status, JSON)
    return [json.dumps(value).encode()]


def environ_view(environ, start_response):
    """The environ as JSON: each CGI variable's value and type, and the wsgi.* keys
    a test can compare."""
    environ["wsgi.errors"].write("environ seen\n")
    view = {key: [value, type(value).__name__] for key, value in environ.items() if "." not in key}
    view["wsgi"] = {
        "version": list(environ["wsgi.version"]),
        "url_scheme": environ["wsgi.url_scheme"],
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "run_once": environ["wsgi.run_once"],
        "input_terminated": environ["wsgi.input_terminated"],
        "file_wrapper": callable(environ.get("wsgi.file_wrapper")),
    }
    view["thread"] = threading.current_thread().name  # the app's (--threads 0: the loop's)
    return respond_json(start_response, view)


def echo(environ, start_response):
    """The body as the app reads it, by `?how=`: read(n) blocks, readline, readlines,
    iteration (the validator allows read() with a size only)."""
    stream = environ["wsgi.input"]
    how = query(environ).get("how", "read")
    if how == "readline":
        parts = []
        while True:
            line = stream.readline()
            if not line:
                break
            parts.append(line)
    elif how == "readlines":
        parts = stream.readlines()
    elif how == "iter":
        parts = list(stream)
    else:
        parts = iter(lambda: stream.read(7), b"")
    body = b"".join(parts)
    start_response("200 OK", TEXT + [("X-Lines", str(body.count(b"\n")))])
    return [body]


def write_calls(environ, start_response):
    """The imperative write(): two chunks, then an empty iterable."""
    write = start_response("200 OK", TEXT)
    write(b"written ")
    write(b"twice")
    return []


def exc_info_before_head(environ, start_response):
    """An error before any body: start_response again with exc_info replaces the head."""
    start_response("200 OK", TEXT)
    try:
        raise ValueError("replaced")
    except ValueError:
        start_response("503 Service Unavailable", TEXT, sys.exc_info())
    return [b"recovered"]


def exc_info_after_head(environ, start_response):
    """An error after the head went out: start_response with exc_info re-raises it,
    and the server closes the connection."""
    write = start_response("200 OK", TEXT)
    write(b"partial")
    try:
        raise ValueError("after the head")
    except ValueError:
        start_response("500 Internal Server Error", TEXT, sys.exc_info())
    return [b"never"]


class EndlessStream:
    """Chunks until the client goes away; close() is recorded under the token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        self.sent += 1
        if self.sent > STREAM_CHUNKS_MAX:
            raise StopIteration
        return STREAM_CHUNK

    def close(self) -> None:
        record(self.token, "closed")


def endless(environ, start_response):
    start_response("200 OK", TEXT)
    return EndlessStream(query(environ)["token"])


def stream(environ, start_response):
    """`?n=` chunks from a generator (no length known: chunked on HTTP/1.1)."""
    start_response("200 OK", TEXT)
    return (b"chunk %d\n" % i for i in range(int(query(environ).get("n", "3"))))


def digest(environ, start_response):
    """The body's size and sha256, read from wsgi.input in INPUT_BLOCK blocks."""
    stream = environ["wsgi.input"]
    hasher, size = hashlib.sha256(), 0
    for block in iter(lambda: stream.read(INPUT_BLOCK), b""):
        hasher.update(block)
        size += len(block)
    return respond_json(start_response, {"size": size, "sha256": hasher.hexdigest()})


def produced_chunk(index: int, size: int) -> bytes:
    """Chunk `index` of `produce`'s body: its index in every byte (a test checks the order)."""
    return bytes([index % 251]) * size


def produce(environ, start_response):
    """`?size=` bytes in `?chunk=`-byte chunks from a generator; each chunk's size is
    recorded under `?token=` as it is handed to the server (`/events`: what the app
    has produced so far)."""
    params = query(environ)
    size, chunk = int(params["size"]), int(params["chunk"])

    def chunks():
        for index in range(size // chunk):
            record(params["token"], chunk)
            yield produced_chunk(index, chunk)

    start_response("200 OK", TEXT)
    return chunks()


def hold(environ, start_response):
    """A slow request: logs that it started, waits until its release file exists."""
    params = query(environ)
    errors = environ["wsgi.errors"]
    errors.write(f"hold {params['name']} started\n")
    errors.flush()
    release = threading.Event()
    while not os.path.exists(params["file"]) and not release.wait(RELEASE_FILE_CHECK):
        pass
    errors.write(f"hold {params['name']} done\n")
    start_response("200 OK", TEXT)
    return [params["name"].encode()]


def fail(environ, start_response):
    raise RuntimeError(f"app failure {query(environ).get('token', '')}")


def events(environ, start_response):
    return respond_json(start_response, EVENTS.get(query(environ).get("token", ""), []))


ROUTES = {
    "/environ": environ_view,
    "/echo": echo,
    "/write": write_calls,
    "/exc-info": exc_info_before_head,
    "/exc-info-after-head": exc_info_after_head,
    "/endless": endless,
    "/stream": stream,
    "/hold": hold,
    "/digest": digest,
    "/produce": produce,
    "/fail": fail,
    "/events": events,
}


def router(environ, start_response):
    route = ROUTES.get(environ["PATH_INFO"], environ_view)
    return route(environ, start_response)


app = validator(router)


def list_body(environ, start_response):
    """A list body, unvalidated: the server joins it and sends its length."""
    start_response("200 OK", TEXT)
    return [b"one ", b"two ", b"three"]


def file_body(environ, start_response):
    """`?path=` through wsgi.file_wrapper; `?length=` sets a Content-Length."""
    params = query(environ)
    headers = list(TEXT)
    if "length" in params:
        headers.append(("Content-Length", params["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](open(params["path"], "rb"))


def body_with_status(environ, start_response):
    """`?status=`, with a body that a 204 or 304 must not carry."""
    start_response(query(environ)["status"], [])
    return [b"must not be sent"]


def hop_by_hop(environ, start_response):
    """Headers PEP 3333 forbids an app (the validator would refuse them)."""
    start_response(
        "200 OK",
        TEXT + [("Connection", "close"), ("Keep-Alive", "timeout=99"), ("X-Kept", "yes")],
    )
    return [b"hop"]


def text_body(environ, start_response):
    """A str in the body, which must be bytes."""
    start_response("200 OK", TEXT)
    return [f"text {query(environ)['token']}"]


def bad_status(environ, start_response):
    start_response(query(environ)["status"], TEXT)
    return [b"never"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Token", query(environ)["value"] + "\r\nX-Injected: 1")])
    return [b"never"]


def unvalidated(environ, start_response):
    """The routes the validator would hide or refuse, without it."""
    route = {
        "/list": list_body,
        "/file": file_body,
        "/status": body_with_status,
        "/hop-by-hop": hop_by_hop,
        "/text-body": text_body,
        "/bad-status": bad_status,
        "/bad-header": bad_header,
    }.get(environ["PATH_INFO"], router)
    return route(environ, start_response)
