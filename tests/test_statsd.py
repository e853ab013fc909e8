"""--statsd-host: Gunicorn's StatsD metrics, received by a real datagram socket
(UDP, or a unix socket) after real requests, from one process and from the master."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.process_util import start_gunicorn, start_thread, wait_until
from tests.test_metrics import APP, REQUESTS, serve

pytestmark = pytest.mark.timeout(60)

PREFIX = "myapp"
TAGS = "env:test,team:web"


class Receiver:
    """A StatsD server's socket: keeps every line it receives."""

    def __init__(self, family: int, address) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = start_thread(self.receive)

    def receive(self) -> None:
        while self.running:
            try:
                datagram = self.sock.recv(65536)
            except socket.timeout:
                continue
            with self.lock:
                self.lines.extend(datagram.decode("ascii").split("\n"))

    def metrics(self) -> list[tuple[str, float, str, float]]:
        """(name, value, type, sample rate) of each line, its tags checked."""
        with self.lock:
            lines = list(self.lines)
        parsed = []
        for line in lines:
            assert line.endswith(f"|#{TAGS}"), line
            fields = line[: -len(TAGS) - 2].split("|")
            name, value = fields[0].rsplit(":", 1)
            rate = float(fields[2][1:]) if len(fields) > 2 else 1.0
            parsed.append((name, float(value), fields[1], rate))
        return parsed

    def counters(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, value, kind, _ in self.metrics():
            if kind == "c":
                totals[name] = totals.get(name, 0) + value
        return totals

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def udp():
    receiver = Receiver(socket.AF_INET, ("127.0.0.1", 0))
    yield receiver
    receiver.close()


def expected_counters() -> dict[str, float]:
    counters = {f"{PREFIX}.gunicorn.requests": float(len(REQUESTS))}
    for _, status in REQUESTS:
        name = f"{PREFIX}.gunicorn.request.status.{status}"
        counters[name] = counters.get(name, 0) + 1
    return counters


def request_counters(receiver: Receiver) -> dict[str, float]:
    return {
        name: value
        for name, value in receiver.counters().items()
        if name.startswith(f"{PREFIX}.gunicorn.request")
    }


def wait_counter(receiver: Receiver, name: str, value: float) -> None:
    name = f"{PREFIX}.gunicorn.{name}"
    wait_until(lambda: receiver.counters().get(name) == value, 30, message=f"{name} {value}")


def check_received(receiver: Receiver, workers: int) -> None:
    wanted = expected_counters()
    wait_until(lambda: request_counters(receiver) == wanted, 30, message=f"counters {wanted}")
    # the app's failures, logged with their traceback, as Gunicorn's log.exception
    wait_counter(receiver, "log.exception", sum(path == "/fail" for path, _ in REQUESTS))
    timings = [
        (value, rate)
        for name, value, kind, rate in receiver.metrics()
        if name == f"{PREFIX}.gunicorn.request.duration" and kind == "ms"
    ]
    assert timings and all(value >= 0 for value, _ in timings)
    # each line is one interval's mean, sampled at 1/N: StatsD counts N timings
    assert round(sum(1 / rate for _, rate in timings)) == len(REQUESTS)
    gauges = [value for name, value, kind, _ in receiver.metrics() if kind == "g"]
    assert gauges and set(gauges) <= {float(workers), 0.0}
    assert gauges[-1] in (float(workers), 0.0)


def statsd_flags(host: str) -> tuple[str, ...]:
    return ("--statsd-host", host, "--statsd-prefix", f"{PREFIX}.", "--dogstatsd-tags", TAGS)


@pytest.mark.parametrize("mode", ["c", "python"])
def test_one_process_sends_gunicorns_metrics(start_server, mode, udp):
    host, port = udp.sock.getsockname()
    server = start_server(APP, mode, "--no-access-log", *statsd_flags(f"{host}:{port}"))
    serve(server.url(), REQUESTS)
    check_received(udp, workers=1)
    assert server.stop() == 0


def test_master_sends_the_workers_sums(start_server, udp):
    host, port = udp.sock.getsockname()
    server = start_server(
        APP, "c", "--no-access-log", "--workers", "2", *statsd_flags(f"{host}:{port}")
    )
    server.wait_for_log(r"is ready", count=2)
    serve(server.url(), REQUESTS)
    check_received(udp, workers=2)
    # the master's own error line for a worker killed outright
    os.kill(sorted(server.workers())[0], signal.SIGKILL)
    server.wait_for_log("died unexpectedly")
    wait_counter(udp, "log.error", 1)
    assert server.stop() == 0


def test_workers_under_gunicorn_send_the_request_metrics(udp):
    pytest.importorskip("gunicorn")
    host, port = udp.sock.getsockname()
    # gunicorn's own option names; its arbiter sends gunicorn.workers
    server = start_gunicorn(APP, *statsd_flags(f"{host}:{port}"), workers=2)
    try:
        serve(server.url(), REQUESTS)
        check_received(udp, workers=2)
    finally:
        server.cleanup()


def test_unix_datagram_socket(start_server, tmp_path):
    path = str(tmp_path / "statsd.sock")
    receiver = Receiver(socket.AF_UNIX, path)
    try:
        server = start_server(APP, "c", "--no-access-log", *statsd_flags(f"unix:{path}"))
        serve(server.url(), REQUESTS)
        check_received(receiver, workers=1)
        assert server.stop() == 0
    finally:
        receiver.close()


@pytest.mark.parametrize("host", ["example.com:http", "[::1", "unix:", "host:70000"])
def test_bad_address_is_one_line(host):
    result = subprocess.run(
        [sys.executable, "-m", "fastserve", APP, "--statsd-host", host],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"--statsd-host {host!r}:" in result.stderr


def test_host_that_does_not_resolve_is_one_warning(start_server):
    host = "no-such-host.invalid:8125"
    server = start_server(APP, "c", "--no-access-log", "--statsd-host", host)
    serve(server.url(), REQUESTS[:1])
    assert server.log().count(f"Cannot send metrics to StatsD at {host}") == 1
    assert server.stop() == 0
