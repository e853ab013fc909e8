"""The pre-fork supervisor behind `fastserve --workers N`.

Read it like Gunicorn's arbiter. The master process binds the listening sockets,
forks the workers, and from then on only reacts, in one loop, to signals and to
its workers:

    run()
      start()            on_starting hook, bind sockets (or take systemd's), --pid,
                         --preload the app, install signal handlers, when_ready hook
      loop:
        a queued signal?  → handle_<name>()   (HUP, TTIN, TTOU, USR1, TERM/INT/QUIT),
                            then manage_workers()
        else sleep()      until a signal, a heartbeat, a scrape of --metrics-port or
                          one second passed (answers scrapes; a report past
                          --max-requests counts that worker out: replace_early), then
             reap_workers()    collect exited workers, notice boot failures
             murder_workers()  SIGABRT (then SIGKILL) workers whose heartbeat stopped
             check_memory()    retire workers over --max-worker-memory
             manage_workers()  fork replacements, retire extra or old workers,
                               tell systemd READY=1 once a generation booted
             report_statsd()   --statsd-host, once a second
      stop()             STOPPING=1 to systemd, SIGTERM (graceful) or SIGQUIT (fast)
                         to every worker, wait
      on_exit hook, the pid file removed

Gunicorn's worker hooks (post_fork, post_worker_init, worker_exit) and --user/--group
run in the worker (supervisors/worker.py, run_worker).

A worker (`run_worker`, in the forked child) creates its event loop after the fork
and runs a `WorkerServer`: the ordinary `Server` plus a heartbeat task that writes
one frame into a pipe to the master every `heartbeat_interval` seconds (at most one
second) from inside the event loop; with --metrics-port the frame carries the
worker's metrics (see metrics.py). An app that blocks its loop stops the heartbeat and gets replaced.
The first heartbeat also tells the master that the worker has booted (app
imported, lifespan startup complete), which is what a rolling restart waits for.
The worker's own watchdog thread (fastserve/watchdog.py) applies the same
heartbeat rule and logs the stack of the blocked loop before the SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import time
from typing import Optional

from fastserve import systemd
from fastserve.config import PROC_STATM, STARTUP_FAILURE, Config, ConfigError
from fastserve.hooks import HookServer
from fastserve.logging import log_running
from fastserve.metrics import Aggregate, FrameReader, MasterEndpoint
from fastserve.process import OptionError, PidFile, remove_unix_sockets
from fastserve.statsd import StatsdReporter, create_reporter
from fastserve.supervisors.worker import (
    flush_logs,
    reopen_log_files,
    run_worker,
    set_process_title,
)

logger = logging.getLogger("fastserve.error")

# A worker that fails to boot this many times in a row (no worker booted in
# between) makes the master give up instead of forking forever.
BOOT_FAILURE_LIMIT = 3

# Seconds between SIGABRT and SIGKILL for a worker that missed its heartbeat, and
# between SIGQUIT and SIGKILL on a fast stop.
KILL_GRACE = 2.0

# How often the master reads its workers' memory use (--max-worker-memory).
MEMORY_CHECK_INTERVAL = 1.0
MIB = 1024 * 1024
# The most the master reads of one worker's pipe at a time.
PIPE_READ_SIZE = 65536

# Extra seconds the master grants a worker beyond --timeout-graceful-shutdown
# (the worker enforces that timeout itself, then runs the lifespan shutdown).
GRACEFUL_MARGIN = 5.0

SIGNAL_NAMES = {
    getattr(signal, name): name[3:].lower()
    for name in (
        "SIGHUP",
        "SIGQUIT",
        "SIGINT",
        "SIGTERM",
        "SIGTTIN",
        "SIGTTOU",
        "SIGUSR1",
        "SIGCHLD",
    )
}
MASTER_SIGNALS = list(SIGNAL_NAMES)

EXIT_REASONS = {
    1: "the app could not be loaded",
    STARTUP_FAILURE: "application startup failed",
}


def describe_exit(status: int, aborted: bool = False) -> str:
    """`exit code 3 (application startup failed)` / `killed by SIGKILL` from a wait status.
    `aborted`: the master sent SIGABRT (no heartbeat), so the exit code is the abort's,
    and says nothing about the app."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by {name}"
    code = os.WEXITSTATUS(status)
    if aborted:
        return f"exit code {code} on SIGABRT"
    reason = EXIT_REASONS.get(code)
    return f"exit code {code} ({reason})" if reason else f"exit code {code}"


