"""What a worker process runs: the `Server` with a heartbeat and a worker's signal
policy. fastserve's own master (`multiprocess.py`) forks workers that run
`run_worker`; the Gunicorn worker classes (`fastserve.workers`) run `WorkerServer`
under Gunicorn's arbiter, and import this module without the master."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Callable, Optional

from fastserve.access_buffer import access_buffer
from fastserve.config import STARTUP_FAILURE, Config
from fastserve.hooks import HookWorker
from fastserve.metrics import MAX_REQUESTS_NOTICE, frame
from fastserve.process import OptionError, drop_privileges
from fastserve.server import Server
from fastserve.watchdog import current_task, describe_stack

logger = logging.getLogger("fastserve.error")

# A worker beats several times per healthcheck timeout, at most this often...
MIN_HEARTBEAT_INTERVAL = 0.05
# ...and at least this often.
MAX_HEARTBEAT_INTERVAL = 1.0
HEARTBEATS_PER_TIMEOUT = 4


def all_log_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    return [handler for item in loggers for handler in item.handlers]


def reopen_log_files() -> None:
    """Reopen every logging file handler (after logrotate moved the files away)."""
    for handler in all_log_handlers():
        if not isinstance(handler, logging.FileHandler):
            continue
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.close()
            handler.stream = handler._open()
        except OSError as exc:
            sys.stderr.write(f"fastserve: cannot reopen log file {handler.baseFilename}: {exc}\n")
        finally:
            handler.release()


class WorkerServer(Server):
    """The `Server` as a supervised worker runs it.

    Adds a heartbeat task (`notify()` every `heartbeat_interval` seconds, from inside
    the event loop, also while draining), with `heartbeat_timeout` the loop watchdog
    that logs where the loop is stuck once the heartbeat is that late
    (fastserve/watchdog.py), and the worker's signal policy:
    SIGTERM graceful stop, SIGINT graceful then fast on the second one, `fast_signals`
    (SIGQUIT) immediate stop, SIGUSR1 reopen log files, SIGABRT (sent by the master
    when the heartbeat stopped) log where the worker is stuck (unless the watchdog
    did) and exit.
    Both the fastserve supervisor and the Gunicorn worker class use it.
    """

    def __init__(
        self,
        config: Config,
        notify: Callable[[], None],
        heartbeat_interval: float,
        fast_signals: Sequence[int] = (signal.SIGQUIT,),
        on_abort: Optional[Callable[[], None]] = None,
        on_fast_exit: Optional[Callable[[], None]] = None,
        on_usr1: Callable[[], None] = reopen_log_files,
        should_stop: Optional[Callable[[], bool]] = None,
        heartbeat_timeout: Optional[float] = None,
        on_started: Optional[Callable[[], None]] = None,
        own_statsd: bool = False,
    ) -> None:
        super().__init__(config)
        self.own_statsd = own_statsd
        self.heartbeat_timeout = heartbeat_timeout
        self.notify = notify
        self.heartbeat_interval = heartbeat_interval
        self.fast_signals = tuple(fast_signals)
        self.on_abort = on_abort
        self.on_fast_exit = on_fast_exit
        self.on_usr1 = on_usr1
        self.should_stop = should_stop
        self.on_started = on_started
        self.parent_pid = os.getppid()
        self._heartbeat_task: Optional[asyncio.Task] = None

    async def serve(self, sockets=None) -> None:
        try:
            await super().serve(sockets=sockets)
        finally:
            if self._heartbeat_task is not None:
                self._heartbeat_task.cancel()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            if self.on_started is not None:
                self.on_started()
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            if os.getppid() != self.parent_pid and not self.should_exit:
                logger.warning("The master process is gone; worker [%d] stops.", os.getpid())
                self.should_exit = True
            if self.should_stop is not None and self.should_stop() and not self.should_exit:
                self.should_exit = True
            self.notify()
            if self.watchdog is not None:
                self.watchdog.beat()
            await asyncio.sleep(self.heartbeat_interval)

    async def on_tick(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            self.should_exit = True
        stopping = await super().on_tick()
        if stopping:
            self.notify()  # at once: a report past --max-requests starts the replacement
        return stopping

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.handle_exit, signal.SIGTERM, None)
        if signal.SIGINT not in self.fast_signals:
            loop.add_signal_handler(signal.SIGINT, self.handle_exit, signal.SIGINT, None)
        for sig in self.fast_signals:
            loop.add_signal_handler(sig, self.handle_fast_exit)
        loop.add_signal_handler(signal.SIGUSR1, self.on_usr1)
        for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        # A plain handler, not a loop one: it must run while the loop is blocked.
        signal.signal(signal.SIGABRT, self.handle_abort)

    def handle_fast_exit(self) -> None:
        self.should_exit = True
        self.force_exit = True
        if self.on_fast_exit is not None:
            with contextlib.suppress(Exception):
                self.on_fast_exit()

    def handle_abort(self, sig: int, frame) -> None:
        # (the watchdog thread may have logged the stack already: one stack per kill)
        if self.watchdog is None or self.watchdog.claim_heartbeat_stall():
            logger.error(
                "Worker [%d] aborted: no heartbeat for too long, its event loop was blocked here: %s",
                os.getpid(),
                describe_stack(frame, current_task(), self.server_state.tasks),
            )
        else:
            logger.error("Worker [%d] aborted: no heartbeat for too long", os.getpid())
        if self.on_abort is not None:
            with contextlib.suppress(Exception):
                self.on_abort()
        flush_logs()
        os._exit(1)


def flush_logs() -> None:
    access_buffer.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in all_log_handlers():
        with contextlib.suppress(Exception):
            handler.flush()


def heartbeat_interval_for(timeout: float) -> float:
    """How often a worker beats: several times per timeout, at most once a second."""
    return max(
        MIN_HEARTBEAT_INTERVAL, min(MAX_HEARTBEAT_INTERVAL, timeout / HEARTBEATS_PER_TIMEOUT)
    )


def set_process_title(role: str, config: Config) -> None:
    """`fastserve: ROLE [APP]` in ps and top, when setproctitle is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    app = config.app
    if not isinstance(app, str):
        app = getattr(app, "__qualname__", type(app).__qualname__)
    setproctitle(f"fastserve: {role} [{app}]")


