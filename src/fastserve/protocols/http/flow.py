"""Flow control of one connection, both ways: reading pauses while the app has
not taken what was read, and the app's `send` waits while the transport's write
buffer is above its high-water mark (or, for a file sent by `os.sendfile` past the
transport, while the socket takes no more bytes)."""

from __future__ import annotations

import asyncio

# Unread request body (or pipelined bytes) kept before reading pauses.
HIGH_WATER_LIMIT = 65536


class FlowControl:
    __slots__ = ("transport", "loop", "read_paused", "write_paused", "drain_waiter")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter = None

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        """The write buffer drained (or the connection is gone): wake `drain()`."""
        self.write_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def drain(self) -> asyncio.Future:
        """A future done when writing may go on."""
        waiter = self.drain_waiter
        # (a done one was cancelled with the task that awaited it)
        if waiter is None or waiter.done():
            waiter = self.drain_waiter = self.loop.create_future()
        return waiter

    async def writable(self, fd: int) -> None:
        """Wait until the socket `fd` (a duplicate of the transport's, which the
        loop does not let a reader or writer watch) takes more bytes, or the
        connection is gone: `connection_lost` calls `resume_writing`."""
        waiter = self.drain()
        self.loop.add_writer(fd, self._wake)
        try:
            await waiter
        finally:
            self.loop.remove_writer(fd)
