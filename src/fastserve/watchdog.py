"""Where a blocked event loop is stuck: loop-stall warnings and the stack logged
before a supervised worker is killed for a stopped heartbeat.

Only a thread can see a blocked loop, so `LoopWatchdog` has two sides:

- in the loop, a callback every `interval` seconds stamps `time.monotonic()` (one
  cheap timer; nothing per request);
- in a daemon thread, every `interval` seconds, a check: when the stamp is older
  than `--warn-loop-stall`, one warning with the stack of the loop's thread
  (`sys._current_frames()`), once per stall.

The request being served. Both HTTP modes (and the WebSocket protocols) run each
app call in its own Task and keep it in `ServerState.tasks`, a dict from the Task
to its scope. During a stall the loop's thread is inside one Task's step, which
asyncio records as the loop's current task: the thread reads
`asyncio.current_task(loop)` and looks it up in that dict (two reads of dicts,
atomic under the GIL). That needs nothing per request beyond the dict entry the
server keeps anyway; a contextvar would need Task.get_context(), which Python
before 3.12 lacks. A stall outside any app Task (a protocol callback) names no
request.

The supervisor's kill. A supervised worker always runs the watchdog, also without
`--warn-loop-stall`, with its heartbeat as a second clock: `beat()` is called on
every heartbeat sent to the master, and once the last one is older than
`--timeout-worker-healthcheck` (the master's own rule, on the same system-wide
monotonic clock) the thread logs the stack as an error. The master sends SIGABRT
at that moment and SIGKILL `KILL_GRACE` seconds later; the thread checks at least
once a second, so the record is written before the SIGKILL. The worker's SIGABRT
handler (kept: the Gunicorn worker has no other) logs the stack only when the
thread has not, so a kill logs one stack.
Why a thread rather than the signal alone, or faulthandler: a Python signal handler
runs only when the main thread gets back to Python code, which a C call that
blocks with the GIL released (a database driver waiting on its socket, a lock)
never does; faulthandler writes from C even then, but to a file, not as a log
record through the configured handlers, and without the request. The thread runs
whenever the GIL is free. Nothing can report a loop blocked in C code that holds
the GIL; SIGKILL ends it regardless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Optional

logger = logging.getLogger("fastserve.error")

# The thread checks several times per threshold, so a stall is reported at most a
# quarter late...
CHECKS_PER_THRESHOLD = 4
# ...and at least once a second: well within the master's KILL_GRACE.
MAX_CHECK_INTERVAL = 1.0
# How long the SIGABRT handler waits for the thread's record of the stall before
# the worker exits (below KILL_GRACE, after which SIGKILL comes anyway).
REPORT_WAIT = 1.0


def stall_location(frame: Optional[FrameType]) -> str:
    """`blocking_handler (app.py:12)`: the innermost function of a stack."""
    if frame is None:
        return "(unknown)"
    code = frame.f_code
    return f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"


def request_of(task: Optional[asyncio.Task], tasks: dict) -> str:
    """` during GET /path` for the task of an app call, else an empty string."""
    scope = tasks.get(task) if task is not None else None
    if scope is None:
        return ""
    method = scope.get("method", "WEBSOCKET")
    return f" during {method} {scope.get('path', '')}"


def current_task(loop: Optional[asyncio.AbstractEventLoop] = None) -> Optional[asyncio.Task]:
    """The Task `loop` (default: this thread's) is running a step of, if any."""
    try:
        return asyncio.current_task(loop)
    except RuntimeError:  # no running loop (yet, or any more)
        return None


def describe_stack(frame: Optional[FrameType], task: Optional[asyncio.Task], tasks: dict) -> str:
    """`in f (file:line) during GET /path` and, on the next lines, the stack."""
    stack = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else ""
    return f"in {stall_location(frame)}{request_of(task, tasks)}\n{stack}"


class LoopWatchdog:
    """Watches the running loop from a daemon thread; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tasks: dict,
        warn_after: Optional[float],
        heartbeat_timeout: Optional[float] = None,
    ) -> None:
        self.loop = loop
        self.tasks = tasks
        self.warn_after = warn_after
        self.heartbeat_timeout = heartbeat_timeout
        thresholds = [t for t in (warn_after, heartbeat_timeout) if t is not None]
        self.interval = min(MAX_CHECK_INTERVAL, min(thresholds) / CHECKS_PER_THRESHOLD)
        self.loop_thread_id = threading.get_ident()
        self.last_run = time.monotonic()
        self.last_beat: Optional[float] = None  # no heartbeat check before the first
        # The stamp of the stall last reported, per clock: one report per stall.
        self.warned_run: Optional[float] = None
        self.reported_beat: Optional[float] = None
        # A heartbeat stall is claimed under this lock, by the thread or by the
        # SIGABRT handler: whichever comes first logs the stack. (Not held while
        # logging: the handler may have interrupted the main thread inside a
        # logging handler's lock.) The handler, before the process exits, waits a
        # moment for the thread's record: `beat_logged`.
        self.report_lock = threading.Lock()
        self.beat_logged = threading.Event()
        self.stopped = threading.Event()
        self.timer: Optional[asyncio.TimerHandle] = None
        self.thread = threading.Thread(target=self._watch, name="fastserve-watchdog", daemon=True)

    def start(self) -> None:
        self._stamp()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def beat(self) -> None:
        """A heartbeat went to the master (called in the loop)."""
        self.last_beat = time.monotonic()

    def _stamp(self) -> None:
        self.last_run = time.monotonic()
        self.timer = self.loop.call_later(self.interval, self._stamp)

    # -- in the thread -------------------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            last_run = self.last_run
            if (
                self.warn_after is not None
                and now - last_run >= self.warn_after
                and self.warned_run != last_run
            ):
                self.warned_run = last_run
                logger.warning("Event loop stalled for %.1f s %s", now - last_run, self._describe())
            last_beat = self.last_beat
            if (
                self.heartbeat_timeout is not None
                and last_beat is not None
                and now - last_beat > self.heartbeat_timeout
            ):
                with self.report_lock:
                    claimed = self.reported_beat != last_beat
                    if claimed:
                        self.reported_beat = last_beat
                        self.beat_logged.clear()
                if claimed:
                    logger.error(
                        "Worker [%d] sent no heartbeat for %.1f s, the supervisor kills it; "
                        "its event loop is stalled %s",
                        os.getpid(),
                        now - last_beat,
                        self._describe(),
                    )
                    self.beat_logged.set()

    def _describe(self) -> str:
        frame = sys._current_frames().get(self.loop_thread_id)
        return describe_stack(frame, current_task(self.loop), self.tasks)

    # -- in the SIGABRT handler ----------------------------------------------------------

    def claim_heartbeat_stall(self) -> bool:
        """True when the caller is to log the current heartbeat stall's stack (then
        the thread will not); False once the thread has logged it."""
        with self.report_lock:
            if self.last_beat is None or self.reported_beat != self.last_beat:
                self.reported_beat = self.last_beat
                return True
        self.beat_logged.wait(REPORT_WAIT)
        return False
