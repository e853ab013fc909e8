"""Helpers for tests that run servers as real processes: start, wait, load, clean up.

`ServerProcess` is the one helper for every server a test runs as a subprocess
(fastserve in any mode, gunicorn, nginx):

- it runs in its own session (process group); `cleanup()` kills the whole group,
  workers included;
- its stdout and stderr go to temporary files (never to a pipe that could fill up
  and stall it, or keep lines from the test for a while): `output()` (or `log()`)
  has everything it wrote before the call; `wait_for_log()`, `wait_output()` wait
  for a line;
- `wait_ready()` waits for its "running on" line and learns the address: `url(path)`,
  `client()` (a `RawClient`);
- `workers()` / `wait_workers()`: its child processes, from /proc;
- `ServerProcess.fastserve(*args)` runs `python -m fastserve ARGS`;
  `ServerProcess.http(app, mode, flags)` the HTTP conformance tests' server
  (`--http MODE` on 127.0.0.1:0 or a unix socket), ready when it returns.

Tests wait for events, never for a fixed time: `wait_until(predicate, timeout)` polls
for a log line, a socket state, a process or file change (helpers below read /proc).
Timeouts are generous (the suite runs on loaded machines): only a broken server
lets one expire. `CheckedThread` is a thread whose exceptions (failed assertions
too) fail the test when it is joined.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import httpx

from raw_http import RawClient

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"Fastserve running on (https?)://(\S+?):(\d+)")
READY_UNIX = re.compile(r"Fastserve running on unix socket")
STREAMS = ("out", "err")


# -- waiting -------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    """The deadline of a `wait_until` passed."""


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.05, message: str = ""
) -> object:
    """Poll `predicate` until it returns something true (returned); `WaitTimeout` after
    `timeout` seconds. An exception from `predicate` propagates at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


class CheckedThread(threading.Thread):
    """A daemon thread running `target(*args, **kwargs)` whose failure fails the test:
    `join()` re-raises whatever the target raised (a failed assertion or
    `pytest.raises` too), fails if the thread is still running after `timeout`, and
    returns what the target returned."""

    def __init__(self, target: Callable, *args, **kwargs) -> None:
        super().__init__(name=f"checked-{getattr(target, '__name__', 'thread')}", daemon=True)
        self._call = (target, args, kwargs)
        self.result = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            self.result = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            self.error = exc

    def join(self, timeout: Optional[float] = 30.0):
        super().join(timeout)
        if self.is_alive():
            raise AssertionError(f"thread {self.name} still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.result


def start_thread(target: Callable, *args, **kwargs) -> CheckedThread:
    thread = CheckedThread(target, *args, **kwargs)
    thread.start()
    return thread


# -- processes, files and sockets, from /proc ---------------------------------------------


def tool_environment() -> dict[str, str]:
    """The environment for a client tool the tests run (curl): without the sanitizer
    runtimes scripts/test-asan preloads for the servers (curl hangs under them)."""
    return {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> set[int]:
    """Live (non-zombie) child processes of `pid`, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def signal_pending(pid: int, sig: int) -> bool:
    """`sig` was sent to `pid` and not delivered yet (/proc/PID/status)."""
    mask = 1 << (sig - 1)
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & mask:
                    return True
    except OSError:
        pass
    return False


def write_syscalls(pid: int) -> int:
    """How many write() system calls `pid` made so far (/proc/PID/io)."""
    with open(f"/proc/{pid}/io") as file:
        for line in file:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise AssertionError(f"no syscw in /proc/{pid}/io")


def open_paths(pid: int) -> set[str]:
    """What the file descriptors of `pid` point to: paths, "socket:[INODE]", ..."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` holds open."""
    return {int(path[8:-1]) for path in open_paths(pid) if path.startswith("socket:[")}


def holds_connection(pid: int, client: socket.socket) -> bool:
    """`pid` has accepted the TCP connection whose client end is `client` (it holds
    the server end; before accept() the kernel's socket has no inode)."""
    client_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    inodes = socket_inodes(pid)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file)
                for line in file:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], int(fields[9])
                    if (
                        int(local.rsplit(":", 1)[1], 16) == server_port
                        and int(remote.rsplit(":", 1)[1], 16) == client_port
                        and inode in inodes
                    ):
                        return True
        except OSError:
            continue
    return False


