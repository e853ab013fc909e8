"""systemd: socket activation (LISTEN_FDS) and readiness (NOTIFY_SOCKET), with real
processes and the test in systemd's place: it binds the listening sockets and the
notification socket, and starts fastserve the way systemd does."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import httpx
import pytest

from fastserve import systemd
from process_util import ServerProcess, get, tool_environment

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"

# What systemd does between fork and exec: the passed sockets onto fds 3, 4, ...
# (argv[1]: their fds here, comma-separated; first moved above that range so that
# none is overwritten before it is copied), LISTEN_PID set to the pid that execs
# fastserve. Popen cannot do it: the child's pid is not known before it runs.
ACTIVATE = """
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",")]
first = 3
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, first + len(sources)) for fd in sources]
for fd in sources:
    os.close(fd)
for offset, fd in enumerate(moved):
    os.dup2(fd, first + offset)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "fastserve", *sys.argv[2:]])
"""

# Longer than any start-up, a restart or a stop in the suite; only a broken server
# lets it pass.
NOTIFY_TIMEOUT = 30
RELOADING = re.compile(r"RELOADING=1\nMONOTONIC_USEC=\d+")
WORKER_READY = r"Worker \[\d+\] is ready"


@pytest.fixture
def short_dir():
    """A directory for unix sockets, whose paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="fastserve-systemd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def activated(short_dir):
    """Start fastserve socket-activated on a TCP socket (fd 3) and a unix socket
    (fd 4), with a notification socket; yields (server, notifications, unix path)."""
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = os.path.join(short_dir, "app.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(unix_path)
    unix.listen()
    notify_path = os.path.join(short_dir, "notify")
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(notify_path)
    notifications.settimeout(NOTIFY_TIMEOUT)
    started: list[ServerProcess] = []

    def start(*flags: str) -> ServerProcess:
        passed = (tcp.fileno(), unix.fileno())
        server = ServerProcess(
            [sys.executable, "-c", ACTIVATE, ",".join(map(str, passed)), APP, *flags],
            env={"LISTEN_FDS": str(len(passed)), "NOTIFY_SOCKET": notify_path},
            pass_fds=passed,
        )
        started.append(server)
        return server

    yield start, notifications, unix_path
    for server in started:
        server.cleanup()
    for sock in (tcp, unix, notifications):
        sock.close()


def unix_get(path: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
        return client.get("http://localhost/", headers={"connection": "close"})


def answering_pid(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.text.split("=")[1])


def receive(notifications: socket.socket) -> str:
    return notifications.recv(4096).decode()


def assert_no_more(notifications: socket.socket) -> None:
    notifications.setblocking(False)
    with pytest.raises(BlockingIOError):
        notifications.recv(4096)


def test_single_server_serves_passed_sockets_and_notifies(activated):
    start, notifications, unix_path = activated
    # systemd's sockets win over an explicit address (this one could not be bound).
    server = start("--uds", "/nonexistent/app.sock", "--no-access-log")
    assert receive(notifications) == systemd.READY
    server.wait_ready()
    log = server.log()
    assert "2 socket(s) passed by systemd" in log
    assert f"Fastserve running on unix socket {unix_path}" in log

    assert answering_pid(get(server.url("/"))) == server.pid
    assert answering_pid(unix_get(unix_path)) == server.pid

    server.send_signal(signal.SIGTERM)
    assert receive(notifications) == systemd.STOPPING
    assert server.wait() == 0
    assert_no_more(notifications)


def test_passed_sockets_serve_http2(activated):
    """--http2 on systemd's sockets: h2c with prior knowledge on the TCP one and the
    unix one (curl speaking HTTP/2 over each)."""
    start, notifications, unix_path = activated
    server = start("--http2", "--no-access-log")
    assert receive(notifications) == systemd.READY
    server.wait_ready()
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (scripts/test installs it)")
    for where in ((server.url("/"),), ("--unix-socket", unix_path, "http://localhost/")):
        result = subprocess.run(
            [curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}", *where],
            capture_output=True, text=True, timeout=NOTIFY_TIMEOUT, env=tool_environment(),
        )  # fmt: skip
        assert result.returncode == 0, result
        assert result.stdout.endswith("\n2"), result
    assert server.stop() == 0


def test_workers_share_passed_sockets_and_notify_around_a_rolling_restart(activated):
    start, notifications, unix_path = activated
    server = start("--workers", "2", "--no-access-log")
    assert receive(notifications) == systemd.READY
    # READY=1 comes after the master saw both workers boot (their first heartbeat).
    assert len(re.findall(WORKER_READY, server.log())) == 2
    server.wait_ready()
    first_generation = server.workers()
    assert answering_pid(get(server.url("/"))) in first_generation
    assert answering_pid(unix_get(unix_path)) in first_generation

    server.send_signal(signal.SIGHUP)
    assert RELOADING.fullmatch(receive(notifications))
    assert receive(notifications) == systemd.READY
    assert len(re.findall(WORKER_READY, server.log())) == 4
    second_generation = server.wait_workers(2, exclude=frozenset(first_generation))
    assert answering_pid(get(server.url("/"))) in second_generation
    assert answering_pid(unix_get(unix_path)) in second_generation

    server.send_signal(signal.SIGTERM)
    assert receive(notifications) == systemd.STOPPING
    assert server.wait() == 0
    assert_no_more(notifications)


def test_abstract_notify_socket(short_dir):
    name = f"fastserve-test-{os.getpid()}-{os.path.basename(short_dir)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifications:
        notifications.bind("\0" + name)
        notifications.settimeout(NOTIFY_TIMEOUT)
        server = ServerProcess.fastserve(
            APP, "--port", "0", "--no-access-log", env={"NOTIFY_SOCKET": "@" + name}
        )
        try:
            assert receive(notifications) == systemd.READY
            server.send_signal(signal.SIGTERM)
            assert receive(notifications) == systemd.STOPPING
            assert server.wait() == 0
        finally:
            server.cleanup()


def test_sockets_meant_for_another_process_are_ignored_and_variables_unset(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDNAMES", "web:api")
    assert systemd.listen_sockets() == []
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(os.environ)
