"""A fake transport, config and server state for the in-process protocol tests
(test_parser_unit.py for the C mode, test_h11_unit.py for the pure mode)."""

from __future__ import annotations

import asyncio
import types

from fastserve import rules

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
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

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


def make_config(app, **overrides) -> types.SimpleNamespace:
    """The Config attributes a protocol reads, with Config's defaults."""
    values = dict(
        loaded_app=app,
        root_path="",
        proxy_headers=False,
        proxy_trust=rules.ProxyTrust(None),
        access_log=False,
        limit_concurrency=None,
        limit_request_head=65536,
        limit_request_line=0,
        limit_request_fields=100,
        limit_request_field_size=0,
        limit_request_body=None,
        timeout_keep_alive=5.0,
        timeout_request_header=30.0,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def make_state() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        total_requests=0, connections=set(), tasks=set(), default_headers=[], default_head=DEFAULT_HEAD
    )
