"""Helpers for tests that run servers as real processes: start, wait, load, clean up.

Each `ServerProcess` runs in its own session (process group), logs to a temporary
file, and is killed with its whole group at cleanup, workers included.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"Fastserve running on (https?)://(\S+?):(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


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


class ServerProcess:
    """A server subprocess whose output goes to a log file we can search."""

    def __init__(
        self, args: list[str], cwd: Path = ROOT, env: Optional[dict] = None, pass_fds: tuple = ()
    ) -> None:
        self.args = args
        self.log_file = tempfile.NamedTemporaryFile(prefix="fastserve-test-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.pop("WEB_CONCURRENCY", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.pid = self.proc.pid
        self.url = ""

    @classmethod
    def fastserve(cls, *args: str, **kwargs) -> "ServerProcess":
        return cls([sys.executable, "-m", "fastserve", *args], **kwargs)

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 15, count: int = 1) -> list:
        regex = re.compile(pattern)

        def found():
            matches = regex.findall(self.log())
            if len(matches) >= count:
                return matches
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited ({self.proc.returncode}) before {pattern!r}:\n{self.log()}")
            return None

        try:
            return wait_until(found, timeout, message=repr(pattern))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()}") from None

    def wait_ready(self, timeout: float = 20, pattern: re.Pattern = READY) -> str:
        match = None

        def ready():
            nonlocal match
            match = pattern.search(self.log())
            if match is None and self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}) before it was ready:\n{self.log()}")
            return match

        try:
            wait_until(ready, timeout, message="the server to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()}") from None
        self.url = f"{match.group(1)}://{match.group(2)}:{match.group(3)}"
        return self.url

    def workers(self) -> set[int]:
        return children(self.pid)

    def wait_workers(self, count: int, timeout: float = 20, exclude: frozenset = frozenset()) -> set[int]:
        """Wait until the master has `count` children, none in `exclude` (forked, not
        necessarily ready: wait for their "is ready" log lines where that matters)."""

        def settled():
            pids = self.workers()
            if len(pids) == count and not pids & exclude:
                return pids
            if self.proc.poll() is not None:
                raise AssertionError(f"master exited ({self.proc.returncode}):\n{self.log()}")
            return None

        try:
            return wait_until(settled, timeout, message=f"{count} workers")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; have {self.workers()}\n--- log ---\n{self.log()}") from None

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.send_signal(sig)
        return self.wait(timeout)

    def cleanup(self) -> None:
        with_group = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with_group = False
        if not with_group and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log_file.close()
        with_suppress_remove(self.log_file.name)


def with_suppress_remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


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
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stop_event.is_set():
                try:
                    response = client.get(self.url, headers={"connection": "close"})
                    if response.status_code != 200:
                        raise AssertionError(f"status {response.status_code}: {response.text[:100]}")
                    pid = int(response.text.split("=")[1])
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    with self.lock:
                        self.ok += 1
                        self.pids.append(pid)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)

    def count(self) -> int:
        with self.lock:
            return self.ok

    def wait_requests(self, n: int, timeout: float = 15) -> None:
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout, message=f"{n} more requests")
