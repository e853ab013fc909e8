"""The raw HTTP/1.1 client of the conformance tests (tests/test_http_*.py).

`RawClient` sends bytes exactly as given and reads responses with a strict
hand-written HTTP/1.1 response reader; `ServerProcess.client()` opens one to a server.
"""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Optional


class IncompleteResponse(AssertionError):
    """The connection closed in the middle of a response."""


class ConnectionClosed(AssertionError):
    """The connection closed before the first byte of a response."""


class Response:
    def __init__(
        self,
        http_version,
        status,
        reason,
        headers,
        body=b"",
        chunked=False,
        trailers=(),
        raw_head=b"",
        close_delimited=False,
    ):
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


def build_request(
    method="GET",
    target="/",
    headers=None,
    body=b"",
    version="HTTP/1.1",
    host: Optional[str] = "127.0.0.1",
) -> bytes:
    """Request bytes exactly as given; a Host header is added unless `host` is None
    or `headers` has one; Content-Length is added for a body unless given."""
    headers = list(headers or [])
    names = {name.lower() for name, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = (
        f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    )
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
            assert sep and re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), (
                f"bad header line {line!r}"
            )
            headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
        return (
            match.group(1).decode(),
            int(match.group(2)),
            match.group(3).decode("latin-1"),
            headers,
            b"\r\n".join(raw) + b"\r\n",
        )

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
                raise AssertionError(
                    f"connection still open after {timeout}s; got {bytes(self.buffer)!r}"
                )
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
