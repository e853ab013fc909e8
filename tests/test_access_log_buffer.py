"""The buffered access log (fastserve/access_buffer.py): with the built-in
text line, every line arrives, in order and exactly as the logging module wrote it:
within a second while the server runs, and on every way out.

The exit-path tests run the server with the timed flush out of the way
(ACCESS_FLUSH_SECONDS set to an hour before the CLI starts): there, only the exit
flush can bring the lines."""

from __future__ import annotations

import io
import logging
import re
import signal
import sys

import httpx
import pytest

from fastserve.access_buffer import ACCESS_BUFFER_SIZE, access_buffer
from fastserve.config import Config
from fastserve.logging import (
    ACCESS_LOG_FORMAT,
    DEFAULT_ACCESS_LINE,
    STATUS_AND_PHRASE,
    access_logger,
    format_client,
)
from process_util import ServerProcess, get, wait_until

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps:app"
# `python -c HELD ARGS`: the fastserve command, its lines written only when the buffer
# is full or the process ends.
HELD = (
    "import fastserve.access_buffer, fastserve.cli; "
    "fastserve.access_buffer.ACCESS_FLUSH_SECONDS = 3600.0; "
    "fastserve.cli.main()"
)
LINE = re.compile(
    r'^INFO:     127\.0\.0\.1:\d+ - "GET /_/hello\?n=(\d+)(?:&pad=x+)? HTTP/1\.1" 200 OK$', re.M
)
REQUESTS = 20


def held_server(mode: str, *flags: str) -> ServerProcess:
    server = ServerProcess(
        [sys.executable, "-c", HELD, APP, "--http", mode, "--host", "127.0.0.1", "--port", "0"]
        + list(flags)
    )
    try:
        server.wait_ready()
    except BaseException:
        server.cleanup()
        raise
    return server


def send_requests(server: ServerProcess, count: int, pad: int = 0) -> None:
    suffix = "&pad=" + "x" * pad if pad else ""
    with httpx.Client(timeout=10) as client:
        for n in range(count):
            assert client.get(server.url(f"/_/hello?n={n}{suffix}")).status_code == 200


def logged(server: ServerProcess) -> list[int]:
    """The request numbers of the access lines on the server's stdout, in order."""
    return [int(n) for n in LINE.findall(server.output("out"))]


@pytest.fixture
def servers_to_clean():
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.cleanup()


def test_lines_arrive_within_a_second_while_running(start_server, mode):
    server = start_server(APP, mode)
    send_requests(server, REQUESTS)
    # only the timed flush writes these (the buffer is far from full, the server runs)
    wait_until(lambda: len(logged(server)) == REQUESTS, 10, message="the access lines")
    assert logged(server) == list(range(REQUESTS))
    assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_writes_every_buffered_line(mode, sig, servers_to_clean):
    server = held_server(mode)
    servers_to_clean.append(server)
    send_requests(server, REQUESTS)
    assert logged(server) == []  # held in the buffer
    assert server.stop(sig) == 0
    assert logged(server) == list(range(REQUESTS))


def test_fast_exit_writes_every_buffered_line(mode, token, servers_to_clean):
    """The second Ctrl+C, with a request still running: the lines of the finished
    ones are written."""
    server = held_server(mode)
    servers_to_clean.append(server)
    send_requests(server, REQUESTS)
    with server.client() as client:
        client.send(f"GET /_/slow?delay=60&token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: server.get_events(token) == ["started"], 15, message="the slow request")
        assert logged(server) == []
        server.send_signal_twice(signal.SIGINT)
        server.wait()
    assert logged(server) == list(range(REQUESTS))


def test_workers_write_every_buffered_line_on_stop(mode, servers_to_clean):
    server = held_server(mode, "--workers", "2")
    servers_to_clean.append(server)
    server.wait_workers(2)
    send_requests(server, REQUESTS)
    assert logged(server) == []
    assert server.stop() == 0
    # two processes wrote their own batches: every line once
    assert sorted(logged(server)) == list(range(REQUESTS))


def test_a_burst_bigger_than_the_buffer_is_written_in_order(mode, servers_to_clean):
    server = held_server(mode)
    servers_to_clean.append(server)
    pad = 1000
    count = 2 * ACCESS_BUFFER_SIZE // pad
    send_requests(server, count, pad=pad)
    # the buffer filled up at least once: written while the server runs
    wait_until(lambda: logged(server), 15, message="a full buffer written")
    assert logged(server) == list(range(len(logged(server))))
    assert server.stop() == 0
    assert logged(server) == list(range(count))


def test_colours_keep_the_logging_path(start_server, mode):
    """Coloured lines are the formatter's work: no buffer, the status in colour."""
    server = start_server(APP, mode, "--use-colors")
    assert get(server.url("/_/hello?n=0")).status_code == 200
    server.wait_for_log(re.escape('"GET /_/hello?n=0 HTTP/1.1" \x1b[32m200 OK\x1b[0m\n'))
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("client", "target"),
    [(("127.0.0.1", 5000), "/path?q=1"), (None, "/caf\xe9"), (("::1", 80), "/%22?a=%")],
)
def test_the_buffered_line_is_the_formatters_line(client, target):
    """In this process: the buffer's bytes are those the built-in handler writes for
    the same record."""
    Config("tests.apps:app", use_colors=False)
    handler = access_logger.handlers[0]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        buffer = access_buffer
        assert buffer.handler is handler  # the built-in set-up: Config started it
        args = (format_client({"client": client}), "GET", target, "1.1", 200)
        record = access_logger.makeRecord(
            access_logger.name, logging.INFO, __file__, 0, ACCESS_LOG_FORMAT, args, None
        )
        handler.handle(record)
        buffer.add(DEFAULT_ACCESS_LINE % (*args[:4], STATUS_AND_PHRASE[200]))
        buffer.flush()
    finally:
        handler.setStream(previous)
    first, second = stream.getvalue().splitlines(keepends=True)
    assert first == second
