"""Fixtures for the HTTP conformance suite (tests/test_http_*.py).

Every test talks to a real `python -m fastserve` subprocess over real sockets, in
both protocol modes: the `mode` fixture is parametrized over "c" and "python".
Select one mode with `--mode c` (or `-m c`, `-m python`).

- `servers` (module-scoped pool): `servers.get(app, mode, *flags)` starts a server
  once per (app, mode, flags) and reuses it for the module; at teardown each is
  stopped with SIGTERM and must exit 0.
- `server`: `servers.get("tests.apps:app", mode)`, the default server.
- `start_server(app, mode, *flags, ...)`: a dedicated server for tests that stop it,
  or that need an environment of their own; killed at teardown if still running.

`server.client()` opens a `RawClient`: it sends bytes exactly as given and reads
responses with a strict hand-written HTTP/1.1 response reader.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
MODES = ("c", "python")
APP = "tests.apps:app"
READY = re.compile(r"Fastserve running on (https?)://(\S+?):(\d+)")
READY_TIMEOUT = 15.0


# -- modes --------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--mode",
        action="append",
        choices=MODES,
        help="run the HTTP conformance tests only for this protocol mode (repeatable)",
    )


def pytest_configure(config):
    for mode in MODES:
        config.addinivalue_line("markers", f"{mode}: HTTP conformance test run in --http {mode} mode")


def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("mode")
    selected, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("mode") if callspec else None
        if wanted and mode is not None and mode not in wanted:
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(params=[pytest.param(mode, id=mode, marks=getattr(pytest.mark, mode)) for mode in MODES])
def mode(request) -> str:
    """The protocol mode, "c" or "python" (`--http MODE`)."""
    return request.param


# -- the raw client -------------------------------------------------------------------


class IncompleteResponse(AssertionError):
    """The connection closed in the middle of a response."""


class ConnectionClosed(AssertionError):
    """The connection closed before the first byte of a response."""


class Response:
    def __init__(self, http_version, status, reason, headers, body=b"", chunked=False,
                 trailers=(), raw_head=b"", close_delimited=False):
        self.http_version = http_version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(lowercased name, value)] as str, in order
        self.body = body
        self.chunked = chunked
        self.trailers = list(trailers)
        self.raw_head = raw_head
        self.close_delimited = close_delimited

    def header(self, name: str) -> Optional[str]:
        values = self.header_list(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {self.raw_head!r}"
        return values[0] if values else None

    def header_list(self, name: str) -> list:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {self.raw_head!r} body={self.body[:200]!r}>"


def build_request(method="GET", target="/", headers=None, body=b"", version="HTTP/1.1",
                  host: Optional[str] = "127.0.0.1") -> bytes:
    """Request bytes exactly as given; a Host header is added unless `host` is None
    or `headers` has one; Content-Length is added for a body unless given."""
    headers = list(headers or [])
    names = {name.lower() for name, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode("latin-1") + body


class RawClient:
    Incomplete = IncompleteResponse
    Closed = ConnectionClosed

    def __init__(self, port=None, host="127.0.0.1", timeout=10.0, sock=None, rcvbuf=None):
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
        sock.settimeout(timeout)
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=b"", **kw) -> Response:
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(method)

    # reading

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _read_line(self, started: bool) -> bytes:
        while True:
            index = self.buffer.find(b"\r\n")
            if index >= 0:
                line = bytes(self.buffer[:index])
                del self.buffer[: index + 2]
                return line
            if not self._fill():
                if not started and not self.buffer:
                    raise ConnectionClosed("connection closed before a response")
                raise IncompleteResponse(f"connection closed in a head: {bytes(self.buffer)!r}")

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise IncompleteResponse(
                    f"connection closed after {len(self.buffer)} of {n} body bytes"
                )
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_head(self):
        status_line = self._read_line(started=False)
        raw = [status_line]
        match = re.fullmatch(rb"HTTP/(1\.[01]) ([1-5]\d\d) ?(.*)", status_line)
        assert match, f"bad status line {status_line!r}"
        headers = []
        while True:
            line = self._read_line(started=True)
            raw.append(line)
            if not line:
                break
            assert not line[:1].isspace(), f"obs-fold in response head: {line!r}"
            name, sep, value = line.partition(b":")
            assert sep and re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), f"bad header line {line!r}"
            headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
        return (match.group(1).decode(), int(match.group(2)), match.group(3).decode("latin-1"),
                headers, b"\r\n".join(raw) + b"\r\n")

    def read_response(self, method="GET") -> Response:
        """One response (a 1xx interim response is returned on its own)."""
        version, status, reason, headers, raw = self.read_head()
        response = Response(version, status, reason, headers, raw_head=raw)
        if status < 200 or method == "HEAD" or status in (204, 304):
            return response
        te = response.header_list("transfer-encoding")
        cl = response.header_list("content-length")
        if te:
            assert not cl, f"both transfer-encoding and content-length: {raw!r}"
            assert te[-1].split(",")[-1].strip().lower() == "chunked", raw
            response.chunked = True
            response.body, response.trailers = self._read_chunked()
        elif cl:
            assert len(cl) == 1 and cl[0].isdigit(), f"bad content-length {cl!r}"
            response.body = self._read_exact(int(cl[0]))
        else:
            while self._fill():
                pass
            response.body = bytes(self.buffer)
            self.buffer.clear()
            response.close_delimited = True
        return response

    def _read_chunked(self):
        body = bytearray()
        while True:
            line = self._read_line(started=True)
            size_text = line.split(b";", 1)[0].strip()
            assert re.fullmatch(rb"[0-9A-Fa-f]+", size_text), f"bad chunk size line {line!r}"
            size = int(size_text, 16)
            if size == 0:
                break
            body += self._read_exact(size)
            crlf = self._read_exact(2)
            assert crlf == b"\r\n", f"chunk data not followed by CRLF: {crlf!r}"
        trailers = []
        while True:
            line = self._read_line(started=True)
            if not line:
                return bytes(body), trailers
            trailers.append(line)

    def read_final_response(self, method="GET") -> tuple[list, Response]:
        """(interim 1xx responses, final response)."""
        interim = []
        while True:
            response = self.read_response(method)
            if response.status >= 200:
                return interim, response
            interim.append(response)

    def wait_closed(self, timeout=5.0) -> bytes:
        """Wait for the server to close; returns any bytes that came first."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s; got {bytes(self.buffer)!r}")
            self.sock.settimeout(remaining)
            try:
                self._fill()
            except socket.timeout:
                pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def is_open_after(self, seconds: float) -> bool:
        """True when nothing (no EOF, no data) arrives within `seconds`."""
        self.sock.settimeout(seconds)
        try:
            self._fill()
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(10.0)
        return False