class ReportPipe:
    """A worker's end of its heartbeat pipe to the master. Each beat is one frame
    (`metrics.frame`), with the worker's metrics when they are on. The pipe does
    not block the event loop: a frame the pipe cannot take at once is finished at
    the next beats, and beats meanwhile are skipped (each report carries totals)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.unsent = b""
        os.set_blocking(fd, False)

    def send(self, data: bytes) -> None:
        if not self.unsent:
            self.unsent = data
        try:
            written = os.write(self.fd, self.unsent)
        except BlockingIOError:
            return  # the master is busy; the pipe is full
        except OSError:
            self.unsent = b""  # the master is gone; the heartbeat task notices the new parent
            return
        self.unsent = self.unsent[written:]

    def send_last(self, data: bytes) -> None:
        """The report at exit: wait until the pipe takes all of it."""
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, True)
            if self.unsent:
                os.write(self.fd, self.unsent)
            os.write(self.fd, data)


def run_worker(
    config: Config,
    sockets: Sequence[socket.socket],
    heartbeat_fd: int,
    timeout: float,
    index: int = 1,
) -> int:
    """The body of a forked worker (number `index`): Gunicorn's worker hooks around
    serving on the inherited sockets as --user/--group; the exit code."""
    hooks = config.hooks
    hook_server = hooks.server(config, os.getppid(), config.workers)
    hook_worker = hooks.worker(config, index)
    hooks.run("post_fork", hook_server, hook_worker)
    try:
        drop_privileges(config.uid, config.gid)
    except OptionError as exc:
        logger.error("Worker [%d]: %s", os.getpid(), exc)
        return 1
    try:
        return serve_worker(config, sockets, heartbeat_fd, timeout, hook_worker)
    finally:
        hooks.run("worker_exit", hook_server, hook_worker)


def serve_worker(
    config: Config,
    sockets: Sequence[socket.socket],
    heartbeat_fd: int,
    timeout: float,
    hook_worker: HookWorker,
) -> int:
    pipe = ReportPipe(heartbeat_fd)

    def report() -> bytes:
        metrics = server.server_state.metrics
        limit = server.limit_max_requests
        state = server.server_state
        reached = limit is not None and state.total_requests >= limit
        if metrics is None:
            return frame(MAX_REQUESTS_NOTICE if reached else None)
        return frame(metrics.snapshot(state, reached))

    server = WorkerServer(
        config,
        notify=lambda: pipe.send(report()),
        heartbeat_interval=heartbeat_interval_for(timeout),
        heartbeat_timeout=timeout,
        on_started=lambda: config.hooks.run("post_worker_init", hook_worker),
        on_fast_exit=lambda: config.hooks.run("worker_int", hook_worker),
        on_abort=lambda: config.hooks.run("worker_abort", hook_worker),
    )
    server.run(sockets=list(sockets))
    if server.started:
        pipe.send_last(report())
    return 0 if server.started else STARTUP_FAILURE
