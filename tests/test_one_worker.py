"""Settings that need a supervisor start one for a single worker too: --max-requests
recycles the worker instead of stopping the server, --max-worker-memory and
--timeout-worker-healthcheck replace it (Gunicorn's behaviour with --workers 1)."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from process_util import get, pid_alive, start_thread, wait_until, worker_pid

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"
REQUESTS = 10
MAX_REQUESTS = 3


def test_max_requests_recycles_the_one_worker(spawn):
    server = spawn(
        APP, "--port", "0", "--no-access-log", "--workers", "1",
        "--max-requests", str(MAX_REQUESTS),
    )  # fmt: skip
    assert "Started supervisor process" in server.log()
    assert "1 worker," in server.log()
    pids = []
    for _ in range(REQUESTS):
        # a new connection each time, as separate clients: every one is answered,
        # whichever worker takes it
        pids.append(worker_pid(server.url()))
    assert len(pids) == REQUESTS
    assert len(set(pids)) >= REQUESTS // (MAX_REQUESTS + 1)  # the limit is checked each 0.1 s
    assert "Maximum request limit of 3 exceeded" in server.log()
    assert server.running
    # one worker again once the replaced ones have drained; this request may itself be
    # a worker's last (answered by it while its replacement starts): answered is all
    server.wait_workers(1)
    worker_pid(server.url())
    assert server.stop() == 0


def read_stream(url: str) -> None:
    """An SSE client that reads until the server cuts the stream."""
    with httpx.stream("GET", url, timeout=60) as response:
        with pytest.raises(httpx.TransportError):
            for _ in response.iter_lines():
                pass


@pytest.mark.serial  # bounds a duration
def test_replacement_serves_while_the_old_worker_drains(spawn):
    drain = 30  # an open stream holds the old worker this long
    server = spawn(
        APP, "--port", "0", "--no-access-log", "--max-requests", "2",
        "--graceful-timeout", str(drain),
    )  # fmt: skip
    reader = start_thread(read_stream, server.url("/sse"))
    (old,) = server.wait_for_log(r"sse started pid=(\d+)")
    assert worker_pid(server.url()) == int(old)  # the second request: the limit
    server.wait_for_log(rf"Worker \[{old}\] reached --max-requests; starting its replacement")
    started = time.monotonic()
    new = worker_pid(server.url())
    assert time.monotonic() - started < drain / 3, "the new worker started after the old one"
    assert new != int(old) and pid_alive(int(old))  # the old one still streams
    assert server.stop(signal.SIGQUIT) == 0  # not a graceful stop: the stream would hold it
    reader.join(10)


@pytest.mark.serial  # bounds a duration
def test_blocked_loop_of_the_one_worker_is_named_in_the_log(spawn):
    timeout = "1.5"
    server = spawn(APP, "--port", "0", "--no-access-log", "--timeout-worker-healthcheck", timeout)
    first = worker_pid(server.url())

    def blocked_request():
        with pytest.raises(httpx.TransportError):
            get(server.url("/block?s=60"), timeout=30)

    thread = start_thread(blocked_request)
    (how,) = server.wait_for_log(
        rf"Worker \[{first}\] was killed after its heartbeat stopped \((.*)\); replacing it"
    )
    thread.join(30)
    assert how.startswith(f"no heartbeat for {timeout}s (--timeout-worker-healthcheck), ")
    assert "could not be loaded" not in server.log()
    second = wait_until(lambda: worker_pid(server.url()), 30, message="a new worker")
    assert second != first
    assert server.stop() == 0


@pytest.mark.serial  # bounds a duration
def test_worker_that_never_boots_is_named_in_the_log(spawn):
    server = spawn(
        "tests.apps_process:startup_blocks", "--port", "0", "--timeout-worker-healthcheck", "1",
        ready=False,
    )  # fmt: skip
    assert server.wait(60) == 1
    log = server.log()
    reason = "no heartbeat within 1s of its start (--timeout-worker-healthcheck), "
    assert log.count(f"failed to boot ({reason}") == 3
    assert f"failed to boot 3 times in a row (last: {reason}" in log
    assert "could not be loaded" not in log
