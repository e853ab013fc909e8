"""WSGI apps for the benchmarks (bench/run.py's WSGI workloads), the WSGI twins of
bench/apps.py's: the same bodies, so one check serves both.

The plain apps answer a list body with content-type and content-length; `flask_app`
(built on first access, module `__getattr__`, so importing this module needs no
Flask) answers `/json` with apps.JSON_DOC and `apps.FILE_PATH` with `send_file` of
the 1 MiB bench file (a `wsgi.file_wrapper` around it, where the server offers one).
"""

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
