"""HTTP/2 (--http2), both modes (the C mode's connections over nghttp2, the pure
mode's over `h2`: the start-up line says which), against real server processes: curl with prior knowledge and over
TLS (ALPN), httpx with 100 streams on one connection, h2load, and the `h2` library as
a raw client (RST_STREAM, the 101st stream, app errors, --timeout-request).
`--no-http2` (the default) keeps refusing the preface with a 400."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from h2.errors import ErrorCodes

from fastserve.protocols.http.errors import HTTP2_PREFACE_START
from fastserve.protocols.http2.h2_impl import H2Protocol
from fastserve.protocols.http2.negotiation import http2_protocol_class
from process_util import tool_environment

APP = "tests.apps_http2:app"
STREAMS = 100  # the server's MAX_CONCURRENT_STREAMS
TOOL_SECONDS = 60
READ_SIZE = 65536
# Seconds of load in the test of clients leaving mid-stream (h2load -D).
H2LOAD_SECONDS = 1


@pytest.fixture
def h2_server(servers, mode):
    return servers.get(APP, mode, "--http2")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    return path


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TOOL_SECONDS, env=tool_environment()
    )


class H2Client:
    """HTTP/2 with prior knowledge over a plain socket, by the `h2` library: frames
    as the test says, the server's events as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.flush()
        self.queued: list = []  # events read and not asked for yet

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.sock.close()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path: str, send: bool = True) -> int:
        """A GET on a new stream (sent now unless `send` is False); its id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h2.test")]
        self.conn.send_headers(stream_id, [*headers, (b":path", path.encode())], end_stream=True)
        if send:
            self.flush()
        return stream_id

    def next_event(self, wanted):
        """The first event for which `wanted(event)` holds, reading as needed."""
        while True:
            for event in self.queued:
                if wanted(event):
                    self.queued.remove(event)
                    return event
            data = self.sock.recv(READ_SIZE)
            assert data, f"the server closed the connection; events not asked for: {self.queued}"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                self.queued.append(event)
            self.flush()

    def response(self, stream_id: int) -> tuple[int, bytes]:
        """The status and body of a stream's response."""
        status, body = 0, b""
        while True:
            event = self.next_event(lambda e: getattr(e, "stream_id", None) == stream_id)
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
            elif isinstance(event, h2.events.StreamEnded):
                return status, body
            elif isinstance(event, h2.events.StreamReset):
                raise AssertionError(f"stream {stream_id} reset: {event}")

    def reset_of(self, stream_id: int) -> h2.events.StreamReset:
        return self.next_event(
            lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == stream_id
        )


# -- negotiation ----------------------------------------------------------------------


def test_the_start_up_line_names_the_library_serving_http2(h2_server, mode):
    library = {"c": "nghttp2", "python": "h2"}[mode]
    h2_server.wait_for_log(rf"\({mode} mode, HTTP/2 by {library}\b")