def inotify_watched_inodes(pid: int) -> set[int]:
    """Inodes that the inotify instances of `pid` watch (/proc/PID/fdinfo)."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as file:
                info = file.read()
        except OSError:
            continue
        found.update(
            int(ino, 16) for ino in re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", info, re.M)
        )
    return found


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """A TCP connection to host:port succeeds (something listens there)."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


# -- server processes ----------------------------------------------------------------


class ServerProcess:
    """A server subprocess (see the module docstring); `args` is its command line."""

    def __init__(
        self, args: list, cwd: Path = ROOT, env: Optional[dict] = None, pass_fds: tuple = ()
    ) -> None:
        self.args = [str(arg) for arg in args]
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        # A module a test rewrites within the same second, at the same size, must be
        # imported anew, not from a .pyc that still looks valid.
        full_env["PYTHONDONTWRITEBYTECODE"] = "1"
        full_env.pop("WEB_CONCURRENCY", None)
        if env:
            full_env.update(env)
        self._files = {
            name: tempfile.NamedTemporaryFile(
                prefix=f"fastserve-test-{name}-", suffix=".log", delete=False
            )
            for name in STREAMS
        }
        self._readers = {name: open(file.name, "rb") for name, file in self._files.items()}
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in STREAMS
        }
        self._texts = dict.fromkeys(STREAMS, "")
        self._text = ""  # both streams, as read (append-only)
        self._closed = False
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._files["out"],
            stderr=self._files["err"],
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.pid = self.proc.pid
        self.scheme = "http"
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.uds: Optional[str] = None

    @classmethod
    def fastserve(cls, *args: str, **kwargs) -> ServerProcess:
        """`python -m fastserve ARGS`."""
        return cls([sys.executable, "-m", "fastserve", *args], **kwargs)

    @classmethod
    def http(
        cls,
        app: str,
        mode: str,
        flags=(),
        env: Optional[dict] = None,
        uds: Optional[str] = None,
        host: str = "127.0.0.1",
        ready: bool = True,
    ) -> ServerProcess:
        """`python -m fastserve APP --http MODE` on HOST, port 0 (or on the unix socket
        `uds`), with `flags`; ready (its address known) when it returns, unless
        `ready=False`. Killed if it does not get ready."""
        where = ["--uds", uds] if uds else ["--host", host, "--port", "0"]
        server = cls.fastserve(app, "--http", mode, *where, *flags, env=env)
        server.uds = uds
        if ready:
            try:
                server.wait_ready()
            except BaseException:
                server.cleanup()
                raise
        return server

    # -- output

    def output(self, stream: Optional[str] = None) -> str:
        """What it wrote before this call: to `stream` ("out" or "err"), or to both
        (each stream in order; the two interleaved about as they came)."""
        with self._lock:
            if not self._closed:
                for name in STREAMS:
                    new = self._decoders[name].decode(self._readers[name].read())
                    self._texts[name] += new
                    self._text += new
            return self._text if stream is None else self._texts[stream]

    log = output

    def describe(self) -> str:
        return f"{' '.join(self.args)}\n--- output ---\n{self.output()}---"

    def _wait_output(self, check: Callable[[str], object], timeout: float, what: str):
        """Wait until `check(output)` is true (returned); AssertionError when the process
        exits without it, or at the deadline."""

        def probe():
            result = check(self.output())
            if result or self.proc.poll() is None:
                return result
            result = check(self.output())
            if not result:
                raise AssertionError(
                    f"process exited ({self.proc.returncode}) before {what}\n{self.describe()}"
                )
            return result

        try:
            return wait_until(probe, timeout, interval=0.02, message=what)
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def wait_for_log(self, pattern: str, timeout: float = 30, count: int = 1) -> list:
        """All matches of the regex `pattern` (re.findall), once there are `count`."""
        regex = re.compile(pattern)

        def enough(text):
            matches = regex.findall(text)
            return matches if len(matches) >= count else None

        return self._wait_output(enough, timeout, f"{count} x {pattern!r} in the output")

    def wait_output(self, pattern, timeout: float = 30) -> Optional[re.Match]:
        """The first match of the regex `pattern`, waiting for it; None if it never came."""
        regex = re.compile(pattern)
        try:
            return self._wait_output(regex.search, timeout, repr(pattern))
        except AssertionError:
            return None

    def wait_ready(self, timeout: float = 30, pattern: re.Pattern = READY) -> str:
        """Wait for the "running on" line (`pattern`: groups scheme, host, port); with a
        unix socket, for that line and the socket file. Returns `url()`."""
        if self.uds:
            self._wait_output(
                lambda text: READY_UNIX.search(text) and os.path.exists(self.uds),
                timeout,
                f"the server to listen on {self.uds}",
            )
            return ""
        match = self._wait_output(
            pattern.search, timeout, f"the server to be ready ({pattern.pattern!r})"
        )
        self.scheme, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        return self.url()

    # -- talking to it

    def url(self, path: str = "") -> str:
        assert self.port is not None, "the server's address is not known (wait_ready() first)"
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def client(self, **kwargs) -> RawClient:
        return RawClient(self.port, self.host, **kwargs)

    def get_events(self, token: str, path_prefix: str = "/_/events") -> list:
        """What the test app recorded under `token` (tests/apps.py: EVENTS)."""
        with self.client() as client:
            response = client.request("GET", f"{path_prefix}?token={token}")
            assert response.status == 200, response
            return response.json()

    def wait_event(
        self, token: str, predicate, timeout: float = 15, path_prefix: str = "/_/events"
    ) -> list:
        """Poll the app's recorded events until `predicate(events)` holds and return
        them; `WaitTimeout` naming the events last seen when it never does."""
        events: list = []

        def check():
            nonlocal events
            events = self.get_events(token, path_prefix)
            return predicate(events)

        try:
            wait_until(check, timeout)
        except WaitTimeout:
            raise WaitTimeout(
                f"the events of {token} never met the condition in {timeout}s; last seen: {events!r}"
            ) from None
        return events

    # -- processes and signals

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def workers(self) -> set[int]:
        return children(self.pid)

    def wait_workers(
        self, count: int, timeout: float = 30, exclude: frozenset = frozenset()
    ) -> set[int]:
        """Wait until the master has `count` children, none in `exclude` (forked, not
        necessarily ready: wait for their "is ready" log lines where that matters)."""

        def settled():
            pids = self.workers()
            if len(pids) == count and not pids & exclude:
                return pids
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited ({self.proc.returncode}):\n{self.describe()}")
            return None

        try:
            return wait_until(settled, timeout, message=f"{count} workers")
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; have {self.workers()}\n{self.describe()}") from None

    def send_signal(self, sig: int) -> None:
        """`sig` to the process (not after it was reaped: its pid may be reused)."""
        self.proc.send_signal(sig)

    def send_signal_twice(self, sig: int, timeout: float = 15) -> None:
        """`sig` twice, back to back: the second as soon as the first has reached the
        Python handler of the process, so that two arrive. Sent sooner, the two would be
        one: the kernel does not queue a standard signal that is already pending, and
        Python runs a handler once for signals that came before it got to run it.
        "Reached the handler" is the handler's write() to the wake-up pipe of the loop:
        the first write system call after the signal (call this while the process is
        idle, logging nothing)."""
        writes = write_syscalls(self.pid)
        self.send_signal(sig)
        wait_until(
            lambda: not signal_pending(self.pid, sig) and write_syscalls(self.pid) > writes,
            timeout,
            interval=0,
            message=f"signal {sig} to reach the handler of {self.pid}",
        )
        self.send_signal(sig)

    def wait(self, timeout: float = 15) -> int:
        """The exit code; AssertionError if it is still running after `timeout`."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process did not exit within {timeout}s:\n{self.describe()}"
            ) from None
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """`sig` (if it still runs), then its exit code (see `wait`)."""
        if self.proc.poll() is None:
            self.send_signal(sig)
        return self.wait(timeout)

    def cleanup(self) -> None:
        """Kill its whole process group (workers included) and reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.output()  # kept for describe() after the cleanup
        with self._lock:
            self._closed = True
            for name in STREAMS:
                self._readers[name].close()
                self._files[name].close()
                try:
                    os.remove(self._files[name].name)
                except OSError:
                    pass