def resident_bytes(pid: int) -> Optional[int]:
    """A process's resident memory (RSS) in bytes; None when it is gone."""
    try:
        with open(PROC_STATM.format(pid=pid)) as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


# -- in the master -----------------------------------------------------------------


class WorkerProcess:
    """The master's record of one forked worker."""

    def __init__(self, generation: int, heartbeat_fd: int, index: int) -> None:
        self.pid = 0
        self.generation = generation
        self.index = index  # 1..N, reused: in the process title
        self.heartbeat_fd: Optional[int] = heartbeat_fd
        self.reports = FrameReader()
        # Why the master replaces it (metrics.RESTART_REASONS); None: not replaced, or
        # not decided yet (then "exit" or "max_requests" when it exits by itself).
        self.restart_reason: Optional[str] = None
        self.max_requests_reached = False
        self.spawned_at = time.monotonic()
        self.last_seen = self.spawned_at
        self.booted = False
        self.retiring_at: Optional[float] = None
        self.aborted_at: Optional[float] = None
        self.killed = False

    def close_heartbeat(self) -> None:
        if self.heartbeat_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.heartbeat_fd)
            self.heartbeat_fd = None


class StopSupervisor(Exception):
    def __init__(self, graceful: bool) -> None:
        self.graceful = graceful


