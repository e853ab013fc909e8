"""WSGI apps for the benchmarks (bench/run.py's WSGI workloads), the WSGI twins of
bench/apps.py's: the same bodies, so one check serves both.

The plain apps answer a list body with content-type and content-length; `flask_app`
(built on first access, module `__getattr__`, so importing this module needs no
Flask) answers `/json` with apps.JSON_DOC and `apps.FILE_PATH` with `send_file` of
the 1 MiB bench file (a `wsgi.file_wrapper` around it, where the server offers one).

`io_wait` and `mixed` (bench/threads.py's thread-count sweep) block their thread as a
database call would: `io_wait` sleeps 10 ms, then answers hello; `mixed` sleeps 2 ms,
then spends ~1 ms of CPU encoding MIXED_DOC as JSON (the GIL held) and answers a small
JSON summary of it.
"""

import json
import time

from bench.apps import BYTES_64K_SIZE, FILE_PATH, FLASK_JSON_PATH, HELLO_BODY, JSON_DOC, bench_file

TEXT_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(HELLO_BODY))),
]
BYTES_64K_BODY = b"x" * BYTES_64K_SIZE
BYTES_64K_HEADERS = [
    ("Content-Type", "application/octet-stream"),
    ("Content-Length", str(BYTES_64K_SIZE)),
]


def hello(environ, start_response):
    """GET → 200 "Hello, world!", a list body (the wsgi-hello workload)."""
    start_response("200 OK", TEXT_HEADERS)
    return [HELLO_BODY]


def bytes_64k(environ, start_response):
    """GET → 200 with 64 KiB of b"x" (the wsgi-64k workload)."""
    start_response("200 OK", BYTES_64K_HEADERS)
    return [BYTES_64K_BODY]


def echo(environ, start_response):
    """POST → 200 with the request body (read from wsgi.input) echoed back (the
    wsgi-post workload)."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


IO_SLEEP_S = 0.010  # io_wait: a database call's wait, the thread blocked, the GIL free
MIXED_SLEEP_S = 0.002  # mixed: a shorter wait ...
# ... then ~1 ms of CPU: json.dumps of this document (~60 KB; 1.0-1.2 ms of process
# CPU time, 0.65 at best, on the 2-core AMD EPYC of bench/NOTES.md, Python 3.11), the
# GIL held throughout.
MIXED_DOC = {
    "items": [
        {
            "sku": "SKU-%05d" % i,
            "qty": i,
            "price": round(i * 1.25, 2),
            "note": "item number %d" % i,
            "tags": ["a", "b", "c"],
            "active": i % 2 == 0,
        }
        for i in range(512)
    ]
}
JSON_HEADERS_TYPE = ("Content-Type", "application/json")


def io_wait(environ, start_response):
    """GET → 10 ms asleep (an I/O wait), then 200 "Hello, world!" (the I/O-bound app
    of bench/threads.py)."""
    time.sleep(IO_SLEEP_S)
    start_response("200 OK", TEXT_HEADERS)
    return [HELLO_BODY]


def mixed(environ, start_response):
    """GET → 2 ms asleep, then MIXED_DOC encoded as JSON (~1 ms of CPU), answered with
    a small JSON summary, {"items": 512, "bytes": N} (the mixed app of
    bench/threads.py)."""
    time.sleep(MIXED_SLEEP_S)
    encoded = json.dumps(MIXED_DOC)
    body = b'{"items": %d, "bytes": %d}' % (len(MIXED_DOC["items"]), len(encoded))
    start_response("200 OK", [JSON_HEADERS_TYPE, ("Content-Length", str(len(body)))])
    return [body]


def _make_flask_app():
    """Flask: GET /json → JSON_DOC (jsonify per request), GET /file → send_file of the
    1 MiB bench file (the flask-json and flask-file workloads)."""
    from flask import Flask, jsonify, send_file

    path = bench_file()
    app = Flask(__name__)

    @app.get(FLASK_JSON_PATH)
    def json_doc():
        return jsonify(JSON_DOC)

    @app.get(FILE_PATH)
    def file():
        return send_file(path, mimetype="application/octet-stream")

    return app


def __getattr__(name: str):
    """`bench.apps_wsgi:flask_app`, built on first access."""
    if name != "flask_app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = globals()[name] = _make_flask_app()
    return app
