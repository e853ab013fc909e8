"""The one driver of the in-process protocol tests, both modes: `Connection`, a
protocol instance on a fake transport with a fake server state and real settings
(test_parser_unit.py, test_h11_unit.py, test_parity.py, test_differential.py,
test_leaks.py). The fuzz harnesses (tests/fuzz/) drive a loop that is not running,
with a transport of their own built on `FakeTransport`."""

from __future__ import annotations

import asyncio
import time

from fastserve.config import Config, ProtocolSettings

DEFAULT_HEAD = b"date: Wed, 25 Nov 2026 10:00:00 GMT\r\nserver: fastserve\r\n"
# The same fields as HTTP/2 sends them (ServerState.default_headers).
DEFAULT_HEADERS = [(b"date", b"Wed, 25 Nov 2026 10:00:00 GMT"), (b"server", b"fastserve")]
# Loop passes given to callbacks once the app tasks are done (the C mode flushes a
# pipelined batch, and resumes parsing, with call_soon).
SETTLE_ROUNDS = 20
# Seconds an exchange may take: a hung one fails the test rather than stalling it.
EXCHANGE_TIMEOUT = 10.0


class FakeTransport(asyncio.Transport):
    """Records every write and every pause/resume of reading."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.paused = 0  # pause_reading calls
        self.resumed = 0  # resume_reading calls

    def write(self, data) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False
        self.paused += 1

    def resume_reading(self) -> None:
        self.reading = True
        self.resumed += 1


def make_settings(app, **config) -> ProtocolSettings:
    """The settings a protocol reads, from a real Config (its defaults, no
    access log unless asked, logging left as the test runner set it)."""
    config.setdefault("access_log", False)
    real = Config(app, log_config=None, **config)
    real.load()
    return real.protocol_settings


class FakeServerState:
    """ServerState's fields, with a fixed Date/Server head (and HTTP/2's fields) so
    output is comparable."""

    def __init__(self) -> None:
        self.total_requests = 0
        self.connections: set = set()
        self.tasks: dict = {}
        self.default_head = DEFAULT_HEAD
        self.default_headers = list(DEFAULT_HEADERS)
        self.metrics = None  # a metrics.ProcessMetrics when a test counts responses


async def echo(scope, receive, send):
    """Answers `METHOD raw_path body`."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    out = b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": out})


class Connection:
    """One protocol instance of `protocol_class` (either mode) on a FakeTransport,
    made inside the running loop: settings from a real Config of `app` and `config`
    (or `settings` as given), responses counted into `metrics` when given."""

    def __init__(self, protocol_class, app=echo, *, settings=None, metrics=None, **config):
        self.state = FakeServerState()
        self.state.metrics = metrics
        self.settings = settings if settings is not None else make_settings(app, **config)
        loop = asyncio.get_running_loop()
        self.protocol = protocol_class(self.settings, self.state, {}, _loop=loop)
        self.transport = FakeTransport()
        self.protocol.connection_made(self.transport)

    @property
    def data(self) -> bytes:
        return self.transport.data

    @property
    def closed(self) -> bool:
        return self.transport.closed

    def deliver(self, data: bytes) -> bool:
        """`data_received` as asyncio calls it: never on a closed or paused transport."""
        if self.transport.closed or not self.transport.reading:
            return False
        self.protocol.data_received(data)
        return True

    async def feed(self, data: bytes, until=None) -> bytes:
        """`data_received`, then `settle`; every byte written so far."""
        self.protocol.data_received(data)
        await self.settle(until)
        return self.transport.data

    async def passes(self, rounds: int = SETTLE_ROUNDS) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def settle(self, until=None, rounds: int = SETTLE_ROUNDS) -> None:
        """Runs the loop until `until()` holds (by default: no app task is left, also
        after `rounds` more passes, in which a pipelined request may start one)."""
        done = until or (lambda: not self.state.tasks)
        deadline = time.monotonic() + EXCHANGE_TIMEOUT
        while True:
            while not done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"exchange did not finish: wrote {self.data[-200:]!r}")
                await asyncio.sleep(0)
            await self.passes(rounds)
            if done():
                return

    async def close(self) -> None:
        """The client goes away; the app's tasks are left to end."""
        self.protocol.connection_lost(None)
        await self.settle()
        assert not self.state.connections, "the protocol is still registered"
