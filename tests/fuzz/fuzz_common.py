"""What the fuzz harnesses share: how an input is split into reads, a transport that
plays the client's side of a connection, a bounded event-loop run that records every
exception the loop sees and every traceback the server logs (and waits for the calls
of a WSGI app's threads), and the error a broken invariant raises.

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
from typing import Callable, Optional

from fastserve.protocols.wsgi.threads import AppThreads
from protocol_fakes import FakeTransport

# Loop passes given to the tasks after each read, and the most a run may take to
# settle (answer what came in, or finish once the client is gone). The harness apps
# wait on nothing but the connection, so a run that needs more is a hang.
SETTLE_ROUNDS = 3
SETTLE_MAX_ROUNDS = 500
QUIET_ROUNDS = 10
# The longest one call of an app's thread may take (a harness app answers at once):
# past it, the run has hung.
THREAD_CALL_TIMEOUT = 10.0
# How an input is cut into reads: at most this many cuts; inputs up to
# `bytewise_max` bytes are also fed one byte per read.
MAX_CUTS = 16


class InvariantError(AssertionError):
    """A harness invariant does not hold (the fuzzer reports it as a crash)."""


async def body_size(receive) -> Optional[int]:
    """The harnesses' apps: the request body read whole, its size; None when the
    client went first."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            return size


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


class WatchedThreads(AppThreads):
    """A WSGI app's threads (`AppThreads`) that know their calls in flight, so that a
    run waits for them to end (an event) where an app on the loop needs loop passes:
    the loop's passes do not move a thread on.

    A call is in flight from the moment `call` queues it until its function has
    returned on its thread and its end has reached the loop: the loop future `call`
    returned is settled (LoopWaker's drain), or was cancelled with the request's Task
    (then the function's return alone). The thread's own word that the function
    returned comes first (it is sent from inside the call), the drain after it: waiting
    for both, a run never takes a call for over while its result is still on its way.

    One instance (one set of threads) serves every run of a process, and each run ends
    with none in flight, so nothing of one run goes on in the next. Its state is the
    loop's (one loop runs at a time); the threads reach it by call_soon_threadsafe."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.calls_made = 0  # every call queued (fuzz_wsgi's check of its wiring)
        self._in_flight: set[_WatchedCall] = set()
        self._waiters: list[asyncio.Future] = []

    def call(self, function: Callable, *arguments: object) -> asyncio.Future:
        watched = _WatchedCall(self, asyncio.get_running_loop())
        self._in_flight.add(watched)
        try:
            future = super().call(watched.run, function, arguments)
        except BaseException:
            self._in_flight.discard(watched)
            raise
        self.calls_made += 1
        watched.future = future
        future.add_done_callback(watched.settled)
        return future

    def busy(self) -> bool:
        return bool(self._in_flight)

    async def one_call_ends(self) -> None:
        """Wait until one of the calls in flight ends (its result, if its Task still
        waits for it, is then on the loop: the next passes see it)."""
        if not self._in_flight:
            return
        ended = asyncio.get_running_loop().create_future()
        self._waiters.append(ended)
        try:
            await asyncio.wait_for(ended, THREAD_CALL_TIMEOUT)
        except asyncio.TimeoutError:
            raise InvariantError(
                "an app call in a thread has not ended, or its end has not reached the"
                " loop, after %.0f s" % THREAD_CALL_TIMEOUT
            ) from None
        finally:
            self._waiters.remove(ended)

    def _ended(self, watched: _WatchedCall) -> None:
        self._in_flight.discard(watched)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _WatchedCall:
    """One call of WatchedThreads: whether its function returned, and its future."""

    __slots__ = ("threads", "loop", "returned", "future")

    def __init__(self, threads: WatchedThreads, loop: asyncio.AbstractEventLoop) -> None:
        self.threads = threads
        self.loop = loop
        self.returned = False
        self.future: Optional[asyncio.Future] = None

    def run(self, function: Callable, arguments: tuple) -> None:
        """On an app thread: the call, then word to the loop that it returned."""
        try:
            function(*arguments)
        finally:
            try:
                self.loop.call_soon_threadsafe(self.function_returned)
            except RuntimeError:
                pass  # the loop is closed: its run was given up (and has failed)

    def function_returned(self) -> None:
        self.returned = True
        self.check()

    def settled(self, _future: asyncio.Future) -> None:
        self.check()

    def check(self) -> None:
        if self.returned and self.future is not None and self.future.done():
            self.threads._ended(self)


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
    `settle()` to give the tasks loop passes until a condition holds. With `threads`
    (a WSGI app's), a pass while they have calls in flight lasts until one ends,
    and the run ends once none is.

    The server's log goes to this run only (not to the terminal: a fuzzer sends
    thousands of malformed requests a second)."""

    def __init__(self, threads: Optional[WatchedThreads] = None) -> None:
        self.threads = threads
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
        try:
            self.loop.run_until_complete(asyncio.sleep(0))
            self.settle(self.idle)  # (calls in flight: a run that failed half-way)
        finally:
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
                await self._one_pass()
            return done is None or done()

        return self.loop.run_until_complete(passes())

    def idle(self) -> bool:
        """No call of the app's threads in flight."""
        return self.threads is None or not self.threads.busy()

    async def _one_pass(self) -> bool:
        """One loop pass, or, while a call of the app's threads is in flight, until one
        ends; returns whether it waited for a call (progress: its result comes next)."""
        if self.idle():
            await asyncio.sleep(0)
            return False
        await self.threads.one_call_ends()
        return True

    def settle_until_quiet(self, progress) -> None:
        """Run the loop until `progress()` (what the connection wrote and did) has
        not changed for QUIET_ROUNDS passes, at most SETTLE_MAX_ROUNDS passes: an
        app may wait for more bytes for ever, and it is not a hang."""

        async def passes() -> None:
            last, quiet = progress(), 0
            for _ in range(SETTLE_MAX_ROUNDS):
                waited = await self._one_pass()
                now = progress()
                quiet = quiet + 1 if now == last and not waited else 0
                if quiet >= QUIET_ROUNDS:
                    return
                last = now

        self.loop.run_until_complete(passes())

    def check_errors(self) -> None:
        if self.errors:
            raise InvariantError("\n".join(self.errors))