def test_the_c_mode_falls_back_to_h2_without_the_extension(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastserve._http2", None)  # (an import fails)
    monkeypatch.delitem(sys.modules, "fastserve.protocols.http2.nghttp2_impl", raising=False)
    assert http2_protocol_class("c") is H2Protocol
    assert http2_protocol_class("python") is H2Protocol


def test_curl_prior_knowledge(h2_server, token):
    """h2c: the preface on the plain port is handed to HTTP/2; the access line says HTTP/2.0."""
    result = run_tool(
        tool("curl"), "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
        h2_server.url(f"/_/hello?token={token}"),
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.stdout == "Hello, world!\n2", result
    h2_server.wait_for_log(re.escape(f'"GET /_/hello?token={token} HTTP/2.0" 200'))


def test_curl_over_tls_negotiates_h2_by_alpn(start_server, mode, tls_files):
    keyfile, certfile, _ = tls_files
    server = start_server(
        APP, mode, "--http2", "--ssl-keyfile", keyfile, "--ssl-certfile", certfile
    )
    url = f"https://127.0.0.1:{server.port}/h2/barrier?n=1&token=tls-{mode}"
    result = run_tool(tool("curl"), "-sS", "-k", "--http2", "-w", "\n%{http_version}", url)
    assert result.returncode == 0, result
    body, version = result.stdout.rsplit("\n", 1)
    assert version == "2", result
    assert '"tls"' in body and '"http_version": "2"' in body, body
    # a client offering HTTP/1.1 alone still gets it
    result = run_tool(tool("curl"), "-sS", "-k", "--http1.1", "-w", "\n%{http_version}", url)
    assert result.stdout.rsplit("\n", 1)[1] == "1.1", result


@pytest.mark.parametrize("flags", [(), ("--no-http2",)], ids=["default", "no-http2"])
def test_without_http2_the_preface_gets_400(servers, mode, flags):
    server = servers.get(APP, mode, *flags)
    with server.client() as client:
        client.send(HTTP2_PREFACE_START + b"\r\nSM\r\n\r\n")
        assert client.read_response().status == 400
        assert client.wait_closed() == b""


# -- streams --------------------------------------------------------------------------


def test_httpx_runs_100_concurrent_streams_on_one_connection(h2_server, token):
    """All 100 are in the app at once (the barrier answers none before), on one connection."""
    url = h2_server.url(f"/h2/barrier?n={STREAMS}&token={token}")

    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            return await asyncio.gather(*(client.get(url) for _ in range(STREAMS)))

    responses = asyncio.run(main())
    assert {response.status_code for response in responses} == {200}
    assert {response.http_version for response in responses} == {"HTTP/2"}
    bodies = [response.json() for response in responses]
    assert {body["http_version"] for body in bodies} == {"2"}
    assert len({tuple(body["client"]) for body in bodies}) == 1, "more than one connection"


@pytest.mark.parametrize(
    ("flags", "headers", "client", "scheme"),
    [
        ((), {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"},
         "203.0.113.9", "https"),
        (("--proxy-headers-style", "forwarded"), {"forwarded": "for=203.0.113.9;proto=https"},
         "203.0.113.9", "https"),
        ((), {"forwarded": "for=203.0.113.9;proto=https"}, "127.0.0.1", "http"),
        (("--forwarded-allow-ips", "10.0.0.1"), {"x-forwarded-for": "203.0.113.9"},
         "127.0.0.1", "http"),
        ((), {}, "127.0.0.1", "http"),
    ],
)  # fmt: skip
def test_proxy_headers_are_believed_as_over_http1(servers, mode, flags, headers, client, scheme):
    """A stream's scope takes `client` and `scheme` from the trusted peer's header
    family only (the default trusts 127.0.0.1), as an HTTP/1.1 request's does."""
    server = servers.get(APP, mode, "--http2", *flags)
    with httpx.Client(http1=False, http2=True, timeout=30) as http:
        response = http.get(server.url("/"), headers=headers)
    assert response.http_version == "HTTP/2"
    seen = response.json()
    assert (seen["client"][0], seen["scheme"]) == (client, scheme)


def test_request_and_response_bodies_past_the_windows(h2_server):
    """4 MiB each way: the request's windows reopen as the app reads, the response
    waits for the client's."""
    size = 4 << 20
    upload = bytes(range(256)) * (size // 256)

    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            sent = await client.post(h2_server.url("/_/upload"), content=upload)
            received = await client.get(h2_server.url(f"/_/big-stream?size={size}"))
            return sent, received

    sent, received = asyncio.run(main())
    assert sent.json()["length"] == size
    assert received.status_code == 200 and len(received.content) == size


def test_h2load_smoke(h2_server):
    requests = 2000
    result = run_tool(
        tool("h2load"), "-n", str(requests), "-c", "4", "-m", "20", h2_server.url("/_/hello")
    )
    assert result.returncode == 0, result
    assert f"{requests} succeeded, 0 failed, 0 errored" in result.stdout, result.stdout


def test_client_reset_is_a_disconnect_to_that_stream_only(h2_server, token):
    with H2Client(h2_server.port) as client:
        waiting = client.request(f"/_/wait-disconnect?token={token}")
        h2_server.wait_event(token, lambda events: "waiting" in events)
        client.conn.reset_stream(waiting, ErrorCodes.CANCEL)
        client.flush()
        h2_server.wait_event(token, lambda events: "http.disconnect" in events)
        assert client.response(client.request("/_/hello")) == (200, b"Hello, world!")


def test_clients_leaving_mid_stream_leave_no_app_error(start_server, mode):
    """h2load for a fixed time ends its connections (GOAWAY, close) with streams in
    flight: an answer that then has nowhere to go is a quiet disconnect to its app,
    never "Exception in ASGI application" (the pure mode's h2 once raised)."""
    server = start_server(APP, mode, "--http2", "--no-access-log")
    result = run_tool(
        tool("h2load"), "-D", str(H2LOAD_SECONDS), "-c", "16", "-m", "10", server.url("/_/hello")
    )
    assert result.returncode == 0, result
    assert " 0 failed" in result.stdout, result.stdout
    assert server.stop() == 0
    assert "Exception in ASGI application" not in server.output()


def test_the_101st_concurrent_stream_is_refused(h2_server, token):
    """Sent before the client reads the server's SETTINGS (so that its own count
    does not stop it): streams 1..100 run, the next is refused, the connection goes on."""
    with H2Client(h2_server.port) as client:
        ids = [client.request(f"/_/wait-disconnect?token={token}", send=False) for _ in range(101)]
        client.flush()
        assert client.reset_of(ids[-1]).error_code == ErrorCodes.REFUSED_STREAM
        h2_server.wait_event(token, lambda events: events.count("waiting") == STREAMS)
        client.conn.reset_stream(ids[0], ErrorCodes.CANCEL)
        assert client.response(client.request("/_/hello")) == (200, b"Hello, world!")


def test_app_error_before_the_head_is_500_after_it_a_reset(h2_server):
    with H2Client(h2_server.port) as client:
        status, _ = client.response(client.request("/_/raise-before"))
        assert status == 500
        after = client.request("/_/raise-after")
        assert client.reset_of(after).error_code == ErrorCodes.INTERNAL_ERROR
        assert client.response(client.request("/_/hello")) == (200, b"Hello, world!")


def test_timeout_request_is_per_stream(servers, mode):
    server = servers.get(APP, mode, "--http2", "--timeout-request", "0.5")
    with H2Client(server.port) as client:
        slow = client.request("/_/slow?delay=10")
        assert client.response(client.request("/_/hello")) == (200, b"Hello, world!")
        status, body = client.response(slow)
        assert (status, body) == (504, b"504 Gateway Timeout\n")


def test_graceful_shutdown_lets_a_running_stream_finish(start_server, mode, token):
    """SIGTERM: GOAWAY (twice), the stream in flight completes, the server exits 0."""
    server = start_server(APP, mode, "--http2")
    url = server.url(f"/_/slow?delay=1&token={token}")
    curl = subprocess.Popen(
        [tool("curl"), "-sS", "--http2-prior-knowledge", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_environment(),
    )
    server.wait_event(token, lambda events: "started" in events)
    server.send_signal(signal.SIGTERM)
    out, err = curl.communicate(timeout=TOOL_SECONDS)
    assert curl.returncode == 0, err
    assert '"path": "/_/slow"' in out
    assert server.wait() == 0
