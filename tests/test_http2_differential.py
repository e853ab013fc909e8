"""Both HTTP/2 connection classes against each other: the pure mode's H2Protocol
(over `h2`) and the C mode's Nghttp2Protocol (over nghttp2), driven in-process
(protocol_fakes: fake transport, real loop, real Config) by the same client scripts,
written with the `h2` library as the client. They must give the same record: what
the app saw of each stream (its scope and its whole body, or its disconnect) and the
responses as the client decodes them (statuses, headers, bodies, resets, the end of
the connection). Frames are compared as decoded events, not bytes: the two HPACK
encoders, SETTINGS and window updates differ, and neither is wrong for it."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from fastserve.protocols.http2.h2_impl import H2Protocol
from protocol_fakes import Connection

nghttp2_impl = pytest.importorskip("fastserve.protocols.http2.nghttp2_impl")

# The scope keys a stream's request sets (the rest are the connection's, alike by
# construction, or fresh objects: state, extensions).
SCOPE_KEYS = ("http_version", "method", "scheme", "path", "raw_path", "query_string", "headers")
BIG = 200_000  # a body past the initial 65,535-byte windows
CHUNKS = (b"one ", b"two ", b"three")
# Exchanges of one step at most (each: the client's bytes in, loop passes, the
# server's bytes back to the client).
SETTLE_STEPS = 50


async def app(scope, receive, send) -> None:
    """Routes by path; records every request in the connection's `seen` (its scope's
    `state`, which the test hands in)."""
    record = {key: scope[key] for key in SCOPE_KEYS}
    scope["state"]["seen"].append(record)
    path = scope["path"]
    if path == "/raise-before":
        raise RuntimeError("before the head")
    body, disconnected = await read_body(receive, wait_for_disconnect=path == "/wait")
    record["body"], record["disconnected"] = body, disconnected
    if disconnected:
        return
    if path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("after the head")
    await ROUTES.get(path, respond_echo)(scope, body, send)


async def read_body(receive, wait_for_disconnect: bool) -> tuple[bytes, bool]:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, True
        body += message["body"]
        if not message["more_body"] and not wait_for_disconnect:
            return body, False


async def respond_echo(scope, body: bytes, send) -> None:
    out = b"%s %s %d" % (scope["method"].encode(), scope["raw_path"], len(body))
    headers = [(b"content-type", b"text/plain"), (b"x-Mixed-Case", b"v")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


async def respond_stream(scope, body: bytes, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in CHUNKS:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def respond_big(scope, body: bytes, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": bytes(range(256)) * (BIG // 256)})


async def respond_no_content(scope, body: bytes, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def respond_too_short(scope, body: bytes, send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    await send({"type": "http.response.body", "body": b"short"})


ROUTES = {
    "/stream": respond_stream,
    "/big": respond_big,
    "/no-content": respond_no_content,
    "/too-short": respond_too_short,
}


class Client:
    """The `h2` client of one script: what it sends, and the server's answers as
    decoded events, by stream."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.responses: dict[int, dict] = {}
        self.terminated = None  # the GOAWAY's error code, when one came

    def request(self, path: str, method: str = "GET", end: bool = True, extra=()) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", b"h2.test"),
            (b":path", path.encode()),
            *extra,
        ]
        self.conn.send_headers(stream_id, headers, end_stream=end)
        return stream_id

    def send_body(self, stream_id: int, data: bytes, end: bool) -> None:
        self.conn.send_data(stream_id, data, end_stream=end)

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            self._record(event)

    def _record(self, event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        response = self.responses.setdefault(stream_id, {"body": b""}) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived):
            response["headers"] = event.headers
        elif isinstance(event, h2.events.DataReceived):
            response["body"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            response["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            response["reset"] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event.error_code


async def run_script(protocol_class, script, **config) -> dict:
    """`script(client, step)` against one connection of `protocol_class`: `step()`
    carries the client's bytes over and lets the server work. The record."""
    seen: list = []
    connection = Connection(protocol_class, app, **config)
    connection.protocol.app_state = {"seen": seen}
    client = Client()
    written = 0

    async def step() -> None:
        """Bytes both ways until neither side has more to say."""
        nonlocal written
        for _ in range(SETTLE_STEPS):
            pending = client.conn.data_to_send()
            if pending:
                connection.deliver(pending)
            await connection.passes()
            data = connection.data[written:]
            written += len(data)
            client.receive(data)
            if not pending and not data:
                return

    await script(client, step)
    await step()
    await connection.settle()
    return {
        "seen": sorted(seen, key=lambda record: record["raw_path"]),
        "responses": client.responses,
        "terminated": client.terminated,
        "closed": connection.closed,
    }


def assert_alike(script, **config) -> dict:
    async def both():
        pure = await run_script(H2Protocol, script, **config)
        c_mode = await run_script(nghttp2_impl.Nghttp2Protocol, script, **config)
        return pure, c_mode

    pure, c_mode = asyncio.run(both())
    assert c_mode == pure
    return pure


# -- scripts ---------------------------------------------------------------------------


async def gets(client, step):
    for path in ("/a?x=1", "/stream", "/no-content", "/big"):
        client.request(path)
    client.request("/head", "HEAD")
    await step()


async def uploads(client, step):
    small = client.request(
        "/small", "POST", end=False, extra=[(b"cookie", b"a=1"), (b"cookie", b"b=2")]
    )
    client.send_body(small, b"hello ", False)
    client.send_body(small, b"world", True)
    big = client.request("/upload", "POST", end=False)
    await step()
    for offset in range(0, BIG, 16384):
        client.send_body(big, b"x" * min(16384, BIG - offset), False)
        await step()
    client.send_body(big, b"", True)
    await step()


async def client_reset(client, step):
    waiting = client.request("/wait", end=False)
    await step()
    client.conn.reset_stream(waiting, ErrorCodes.CANCEL)
    await step()
    client.request("/after")


async def app_errors(client, step):
    for path in ("/raise-before", "/raise-after", "/too-short", "/fine"):
        client.request(path)
        await step()


async def refused(client, step):
    client.request("/long-target-" + "x" * 100)
    client.request("/over-the-body-limit", "POST", end=False, extra=[(b"content-length", b"100")])
    await step()
    stream_id = client.request("/body-over-the-limit", "POST", end=False)
    client.send_body(stream_id, b"y" * 64, True)
    await step()


async def goodbye(client, step):
    client.request("/before-goaway")
    await step()
    client.conn.close_connection()


@pytest.mark.parametrize(
    "script", [gets, uploads, client_reset, app_errors, goodbye], ids=lambda s: s.__name__
)
def test_both_connections_serve_a_script_alike(script):
    record = assert_alike(script)
    assert record["seen"], "the app saw no request"


def test_both_connections_refuse_alike():
    record = assert_alike(refused, limit_request_line=64, limit_request_body=32)
    statuses = sorted(dict(r["headers"])[b":status"] for r in record["responses"].values())
    assert statuses == [b"413", b"413", b"414"]
