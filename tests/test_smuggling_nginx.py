"""Request smuggling through Nginx: the classic desync shapes (CL.TE, TE.CL, TE.TE
with obfuscated Transfer-Encoding, duplicate and odd Content-Lengths, chunk-size
tricks, bare LF, obs-fold) sent to a real Nginx (the Debian package) that proxies
to fastserve over HTTP/1.1 keep-alive (one cached upstream connection, so what one
request leaves behind meets the next one), with request buffering on and off.

fastserve's app records every request it is handed; Nginx logs every request it
forwarded. After each shape, two more requests go through the same upstream
connection. The requests fastserve saw must be exactly those Nginx forwarded: a
hidden `GET /smuggled` never appears. Both modes.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket

import pytest

from process_util import ServerProcess, free_port, start_listener, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not os.access(NGINX, os.X_OK), reason="nginx is not installed (apt-get install nginx)"
    ),
]

# Request buffering on (Nginx reads the whole body, sends it with a Content-Length)
# under /buffered/, off (the body is streamed, chunked stays chunked) under /streamed/.
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 128; }}
http {{
    log_format forwarded '$request_method|$request_uri|$upstream_addr|$status';
    access_log {prefix}/access.log forwarded;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream fastserve {{
        server unix:{sock};
        keepalive 1;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_body_timeout 10s;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # one attempt per request, so that Nginx's log counts what fastserve got
        proxy_next_upstream off;
        # the test half-closes each client connection after sending: Nginx still
        # answers every request it read instead of dropping them as aborted
        proxy_ignore_client_abort on;
        location /buffered/ {{
            proxy_pass http://fastserve;
        }}
        location /streamed/ {{
            proxy_pass http://fastserve;
            proxy_request_buffering off;
        }}
    }}
}}
"""

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
# Requests sent after each shape, through the same upstream connection.
FOLLOW_UPS = 2
# Seconds to wait for a socket read, and for fastserve to record what it was handed.
IO_TIMEOUT = 15


def post(path: bytes, headers: bytes, body: bytes, eol: bytes = b"\r\n") -> bytes:
    return b"POST %s HTTP/1.1%sHost: x%s%s%s%s" % (path, eol, eol, headers, eol, body)


def cl_te(te_line: bytes):
    """Content-Length covers the whole body; a chunked reading ends at `0`."""
    body = b"0\r\n\r\n" + SMUGGLED
    return lambda path: post(path, b"Content-Length: %d\r\n%s\r\n" % (len(body), te_line), body)


def te_cl(te_line: bytes):
    """A chunked reading covers the whole body; Content-Length ends before it."""
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    return lambda path: post(path, b"%s\r\nContent-Length: 4\r\n" % te_line, body)


def chunked(size_line: bytes):
    """A chunked body whose first size line is `size_line`, SMUGGLED after it."""
    body = size_line + b"\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    return lambda path: post(path, b"Transfer-Encoding: chunked\r\n", body)


def content_length(lines: bytes):
    body = b"hello" + SMUGGLED
    return lambda path: post(path, lines, body)


TE_OBFUSCATIONS = {
    "plain": b"Transfer-Encoding: chunked",
    "xchunked": b"Transfer-Encoding: xchunked",
    "leading-space-value": b"Transfer-Encoding:  chunked",
    "chunked-identity": b"Transfer-Encoding: chunked, identity",
    "identity-chunked": b"Transfer-Encoding: identity, chunked",
    "tab": b"Transfer-Encoding:\tchunked",
    "vertical-tab": b"Transfer-Encoding:\x0bchunked",
    "duplicate": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
    "duplicate-identity-first": b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
    "space-before-colon": b"Transfer-Encoding : chunked",
    "tab-before-colon": b"Transfer-Encoding\t: chunked",
    "uppercase": b"TRANSFER-ENCODING: CHUNKED",
    "quoted": b'Transfer-Encoding: "chunked"',
    "obs-fold": b"Transfer-Encoding:\r\n chunked",
    "obs-fold-after-other": b"X-A: b\r\n Transfer-Encoding: chunked",
    "leading-space-name": b" Transfer-Encoding: chunked",
}

SHAPES = {
    **{f"cl-te-{name}": cl_te(line) for name, line in TE_OBFUSCATIONS.items()},
    **{f"te-cl-{name}": te_cl(line) for name, line in TE_OBFUSCATIONS.items()},
    "cl-twice-same": content_length(b"Content-Length: 5\r\nContent-Length: 5\r\n"),
    "cl-twice-different": content_length(
        b"Content-Length: 5\r\nContent-Length: %d\r\n" % (5 + len(SMUGGLED))
    ),
    "cl-list": content_length(b"Content-Length: 5, %d\r\n" % (5 + len(SMUGGLED))),
    "cl-plus": content_length(b"Content-Length: +5\r\n"),
    "cl-leading-zeros": content_length(b"Content-Length: 005\r\n"),
    "cl-space-inside": content_length(b"Content-Length: 5 0\r\n"),
    "cl-negative": content_length(b"Content-Length: -5\r\n"),
    "chunk-size-0x": chunked(b"0x5"),
    "chunk-size-extension": chunked(b"5;ext"),
    "chunk-size-bad-extension": chunked(b"5;\x00"),
    "chunk-size-huge": chunked(b"ffffffffffffffffff5"),
    "chunk-size-overflow": chunked(b"10000000000000005"),
    "chunk-size-negative": chunked(b"-5"),
    "chunk-size-leading-space": chunked(b" 5"),
    "chunk-size-trailing-space": chunked(b"5 "),
    "chunk-size-leading-zeros": chunked(b"00005"),
    "bare-lf": lambda path: post(path, b"Content-Length: 5\n", b"hello" + SMUGGLED, b"\n"),
    "bare-lf-chunked": lambda path: post(
        path, b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + SMUGGLED
    ),
    "bare-lf-last-line": lambda path: (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\n\r\nhello%s" % (path, SMUGGLED)
    ),
    "get-with-body": lambda path: (
        b"GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (path, len(SMUGGLED), SMUGGLED)
    ),
    "pipelined-after-chunked": lambda path: post(
        path, b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    ),
}