# -- HTTP ------------------------------------------------------------------------------


def get(url: str, timeout: float = 10, **kwargs) -> httpx.Response:
    """One request on a fresh connection (closed afterwards)."""
    headers = kwargs.pop("headers", {})
    headers.setdefault("connection", "close")
    return httpx.get(url, timeout=timeout, headers=headers, **kwargs)


def worker_pid(url: str) -> int:
    response = get(url + "/")
    assert response.status_code == 200, response.text
    return int(response.text.split("=")[1])


class Load:
    """Threads sending GET / back to back, each on a fresh connection, recording
    every failure and the pid that answered each success."""

    def __init__(self, url: str, threads: int = 4, path: str = "/") -> None:
        self.url = url + path
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.pids: list[int] = []
        self.lock = threading.Lock()
        self.threads = [CheckedThread(self.run) for _ in range(threads)]

    def run(self) -> None:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stop_event.is_set():
                try:
                    response = client.get(self.url, headers={"connection": "close"})
                    if response.status_code != 200:
                        raise AssertionError(
                            f"status {response.status_code}: {response.text[:100]}"
                        )
                    pid = int(response.text.split("=")[1])
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    with self.lock:
                        self.ok += 1
                        self.pids.append(pid)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)

    def count(self) -> int:
        with self.lock:
            return self.ok

    def wait_requests(self, n: int, timeout: float = 30) -> None:
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout, message=f"{n} more requests")


