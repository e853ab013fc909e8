"""A Flask app for tests/test_wsgi.py (`--interface auto` finds it WSGI): JSON, a
form post, a chunked upload read from `request.stream`, a streamed response
(`stream_with_context`), `send_file`, an exception (500)."""

from __future__ import annotations

import hashlib

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

app = Flask(__name__)
# request.stream's read size
UPLOAD_BLOCK = 65536


@app.post("/json")
def echo_json():
    return jsonify(received=request.get_json(), path=request.path, root=request.script_root)


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict(), files=sorted(request.files))


@app.post("/upload")
def upload():
    """The body read from request.stream in blocks (a chunked upload has no
    Content-Length of the client's): its size and digest."""
    digest = hashlib.sha256()
    size = 0
    for block in iter(lambda: request.stream.read(UPLOAD_BLOCK), b""):
        digest.update(block)
        size += len(block)
    return jsonify(size=size, sha256=digest.hexdigest())


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "3"))

    def generate():
        for index in range(count):
            # the request context is still there while the response streams
            yield f"{request.path} {index}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/file")
def file():
    return send_file(request.args["path"], mimetype="application/octet-stream")


@app.get("/wsgi")
def wsgi():
    environ = request.environ
    return jsonify(
        multithread=environ["wsgi.multithread"], multiprocess=environ["wsgi.multiprocess"]
    )


@app.get("/fail")
def fail():
    raise RuntimeError(f"flask failure {request.args.get('token', '')}")
