"""What the fuzz harnesses share: how an input is split into reads, a transport that
plays the client's side of a connection, a bounded event-loop run that records every
exception the loop sees and every traceback the server logs, and the error a broken
invariant raises.

Every harness module has `check(data: bytes)`: it returns when the invariants hold
and raises `InvariantError` (or the exception that escaped) when not. It needs no
atheris: `scripts/fuzz --replay` and tests/test_fuzz_regressions.py call it directly,
the fuzzer wraps it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib

from protocol_fakes import FakeTransport

# Loop passes given to the tasks after each read, and the most a run may take to
# settle (answer what came in, or finish once the client is gone). The harness apps
# wait on nothing but the connection, so a run that needs more is a hang.
SETTLE_ROUNDS = 3
SETTLE_MAX_ROUNDS = 500
QUIET_ROUNDS = 10
# How an input is cut into reads: at most this many cuts; inputs up to
# `bytewise_max` bytes are also fed one byte per read.
MAX_CUTS = 16


class InvariantError(AssertionError):
    """A harness invariant does not hold (the fuzzer reports it as a crash)."""


def reads_of(data: bytes, bytewise_max: int = 0) -> list[list[bytes]]:
    """The ways `data` is delivered: at once, cut at points drawn from a generator
    seeded with the input's CRC-32 (so a crash file replays identically, and the
    fuzzer moves the cuts by mutating the input), and byte by byte when at most
    `bytewise_max` bytes."""
    if not data:
        return [[]]  # (a transport never delivers an empty read)
    ways = [[data]]
    if len(data) > 1:
        rng = random.Random(zlib.crc32(data))
        cuts = sorted(rng.sample(range(1, len(data)), min(MAX_CUTS, len(data) - 1)))
        cuts = cuts[: rng.randint(1, len(cuts))]
        ways.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])])
        if len(data) <= bytewise_max:
            ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


class ClientTransport(FakeTransport):
    """FakeTransport as asyncio drives a socket: the protocol can be swapped (a
    WebSocket hand-over), and close() is followed by connection_lost on the next
    loop pass, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = None
        self.lost = False

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.loop.call_soon(self.lose)

    def abort(self) -> None:
        self.close()

    def lose(self) -> None:
        """The connection is gone (the server closed it, or the client did)."""
        if not self.lost:
            self.lost = True
            self.closed = True
            self.protocol.connection_lost(None)


class _Tracebacks(logging.Handler):
    def __init__(self, found: list) -> None:
        super().__init__(logging.DEBUG)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.found.append("the server logged: %s" % self.format(record))


class Run:
    """One connection's run on a fresh event loop: `loop`, the `errors` seen (an
    exception the loop's handler got, an error or traceback the server logged), and
    `settle()` to give the tasks loop passes until a condition holds.

    The server's log goes to this run only (not to the terminal: a fuzzer sends
    thousands of malformed requests a second)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(self._loop_exception)
        self._handler = _Tracebacks(self.errors)
        self._logger = logging.getLogger("fastserve")

    def __enter__(self) -> Run:
        self._propagate = self._logger.propagate
        self._logger.propagate = False
        self._logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc_info) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def _loop_exception(self, loop, context: dict) -> None:
        exc = context.get("exception")
        self.errors.append("the event loop got: %s %r" % (context.get("message"), exc))

    def settle(self, done=None, rounds: int = SETTLE_ROUNDS) -> bool:
        """Run the loop for `rounds` passes, or until `done()` holds (at most
        SETTLE_MAX_ROUNDS passes then); returns whether it holds."""

        async def passes() -> bool:
            for _ in range(rounds if done is None else SETTLE_MAX_ROUNDS):
                if done is not None and done():
                    return True
                await asyncio.sleep(0)
            return done is None or done()

        return self.loop.run_until_complete(passes())

    def settle_until_quiet(self, progress) -> None:
        """Run the loop until `progress()` (what the connection wrote and did) has
        not changed for QUIET_ROUNDS passes, at most SETTLE_MAX_ROUNDS passes: an
        app may wait for more bytes for ever, and it is not a hang."""

        async def passes() -> None:
            last, quiet = progress(), 0
            for _ in range(SETTLE_MAX_ROUNDS):
                await asyncio.sleep(0)
                now = progress()
                quiet = quiet + 1 if now == last else 0
                if quiet >= QUIET_ROUNDS:
                    return
                last = now

        self.loop.run_until_complete(passes())

    def check_errors(self) -> None:
        if self.errors:
            raise InvariantError("\n".join(self.errors))
