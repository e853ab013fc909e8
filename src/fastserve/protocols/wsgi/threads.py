"""The WSGI app's threads (--threads) and the way back to the event loop.

`AppThreads` is a fixed set of threads fed by one `queue.SimpleQueue` (a C queue: a
put and a get cost a lock each, no Python-level Condition or Future per call, as
`concurrent.futures` makes). A call's end comes back to its loop through `LoopWaker`:
the threads append finished calls to a deque and wake the loop once for all of
those that finish before it runs, so that under load one wake-up (one write to the
loop's self-pipe or eventfd) answers many requests.

The threads are made at the first call, in the process that serves (never in a
master before fork), and are daemon threads: a call that never returns (the
client has had its 504 from --timeout-request) does not keep the worker from
exiting after the graceful shutdown. They end when their `AppThreads` is collected
(a server made and dropped in one process, as tests do, leaves none behind).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import weakref
from typing import Callable, Optional

THREAD_NAME_PREFIX = "fastserve.wsgi"


class ThreadCall:
    """One call of `function` on an app thread; `future` (of the loop) gets its end."""

    __slots__ = ("function", "arguments", "future", "waker", "error")

    def __init__(self, function: Callable, arguments: tuple, waker: LoopWaker) -> None:
        self.function = function
        self.arguments = arguments
        self.waker = waker
        self.future = waker.loop.create_future()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        """On an app thread."""
        try:
            self.function(*self.arguments)
        except BaseException as exc:  # handed to the request's Task, as an executor does
            self.error = exc
        self.waker.finished(self)

    def settle(self) -> None:
        """On the loop: the call's end to the waiting Task (unless it was cancelled)."""
        future = self.future
        if future.done():
            return
        if self.error is None:
            future.set_result(None)
        else:
            future.set_exception(self.error)
            self.error = None  # no reference cycle through the traceback


class LoopWaker:
    """Hands finished calls back to one event loop, one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.finished_calls: collections.deque[ThreadCall] = collections.deque()
        # a drain is scheduled and has not begun: the threads need not wake the loop.
        # (No lock: a thread that reads a stale False schedules one drain too many.)
        self.scheduled = False

    def finished(self, call: ThreadCall) -> None:
        """On an app thread."""
        self.finished_calls.append(call)
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for the call any more

    def drain(self) -> None:
        """On the loop. The flag is cleared before the deque is emptied: a call
        appended after this point either is taken below or schedules a new drain."""
        self.scheduled = False
        finished_calls = self.finished_calls
        while finished_calls:
            finished_calls.popleft().settle()


class AppThreads:
    """`size` threads calling the WSGI app, fed by one queue."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: queue.SimpleQueue[Optional[ThreadCall]] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.waker: Optional[LoopWaker] = None

    def call(self, function: Callable, *arguments: object) -> asyncio.Future:
        """`function(*arguments)` on an app thread; the future is done when it returns."""
        loop = asyncio.get_running_loop()
        waker = self.waker
        if waker is None or waker.loop is not loop:
            waker = self.waker = LoopWaker(loop)
        if not self.threads:
            self.start()
        call = ThreadCall(function, arguments, waker)
        self.calls.put(call)
        return call.future

    def start(self) -> None:
        for number in range(self.size):
            thread = threading.Thread(
                target=work, args=(self.calls,), name=f"{THREAD_NAME_PREFIX}_{number}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        weakref.finalize(self, stop, self.calls, self.size)


def work(calls: queue.SimpleQueue) -> None:
    """An app thread: the calls in order of arrival, until a None."""
    while True:
        call = calls.get()
        if call is None:
            return
        call.run()


def stop(calls: queue.SimpleQueue, size: int) -> None:
    for _ in range(size):
        calls.put(None)
