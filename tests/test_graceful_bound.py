"""The graceful-shutdown bound (--timeout-graceful-shutdown, Gunicorn's
--graceful-timeout): 30 s by default; past it, open streams are cut (the app gets
http.disconnect), one line says how many, and the server exits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect

from process_util import start_thread, wait_until

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"
BOUND = 2
# What a stop may take beyond the bound: the settle pauses, the lifespan shutdown,
# process exit, on a loaded machine.
SLACK = 6


def print_config(*flags: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "fastserve", "--print-config", *flags],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_default_bound_is_gunicorns_30_seconds():
    assert "timeout-graceful-shutdown = 30.0  # default" in print_config()


def test_graceful_timeout_is_the_same_setting():
    shown = print_config("--graceful-timeout", "7")
    assert "timeout-graceful-shutdown = 7.0  # command line" in shown


def read_events(url: str, events: list) -> None:
    """A client that keeps reading the stream until the server cuts it."""
    with httpx.stream("GET", url, timeout=30) as response:
        assert response.headers["content-type"] == "text/event-stream"
        with pytest.raises(httpx.TransportError):
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line)


def stop_with_open_stream(server) -> float:
    """Open an SSE stream, SIGTERM the server while it is read; seconds to exit."""
    events: list = []
    reader = start_thread(read_events, server.url("/sse"), events)
    wait_until(lambda: len(events) >= 2, 30, message="events on the stream")
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait(BOUND + SLACK + 10) == 0, server.describe()
    elapsed = time.monotonic() - started
    reader.join(10)
    log = server.log()
    assert (
        "Closing 1 open connection(s) and 1 running app call(s): "
        f"timeout graceful shutdown exceeded ({BOUND}s)" in log
    )
    assert "sse got http.disconnect" in log  # not only a cancellation
    return elapsed


@pytest.mark.serial  # bounds a duration
def test_open_stream_is_cut_at_the_bound(start_server, mode):
    server = start_server(APP, mode, "--timeout-graceful-shutdown", str(BOUND))
    elapsed = stop_with_open_stream(server)
    assert BOUND <= elapsed < BOUND + SLACK


@pytest.mark.serial  # bounds a duration
def test_open_stream_is_cut_at_the_bound_with_workers(start_server, mode):
    server = start_server(APP, mode, "--workers", "2", "--graceful-timeout", str(BOUND))
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    elapsed = stop_with_open_stream(server)
    assert BOUND <= elapsed < BOUND + SLACK
    assert "Stopped supervisor process" in server.log()


@pytest.mark.serial  # bounds a duration
def test_websocket_app_that_never_returns_is_cancelled_at_the_bound(start_server, mode):
    server = start_server(APP, mode, "--timeout-graceful-shutdown", str(BOUND))
    host, port = server.url().removeprefix("http://").split(":")
    with connect(f"ws://{host}:{port}/hold", open_timeout=10):
        server.wait_for_log("ws held pid=")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(BOUND + SLACK + 10) == 0, server.describe()
        elapsed = time.monotonic() - started
    log = server.log()
    assert "running app call(s): timeout graceful shutdown exceeded" in log
    assert "ws hold cancelled" in log
    assert BOUND <= elapsed < BOUND + SLACK