# -- server processes ----------------------------------------------------------------


class ServerProcess:
    """`python -m fastserve APP --http MODE ...` as a subprocess, with its output
    collected by reader threads (so the pipes never fill up)."""

    def __init__(self, app, mode, flags=(), env=None, uds=None, host="127.0.0.1", wait_ready=True):
        self.app, self.mode, self.flags, self.uds = app, mode, tuple(flags), uds
        command = [sys.executable, "-m", "fastserve", app, "--http", mode]
        if uds:
            command += ["--uds", uds]
        else:
            command += ["--host", host, "--port", "0"]
        command += list(self.flags)
        self.command = command
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.lines: list = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.scheme = "http"
        self.host = host
        self.port = None
        if wait_ready:
            self._wait_ready()

    def _pump(self, stream, name):
        for line in iter(stream.readline, b""):
            with self._changed:
                self.lines.append((name, line.decode("utf-8", "replace")))
                self._changed.notify_all()
        with self._changed:
            self.lines.append((name, None))
            self._changed.notify_all()

    # output

    def output(self, stream: Optional[str] = None) -> str:
        with self._changed:
            return "".join(line for name, line in self.lines
                           if line is not None and (stream is None or name == stream))

    def wait_output(self, pattern, timeout=5.0):
        """The first match of the regex `pattern` in the output, waiting for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(line for _, line in self.lines if line is not None))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def describe(self) -> str:
        return f"{' '.join(self.command)}\n--- server output ---\n{self.output()}---"

    def _wait_ready(self):
        if self.uds:
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if os.path.exists(self.uds) and self.wait_output("Fastserve running on", 0.05):
                    return
                time.sleep(0.05)
            self.kill()
            pytest.fail(f"server on {self.uds} did not start\n{self.describe()}")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            match = self.wait_output(READY, 0.1)
            if match:
                self.scheme, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                self._join_readers()
                pytest.fail(
                    f"server did not log 'Fastserve running on http://...:PORT' within "
                    f"{READY_TIMEOUT}s (exit code {self.proc.returncode})\n{self.describe()}"
                )

    # control

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def client(self, **kw) -> RawClient:
        return RawClient(self.port, self.host, **kw)

    def url(self, path="/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def signal(self, sig=signal.SIGTERM):
        if self.running:
            self.proc.send_signal(sig)

    def wait(self, timeout=10.0) -> Optional[int]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._join_readers()
        return code

    def stop(self, timeout=10.0) -> Optional[int]:
        """SIGTERM; the exit code, or None (and the process killed) on a hang."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
        return code

    def kill(self):
        if self.running:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _join_readers(self):
        for reader in self._readers:
            reader.join(2)

    def get_events(self, token: str, path_prefix: str = "/_/events") -> list:
        with self.client() as client:
            response = client.request("GET", f"{path_prefix}?token={token}")
            assert response.status == 200, response
            return response.json()

    def wait_event(self, token: str, predicate, timeout=5.0, path_prefix="/_/events") -> list:
        """Poll the app's recorded events until `predicate(events)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.get_events(token, path_prefix)
            if predicate(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.05)


def stop_and_check(server: ServerProcess, problems: list, timeout=10.0) -> None:
    if not server.running:
        problems.append(f"server exited early with code {server.proc.returncode}\n{server.describe()}")
        return
    code = server.stop(timeout)
    if code != 0:
        what = "did not exit within %ss of SIGTERM" % timeout if code is None else f"exited with {code}"
        problems.append(f"server {what}\n{server.describe()}")


class ServerPool:
    def __init__(self):
        self.servers: dict = {}
        self.failed: dict = {}  # key -> why the server did not start (not retried)
        self.problems: list = []

    def get(self, app: str, mode: str, *flags: str) -> ServerProcess:
        key = (app, mode, flags)
        if key in self.failed:
            pytest.fail(f"(not retried) {self.failed[key]}", pytrace=False)
        server = self.servers.get(key)
        if server is not None and not server.running:
            self.problems.append(
                f"server died during the tests (exit code {server.proc.returncode})\n{server.describe()}"
            )
            server = None
        if server is None:
            try:
                server = self.servers[key] = ServerProcess(app, mode, flags)
            except pytest.fail.Exception as exc:
                self.failed[key] = str(exc)
                raise
        return server

    def close(self) -> None:
        for server in self.servers.values():
            stop_and_check(server, self.problems)
        self.servers.clear()


@pytest.fixture(scope="module")
def servers():
    pool = ServerPool()
    yield pool
    pool.close()
    assert not pool.problems, "\n\n".join(pool.problems)


@pytest.fixture
def server(servers, mode) -> ServerProcess:
    return servers.get(APP, mode)


@pytest.fixture
def start_server():
    """Start dedicated servers; the test stops them (any left running are killed)."""
    started = []

    def start(app, mode, *flags, **kw) -> ServerProcess:
        server = ServerProcess(app, mode, flags, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def token(request) -> str:
    """A token unique to this test (and mode) for EVENTS and log lines."""
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-") + f"-{time.monotonic_ns()}"