def nginx_conf(prefix, sock, port: int) -> str:
    return NGINX_CONF.format(prefix=prefix, sock=sock, port=port)


@pytest.fixture(
    scope="module",
    params=[pytest.param(mode, marks=getattr(pytest.mark, mode)) for mode in ("c", "python")],
)
def stack(request, tmp_path_factory):
    mode = request.param
    prefix = tmp_path_factory.mktemp(f"smuggling-{mode}")
    sock = prefix / "fastserve.sock"
    record = prefix / "record.jsonl"
    record.touch()
    server = ServerProcess.fastserve(
        "tests.apps_recording:app",
        "--http",
        mode,
        "--uds",
        str(sock),
        "--lifespan",
        "off",
        "--no-access-log",
        env={"FASTSERVE_TEST_RECORD": str(record)},
    )
    nginx = None
    try:
        server.wait_for_log("Fastserve running on unix socket")
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, sock, port))
        nginx = start_listener(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            port,
            "nginx",
            log_file=prefix / "error.log",
        )
        yield {"port": port, "record": record, "access_log": prefix / "access.log"}
    finally:
        if nginx is not None:
            nginx.cleanup()
        server.cleanup()


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection, half-close, and read until Nginx closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    return received


def lines_after(path, offset: int) -> list[str]:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read().decode("latin-1").splitlines()


def forwarded(access_log, offset: int) -> list[tuple[str, str]]:
    """(method, target) of each request Nginx sent upstream, from its access log."""
    result = []
    for line in lines_after(access_log, offset):
        method, target, upstream, _status = line.split("|")
        if upstream != "-":
            result.append((method, target))
    return result


def seen(record, offset: int) -> list[dict]:
    return [json.loads(line) for line in lines_after(record, offset)]


def run_shape(stack, data: bytes, path: bytes) -> tuple[list, list]:
    """Send one shape, then the follow-ups; (forwarded by Nginx, seen by fastserve)."""
    log_offset = stack["access_log"].stat().st_size if stack["access_log"].exists() else 0
    record_offset = stack["record"].stat().st_size
    exchange(stack["port"], data)
    for index in range(FOLLOW_UPS):
        follow_up = path + b"-next-%d" % index
        answer = exchange(stack["port"], b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % follow_up)
        # the upstream connection is in step: this request got its own answer
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nseen"), answer
    sent = forwarded(stack["access_log"], log_offset)
    wait_until(
        lambda: len(seen(stack["record"], record_offset)) >= len(sent),
        IO_TIMEOUT,
        message="fastserve to record every forwarded request",
    )
    return sent, seen(stack["record"], record_offset)


@pytest.mark.parametrize("location", [b"/buffered/", b"/streamed/"], ids=["buffered", "streamed"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fastserve_sees_only_what_nginx_forwarded(stack, shape, location):
    path = location + shape.encode()
    sent, got = run_shape(stack, SHAPES[shape](path), path)
    got_requests = [(record["method"], record["path"]) for record in got]
    # (a GET /smuggled that Nginx itself read as a pipelined request is forwarded,
    # and logged, as one; a hidden one would be seen here without being sent)
    assert collections.Counter(got_requests) == collections.Counter(sent), (sent, got)
    # the follow-ups came through, whatever the shape did (a request Nginx gave up
    # may be recorded after them: fastserve sees that disconnect when it sees it)
    for index in range(FOLLOW_UPS):
        assert ("GET", (path + b"-next-%d" % index).decode()) in got_requests, got


@pytest.mark.parametrize("location", [b"/buffered/", b"/streamed/"], ids=["buffered", "streamed"])
def test_valid_bodies_come_through_whole(stack, location):
    """The control: valid chunked and Content-Length bodies (SMUGGLED as data) reach
    the app whole, as one request each."""
    path = location + b"valid"
    chunked_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    for data in (
        post(path, b"Transfer-Encoding: chunked\r\n", chunked_body),
        post(path, b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED),
    ):
        sent, got = run_shape(stack, data, path)
        assert sent[0] == ("POST", path.decode()), sent
        assert got[0] == {
            "method": "POST",
            "path": path.decode(),
            "body": SMUGGLED.decode(),
            "complete": True,
        }
        assert len(got) == len(sent) == 1 + FOLLOW_UPS
