"""A fake transport, config and server state for the in-process protocol tests
(test_parser_unit.py for the C mode, test_h11_unit.py for the pure mode)."""

from __future__ import annotations

import asyncio

from fastserve.config import Config, ProtocolSettings

DEFAULT_HEAD = b"date: Wed, 25 Nov 2026 10:00:00 GMT\r\nserver: fastserve\r\n"


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
    """ServerState's fields, with a fixed Date/Server head so output is comparable."""

    def __init__(self) -> None:
        self.total_requests = 0
        self.connections: set = set()
        self.tasks: dict = {}
        self.default_head = DEFAULT_HEAD
        self.metrics = None  # a metrics.ProcessMetrics when a test counts responses