class Supervisor:
    """Forks `config.workers` workers on shared sockets and keeps them healthy."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pid = os.getpid()
        self.num_workers = config.workers
        self.timeout = float(config.worker_healthcheck_timeout)
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 0
        self.signal_queue: list[int] = []
        self.sockets: list[socket.socket] = []
        self.reuse_port_address: Optional[tuple] = None
        self.boot_failures = 0
        self.last_failure = ""
        self.exit_code = 0
        self.wakeup_r = self.wakeup_w = -1
        self.unix_paths: list[str] = []
        self.pidfile: Optional[PidFile] = None
        # READY=1 went to systemd for the current generation (no-op without NOTIFY_SOCKET).
        self.notified_ready = False
        # --metrics-port / --statsd-host: the workers' reports summed, and the
        # endpoint that shows them / the reporter that sends them.
        self.aggregate = Aggregate() if config.collects_metrics else None
        self.metrics_endpoint: Optional[MasterEndpoint] = None
        self.statsd: Optional[StatsdReporter] = None
        self.memory_checked_at = 0.0

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        try:
            self.start()
        except (ConfigError, OptionError) as exc:
            logger.error("%s", exc, exc_info=getattr(exc, "exc_info", None))  # OptionError has none
            self.close_sockets()
            self.exit_process()
            return 1
        try:
            self.manage_workers()
            while True:
                if self.signal_queue:
                    sig = self.signal_queue.pop(0)
                    handler = getattr(self, f"handle_{SIGNAL_NAMES[sig]}")
                    handler()
                    self.manage_workers()  # act on TTIN / TTOU / HUP now, not at the next wake-up
                    continue
                self.sleep()
                self.reap_workers()
                self.murder_workers()
                if self.exit_code:
                    raise StopSupervisor(graceful=False)
                self.check_memory()
                self.manage_workers()
                if self.statsd is not None and self.statsd.due():
                    self.report_statsd()
        except StopSupervisor as stop:
            self.stop(graceful=stop.graceful)
        except BaseException:
            logger.exception("Unhandled exception in the supervisor; stopping the workers.")
            self.stop(graceful=False)
            self.exit_code = self.exit_code or 1
        finally:
            self.close_sockets()
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            if self.statsd is not None:
                self.report_statsd()  # the last interval's responses
                self.statsd.close()
            if self.aggregate is not None:
                self.aggregate.log_counter.detach()
            self.exit_process()
        if self.exit_code:
            logger.error("Supervisor [%d] stopped with exit code %d.", self.pid, self.exit_code)
        else:
            logger.info("Stopped supervisor process [%d]", self.pid)
        return self.exit_code

    def start(self) -> None:
        config = self.config
        logger.info("Started supervisor process [%d]", self.pid)
        set_process_title("master", config)
        config.hooks.run("on_starting", self.hook_server())
        activated = systemd.listen_sockets()
        if activated:
            self.sockets = activated
        elif config.reuse_port:
            self.reserve_reuse_port()
        else:
            self.sockets = config.bind_sockets()
            self.unix_paths = config.unix_paths()
        if config.pidfile:
            self.pidfile = PidFile.create(config.pidfile)
        if config.preload:
            config.load()
        self.log_listening()
        if config.metrics_port is not None:
            self.start_metrics_endpoint()
        self.statsd = create_reporter(
            config.statsd_host, config.statsd_prefix, config.dogstatsd_tags
        )
        if self.aggregate is not None:
            self.aggregate.log_counter.attach()
        self.wakeup_r, self.wakeup_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w):
            os.set_blocking(fd, False)
        for sig in MASTER_SIGNALS:
            signal.signal(sig, self.signal_handler)
        config.hooks.run("when_ready", self.hook_server())

    def hook_server(self) -> HookServer:
        """What Gunicorn's hooks get for the arbiter (fastserve/hooks.py)."""
        return self.config.hooks.server(self.config, self.pid, self.num_workers)

    def exit_process(self) -> None:
        if self.pidfile is not None:
            self.pidfile.remove()
        self.config.hooks.run("on_exit", self.hook_server())

    def reserve_reuse_port(self) -> None:
        """Bind (not listen) a SO_REUSEPORT socket so that port 0 resolves once."""
        sock = self.config.bind_tcp_socket(reuse_port=True)
        self.reuse_port_address = sock.getsockname()[:2]
        self.reserved_socket = sock

    def start_metrics_endpoint(self) -> None:
        config = self.config
        aggregate = self.aggregate
        try:
            self.metrics_endpoint = MasterEndpoint(
                config.metrics_host,
                config.metrics_port,
                lambda: aggregate.view(workers=len(self.workers)),
            )
        except OSError as exc:
            raise ConfigError(
                f"Cannot serve metrics on {config.metrics_host}:{config.metrics_port}: "
                f"{exc.strerror or exc}"
            ) from None

    def report_statsd(self) -> None:
        self.statsd.report(self.aggregate.view(workers=len(self.workers)))

    def log_listening(self) -> None:
        scheme = "https" if self.config.is_ssl else "http"
        plural = "" if self.num_workers == 1 else "s"
        details = f"{self.config.mode_details}, {self.num_workers} worker{plural}"
        if self.reuse_port_address is not None:
            details += ", SO_REUSEPORT"
            log_running([self.reserved_socket], scheme, details)
        else:
            log_running(self.sockets, scheme, details)

    def signal_handler(self, sig: int, frame) -> None:
        if os.getpid() != self.pid:
            return  # a freshly forked worker before it reset its handlers
        # SIGCHLD only wakes the loop (it reaps after every wake-up); every other
        # signal is queued as often as it came (two SIGTTIN add two workers).
        if sig != signal.SIGCHLD:
            self.signal_queue.append(sig)
        self.wakeup()

    def wakeup(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wakeup_w, b".")

    def sleep(self, timeout: float = 1.0) -> None:
        """Wait for a signal, a heartbeat, a scrape or `timeout` seconds; record
        heartbeats and reports, answer scrapes."""
        by_fd = {w.heartbeat_fd: w for w in self.workers.values() if w.heartbeat_fd is not None}
        endpoint = self.metrics_endpoint
        scrapes = endpoint.fds() if endpoint is not None else []
        try:
            ready, _, _ = select.select([self.wakeup_r, *by_fd, *scrapes], [], [], timeout)
        except OSError as exc:
            if exc.errno not in (errno.EINTR, errno.EBADF):
                raise
            return
        for fd in ready:
            if fd == self.wakeup_r:
                with contextlib.suppress(OSError):
                    while os.read(self.wakeup_r, 4096):
                        pass
            elif fd in by_fd:
                self.read_reports(by_fd[fd])
            elif endpoint is not None and endpoint.owns(fd):
                endpoint.ready(fd)
        if endpoint is not None:
            endpoint.expire()

    def read_reports(self, worker: WorkerProcess) -> bool:
        """Take what a worker wrote into its pipe: heartbeats and metrics reports.
        False when nothing was there."""
        if worker.heartbeat_fd is None:
            return False
        try:
            data = os.read(worker.heartbeat_fd, PIPE_READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            worker.close_heartbeat()  # the worker is exiting
            return False
        worker.last_seen = time.monotonic()
        if not worker.booted:
            worker.booted = True
            self.boot_failures = 0
            logger.info("Worker [%d] is ready", worker.pid)
        try:
            reports = worker.reports.feed(data)
        except ValueError as exc:
            logger.error(
                "Worker [%d] wrote an unreadable report (%s); ignoring it", worker.pid, exc
            )
            worker.reports = FrameReader()
            return True
        for report in reports:
            if report is None:
                continue
            if self.aggregate is not None:  # else no snapshot, a MAX_REQUESTS_NOTICE
                self.aggregate.report(worker.pid, report)
            if report["max_requests_reached"] and not worker.max_requests_reached:
                worker.max_requests_reached = True
                self.replace_early(worker)
        return True

    def replace_early(self, worker: WorkerProcess) -> None:
        """A worker that reached --max-requests stops by itself, and may take up to
        --timeout-graceful-shutdown to finish its requests: count it out now, so that
        the next manage_workers() starts its replacement (one worker: the socket is
        not left without a listener meanwhile)."""
        if worker.retiring_at is not None:
            return
        logger.info("Worker [%d] reached --max-requests; starting its replacement", worker.pid)
        worker.retiring_at = time.monotonic()
        worker.restart_reason = "max_requests"

    # -- signals -----------------------------------------------------------------------

    def handle_hup(self) -> None:
        """Rolling restart: boot a new generation, then retire the old one gracefully.
        The TLS certificate and key are read again first, so that a rotation on disk
        reaches the new workers; when they fail to load, the current workers (and,
        with --preload, the master's context) stay."""
        if self.config.is_ssl:
            try:
                self.config.reload_tls()
            except ConfigError as exc:
                logger.error(
                    "Received SIGHUP: %s; no rolling restart, the workers keep serving", exc
                )
                return
        self.config.hooks.run("on_reload", self.hook_server())
        self.generation += 1
        systemd.notify(systemd.reloading_message())
        self.notified_ready = False
        logger.info(
            "Received SIGHUP: rolling restart, starting %d new worker(s) before "
            "retiring the old ones",
            self.num_workers,
        )
        self.boot_failures = 0

    def handle_ttin(self) -> None:
        self.num_workers += 1
        logger.info("Received SIGTTIN: %d worker(s) now", self.num_workers)
        self.config.hooks.run(
            "nworkers_changed", self.hook_server(), self.num_workers, self.num_workers - 1
        )

    def handle_ttou(self) -> None:
        if self.num_workers <= 1:
            logger.info("Received SIGTTOU: already down to one worker")
            return
        self.num_workers -= 1
        logger.info("Received SIGTTOU: %d worker(s) now", self.num_workers)
        self.config.hooks.run(
            "nworkers_changed", self.hook_server(), self.num_workers, self.num_workers + 1
        )

    def handle_usr1(self) -> None:
        reopen_log_files()
        logger.info("Received SIGUSR1: reopened log files")
        self.kill_workers(signal.SIGUSR1)

    def handle_term(self) -> None:
        raise StopSupervisor(graceful=True)

    def handle_int(self) -> None:
        raise StopSupervisor(graceful=True)

    def handle_quit(self) -> None:
        raise StopSupervisor(graceful=False)

    # -- workers -----------------------------------------------------------------------

    def current_workers(self) -> list[WorkerProcess]:
        return [
            w
            for w in self.workers.values()
            if w.generation == self.generation and w.retiring_at is None
        ]

    def manage_workers(self) -> None:
        """Keep `num_workers` workers of the current generation; retire the rest."""
        current = self.current_workers()
        for _ in range(self.num_workers - len(current)):
            try:
                self.spawn_worker()
            except OSError as exc:
                logger.error("Cannot fork a worker: %s; retrying in a second", exc.strerror or exc)
                break
        if len(current) > self.num_workers:
            for worker in sorted(current, key=lambda w: w.spawned_at)[
                : len(current) - self.num_workers
            ]:
                self.retire_worker(worker, "there are more workers than wanted")
        old = [
            w
            for w in self.workers.values()
            if w.generation < self.generation and w.retiring_at is None
        ]
        if old:
            current = self.current_workers()
            if len(current) >= self.num_workers and all(w.booted for w in current):
                logger.info("Rolling restart: new workers are ready, retiring the old ones")
                for worker in old:
                    self.retire_worker(worker, "rolling restart", restart_reason="reload")
        if not self.notified_ready:
            # Ready once a whole generation booted: at start, or after a rolling restart
            # (its new workers, or the old ones again when it was aborted).
            current = self.current_workers()
            if len(current) >= self.num_workers and all(w.booted for w in current):
                systemd.notify(systemd.READY)
                self.notified_ready = True

    def retire_worker(
        self, worker: WorkerProcess, reason: str, restart_reason: Optional[str] = None
    ) -> None:
        """SIGTERM: the worker stops gracefully. With a `restart_reason` it is being
        replaced (and counted so); without, it is not (fewer workers, an aborted
        rolling restart)."""
        logger.info("Stopping worker [%d] gracefully (%s)", worker.pid, reason)
        worker.retiring_at = time.monotonic()
        worker.restart_reason = restart_reason
        self.kill_worker(worker, signal.SIGTERM)

    def check_memory(self) -> None:
        """--max-worker-memory: retire a worker whose resident memory passed it."""
        limit = self.config.max_worker_memory
        now = time.monotonic()
        if limit is None or now - self.memory_checked_at < MEMORY_CHECK_INTERVAL:
            return
        self.memory_checked_at = now
        for worker in list(self.workers.values()):
            if worker.retiring_at is not None or not worker.booted:
                continue
            rss = resident_bytes(worker.pid)
            if rss is not None and rss > limit * MIB:
                self.retire_worker(
                    worker,
                    f"its memory (RSS) is {rss / MIB:.1f} MiB, over --max-worker-memory "
                    f"{limit} MiB; replacing it",
                    restart_reason="memory",
                )

    def free_index(self) -> int:
        used = {w.index for w in self.workers.values()}
        return next(index for index in range(1, len(used) + 2) if index not in used)

    def spawn_worker(self) -> WorkerProcess:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        worker = WorkerProcess(self.generation, read_fd, self.free_index())
        hooks = self.config.hooks
        hooks.run("pre_fork", self.hook_server(), hooks.child(self.config, None, worker.index))
        # Blocked across fork: a signal sent to the new worker before prepare_child
        # would run the master's handler there and be lost; it waits, pending, for
        # the worker's own disposition.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(write_fd)
            worker.pid = pid
            self.workers[pid] = worker
            return worker

        # The child: never returns into the master's loop.
        code = 1
        try:
            os.close(read_fd)
            self.prepare_child()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            set_process_title(f"worker {worker.index}", self.config)
            code = run_worker(
                self.config, self.worker_sockets(), write_fd, self.timeout, worker.index
            )
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            logger.exception("Worker [%d] crashed", os.getpid())
            code = 1
        finally:
            flush_logs()
            os._exit(code)

    def prepare_child(self) -> None:
        """In a new worker: drop the master's signal handlers and file descriptors."""
        for sig in MASTER_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self.wakeup_r, self.wakeup_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for worker in self.workers.values():
            worker.close_heartbeat()
        self.workers = {}
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        if self.statsd is not None:
            self.statsd.close()
            self.statsd = None
        if self.aggregate is not None:
            self.aggregate.log_counter.detach()  # the worker counts its own

    def worker_sockets(self) -> list[socket.socket]:
        if self.reuse_port_address is None:
            return self.sockets
        self.reserved_socket.close()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(self.reuse_port_address)
        sock.listen(self.config.backlog)
        return [sock]

    def kill_worker(self, worker: WorkerProcess, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def kill_workers(self, sig: int) -> None:
        for worker in list(self.workers.values()):
            self.kill_worker(worker, sig)

    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            while self.read_reports(worker):
                pass  # its last report may be in the pipe still
            worker.close_heartbeat()
            self.count_restart(worker)
            hooks = self.config.hooks
            hooks.run("child_exit", self.hook_server(), hooks.child(self.config, pid, worker.index))
            how = describe_exit(status, aborted=worker.aborted_at is not None)
            if worker.aborted_at is not None:
                silence = (
                    f"for {self.timeout:g}s"
                    if worker.booted
                    else (f"within {self.timeout:g}s of its start")
                )
                how = f"no heartbeat {silence} (--timeout-worker-healthcheck), {how}"
            if worker.retiring_at is not None:
                logger.info("Worker [%d] stopped (%s)", pid, how)
            elif not worker.booted:
                self.boot_failures += 1
                self.last_failure = how
                logger.error("Worker [%d] failed to boot (%s)", pid, how)
                if self.boot_failures >= BOOT_FAILURE_LIMIT:
                    self.give_up(status)
            elif worker.aborted_at is not None:
                logger.error(
                    "Worker [%d] was killed after its heartbeat stopped (%s); replacing it",
                    pid,
                    how,
                )
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                logger.info("Worker [%d] exited (%s); replacing it", pid, how)
            else:
                logger.error("Worker [%d] died unexpectedly (%s); replacing it", pid, how)

    def count_restart(self, worker: WorkerProcess) -> None:
        """For fastserve_worker_restarts_total: why this exited worker is replaced."""
        if self.aggregate is None:
            return
        self.aggregate.worker_gone(worker.pid)
        reason = worker.restart_reason
        if reason is None and worker.retiring_at is None:
            reason = "max_requests" if worker.max_requests_reached else "exit"
        if reason is not None:
            self.aggregate.restarted(reason)

    def give_up(self, status: int) -> None:
        """Repeated boot failures: abort a rolling restart, or stop the master."""
        old = [w for w in self.workers.values() if w.generation < self.generation and w.booted]
        if old:
            logger.error(
                "Rolling restart aborted: new workers failed to boot %d times in a row (%s); "
                "the old workers keep serving",
                self.boot_failures,
                self.last_failure,
            )
            for worker in self.current_workers():
                self.retire_worker(worker, "rolling restart aborted")
            for worker in old:
                worker.generation = self.generation
            self.boot_failures = 0
            return
        logger.error(
            "Workers failed to boot %d times in a row (last: %s); stopping. "
            "Fix the error logged above and start again.",
            self.boot_failures,
            self.last_failure,
        )
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
        self.exit_code = code if code in EXIT_REASONS else 1

    def murder_workers(self) -> None:
        """SIGABRT a worker whose heartbeat stopped, SIGKILL it if that did not help."""
        now = time.monotonic()
        graceful = self.config.timeout_graceful_shutdown
        for worker in list(self.workers.values()):
            if worker.aborted_at is not None:
                if not worker.killed and now - worker.aborted_at > KILL_GRACE:
                    worker.killed = True
                    self.kill_worker(worker, signal.SIGKILL)
                continue
            silent = now - worker.last_seen
            if silent > self.timeout:
                if worker.booted:
                    logger.error(
                        "Worker [%d] sent no heartbeat for %.1fs (its event loop is blocked); "
                        "killing it",
                        worker.pid,
                        silent,
                    )
                else:
                    logger.error(
                        "Worker [%d] did not boot within %gs (--timeout-worker-healthcheck); "
                        "killing it",
                        worker.pid,
                        self.timeout,
                    )
                worker.aborted_at = now
                if worker.retiring_at is None:
                    worker.restart_reason = "healthcheck"
                self.kill_worker(worker, signal.SIGABRT)
            elif (
                worker.retiring_at is not None
                and graceful is not None
                and now - worker.retiring_at > graceful + GRACEFUL_MARGIN
                and not worker.killed
            ):
                logger.error("Worker [%d] did not stop in time; killing it", worker.pid)
                worker.killed = True
                self.kill_worker(worker, signal.SIGKILL)

    # -- stopping ----------------------------------------------------------------------

    def stop(self, graceful: bool) -> None:
        """Stop every worker: SIGTERM and wait, or SIGQUIT then SIGKILL after a moment."""
        systemd.notify(systemd.STOPPING)
        if graceful:
            logger.info("Stopping %d worker(s) gracefully", len(self.workers))
        else:
            logger.info("Stopping %d worker(s) now", len(self.workers))
        # Stop accepting here; the workers close their own copies when they stop.
        self.close_sockets()
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        self.kill_workers(sig)
        now = time.monotonic()
        timeout = self.config.timeout_graceful_shutdown
        if not graceful:
            deadline: Optional[float] = now + KILL_GRACE
        elif timeout is not None:
            deadline = now + timeout + GRACEFUL_MARGIN
        else:
            deadline = None
        for worker in self.workers.values():
            worker.retiring_at = now
        while self.workers:
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.sleep(0.1)
            while self.signal_queue:
                sig = self.signal_queue.pop(0)
                if sig in (signal.SIGINT, signal.SIGQUIT) and graceful:
                    logger.info("Stopping the workers now")
                    graceful = False
                    deadline = time.monotonic() + KILL_GRACE
                    self.kill_workers(signal.SIGQUIT)
            self.reap_workers()
            self.murder_workers()  # a worker whose loop is blocked never stops by itself
        if self.workers:
            logger.error("Killing %d worker(s) that did not stop in time", len(self.workers))
            self.kill_workers(signal.SIGKILL)
            for pid in list(self.workers):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                self.workers.pop(pid).close_heartbeat()

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        if self.reuse_port_address is not None:
            self.reserved_socket.close()
        remove_unix_sockets(self.unix_paths)
        self.unix_paths = []
