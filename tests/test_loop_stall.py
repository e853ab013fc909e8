"""--warn-loop-stall, and the stack a supervised worker logs before it is killed for
a stopped heartbeat (fastserve/watchdog.py). Real servers, both HTTP modes (apps:
tests/apps_watchdog.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from process_util import get, start_thread

APP = "tests.apps_watchdog:app"
STALL = "1"
# Three times the threshold: a warning repeated while one stall lasts would show.
BLOCK_SECONDS = 3
STALL_WARNING = re.compile(
    r"Event loop stalled for [\d.]+ s in blocking_handler \(apps_watchdog\.py:\d+\) "
    r"during GET /block\n"
)


def test_a_blocking_handler_logs_one_warning_with_its_stack(start_server, mode):
    server = start_server(APP, mode, "--warn-loop-stall", STALL)
    with server.client(timeout=30) as client:
        response = client.request("GET", f"/block?s={BLOCK_SECONDS}")
        assert response.body == b"unblocked"
        # the loop runs again: the next request is served
        assert client.request("GET", "/").status == 200
    server.wait_for_log(STALL_WARNING.pattern)
    log = server.log()
    assert len(STALL_WARNING.findall(log)) == 1
    assert log.count("Event loop stalled") == 1
    # the record goes on with the stack, innermost call last
    stack = log.split("Event loop stalled", 1)[1]
    assert "in blocking_handler\n    time.sleep(seconds)" in stack
    assert server.stop() == 0


def test_no_watchdog_by_default(start_server, mode):
    server = start_server(APP, mode)
    with server.client(timeout=30) as client:
        assert client.request("GET", "/block?s=2").body == b"unblocked"
    assert server.stop() == 0
    assert "stalled" not in server.log()


def test_a_worker_stuck_forever_logs_its_stack_before_it_is_killed(spawn, mode):
    server = spawn(
        APP, "--http", mode, "--port", "0", "--workers", "2",
        "--timeout-worker-healthcheck", "2",
    )  # fmt: skip
    before = server.wait_workers(2)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)

    def stuck_request():
        with pytest.raises(httpx.HTTPError):
            get(server.url("/stuck"), timeout=30)

    thread = start_thread(stuck_request)
    (stuck,) = server.wait_for_log(r"stuck started pid=(\d+)")
    stuck = int(stuck)
    assert stuck in before
    # SIGABRT is blocked in the stuck code: only the watchdog thread can log the
    # stack, and the master's SIGKILL ends the worker.
    server.wait_for_log(
        rf"Worker \[{stuck}\] was killed after its heartbeat stopped \(no heartbeat for 2s "
        r"\(--timeout-worker-healthcheck\), killed by SIGKILL\)"
    )
    (replacement,) = server.wait_workers(2, exclude=frozenset({stuck})) - before
    server.wait_for_log(rf"Worker \[{replacement}\] is ready")
    thread.join(30)
    log = server.log()
    report = re.search(
        rf"Worker \[{stuck}\] sent no heartbeat for [\d.]+ s, the supervisor kills it; its event "
        r"loop is stalled in stuck_forever \(apps_watchdog\.py:\d+\) during GET /stuck\n",
        log,
    )
    assert report, log
    assert log.count("the supervisor kills it") == 1
    assert "in stuck_forever\n    time.sleep(FOREVER)" in log[report.end() :]
    assert report.start() < log.index(f"Worker [{replacement}]")
    assert get(server.url("/")).text in {f"pid={pid}" for pid in (before - {stuck}) | {replacement}}
    assert server.stop() == 0