def start_listener(
    args: list, port: int, what: str, log_file: Optional[Path] = None, timeout: float = 15
) -> ServerProcess:
    """Start a process that listens on 127.0.0.1:`port` (nginx, haproxy) and wait until
    it accepts connections; if it exits first, fail with its output (and `log_file`)."""
    process = ServerProcess(args)

    def listening() -> bool:
        if not process.running:
            extra = log_file.read_text() if log_file is not None and log_file.exists() else ""
            raise AssertionError(f"{what} exited:\n{process.describe()}\n{extra}")
        return port_accepts(port)

    try:
        wait_until(listening, timeout, message=f"{what} listening on port {port}")
    except BaseException:
        process.cleanup()
        raise
    return process


# -- gunicorn ------------------------------------------------------------------------

GUNICORN_WORKER = "fastserve.workers.FastserveWorker"
GUNICORN_READY = re.compile(r"Listening at: (https?)://(\S+?):(\d+)")


def gunicorn_command(
    app: str, *args: str, workers: int = 1, worker_class: str = GUNICORN_WORKER
) -> list:
    """`python -m gunicorn -k WORKER_CLASS -w WORKERS -b 127.0.0.1:0 ARGS APP`."""
    from gunicorn.config import KNOWN_SETTINGS

    # gunicorn >= 24 opens a control socket in ~/.gunicorn by default; not in tests.
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        args = ("--no-control-socket", *args)
    return [
        sys.executable, "-m", "gunicorn", "-k", worker_class, "-w", str(workers),
        "-b", "127.0.0.1:0", *args, app,
    ]  # fmt: skip


def start_gunicorn(app: str, *args: str, workers: int = 1, **kwargs) -> ServerProcess:
    """Gunicorn with fastserve's worker (`gunicorn_command`), once it serves: its
    arbiter listens and every worker's app has started. `kwargs`: worker_class, and
    ServerProcess's (cwd, env). The caller cleans it up."""
    worker_class = kwargs.pop("worker_class", GUNICORN_WORKER)
    server = ServerProcess(
        gunicorn_command(app, *args, workers=workers, worker_class=worker_class), **kwargs
    )
    try:
        server.wait_ready(pattern=GUNICORN_READY)
        server.wait_workers(workers)
        server.wait_for_log("Application startup complete", count=workers)
    except BaseException:
        server.cleanup()
        raise
    return server
