"""`fastserve --workers N`: the pre-fork supervisor, with real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import httpx
import pytest

from process_util import (
    Load,
    ServerProcess,
    get,
    open_paths,
    pid_alive,
    start_thread,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"


def supervised(spawn, *flags: str, workers: int = 2) -> ServerProcess:
    server = spawn(APP, "--port", "0", "--workers", str(workers), "--no-access-log", *flags)
    server.wait_workers(workers)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=workers)
    return server


def test_workers_serve_and_stop_cleanly(spawn):
    server = supervised(spawn, workers=3)
    assert "3 workers" in server.log()
    workers = server.workers()
    seen = {worker_pid(server.url()) for _ in range(30)}
    assert seen <= workers
    assert server.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(pid) for pid in workers)
    log = server.log()
    assert "Stopped supervisor process" in log
    assert log.count("Application shutdown complete") == 3


def test_master_does_not_import_the_app(spawn, tmp_path):
    (tmp_path / "marked_app.py").write_text(
        "import os\nos.write(2, b'IMPORTED IN %d\\n' % os.getpid())\nfrom apps_process import app\n"
    )
    server = spawn(
        "marked_app:app",
        "--app-dir",
        str(tmp_path),
        "--port",
        "0",
        "--workers",
        "2",
        env={"PYTHONPATH": os.path.join(os.path.dirname(__file__))},
    )
    workers = server.wait_workers(2)
    server.wait_for_log("IMPORTED IN", count=2)
    imported = {int(pid) for pid in server.wait_for_log(r"IMPORTED IN (\d+)", count=2)}
    assert server.pid not in imported
    assert imported == workers
    assert server.stop() == 0


def test_preload_imports_the_app_once_in_the_master(spawn, tmp_path):
    (tmp_path / "marked_app.py").write_text(
        "import os\nos.write(2, b'IMPORTED IN %d\\n' % os.getpid())\nfrom apps_process import app\n"
    )
    server = spawn(
        "marked_app:app",
        "--app-dir",
        str(tmp_path),
        "--port",
        "0",
        "--workers",
        "2",
        "--preload",
        env={"PYTHONPATH": os.path.join(os.path.dirname(__file__))},
    )
    server.wait_workers(2)
    worker_pid(server.url())
    imported = {int(pid) for pid in server.wait_for_log(r"IMPORTED IN (\d+)")}
    assert imported == {server.pid}
    assert server.stop() == 0


def test_kill_9_worker_under_load_is_replaced(spawn):
    server = supervised(spawn)
    before = server.workers()
    with Load(server.url()) as load:
        load.wait_requests(50)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        after = server.wait_workers(2, exclude=frozenset({victim}), timeout=10)
        load.wait_requests(200)
    assert victim not in after and len(after & before) == 1
    new_worker = (after - before).pop()
    assert new_worker in set(load.pids[-150:]) or worker_pid(server.url()) in after
    # Only requests that were in flight in the killed worker may fail.
    assert len(load.failures) <= len(load.threads), load.failures
    assert f"Worker [{victim}] died unexpectedly (killed by SIGKILL)" in server.log()
    assert server.stop() == 0


@pytest.mark.serial  # bounds a duration
def test_blocked_worker_is_killed_and_replaced(spawn):
    server = supervised(spawn, "--timeout-worker-healthcheck", "1.5")
    before = server.workers()
    results = {}

    def blocked_request():
        start = time.monotonic()
        try:
            results["response"] = get(server.url("/block?s=60"), timeout=30)
        except httpx.HTTPError as exc:
            results["error"] = exc
        results["elapsed"] = time.monotonic() - start

    thread = start_thread(blocked_request)
    thread.join(30)  # fails if the blocked worker was not killed
    assert "error" in results and results["elapsed"] < 10, results
    (killed,) = server.wait_for_log(
        r"Worker \[(\d+)\] was killed after its heartbeat stopped", timeout=10
    )
    killed = int(killed)
    assert killed in before
    after = server.wait_workers(2, exclude=frozenset({killed}), timeout=10)
    log = server.log()
    assert f"Worker [{killed}] sent no heartbeat" in log and "event loop is blocked" in log
    # The worker logs where its loop was stuck before it exits.
    assert "time.sleep(seconds)" in log
    assert len(before & after) == 1
    # The other worker kept serving all along, and the replacement serves too.
    assert all(worker_pid(server.url()) in after for _ in range(10))
    assert server.stop() == 0


def test_sighup_rolling_restart_under_load_loses_nothing(spawn):
    server = supervised(spawn)
    before = server.workers()
    with Load(server.url(), threads=4) as load:
        load.wait_requests(50)
        server.send_signal(signal.SIGHUP)
        after = server.wait_workers(2, exclude=before, timeout=20)
        load.wait_requests(100)
    assert not (after & before)
    assert load.failures == [], load.failures[:5]
    assert set(load.pids[-50:]) <= after
    assert "rolling restart" in server.log()
    assert server.stop() == 0


@pytest.mark.serial  # bounds a duration
def test_sigterm_lets_a_slow_request_finish(spawn):
    server = supervised(spawn, "--timeout-graceful-shutdown", "10")
    results = {}

    def slow_request():
        results["response"] = get(server.url("/slow?s=2"), timeout=15)

    thread = start_thread(slow_request)
    server.wait_for_log("slow request started")
    start = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait(15) == 0
    thread.join(15)
    assert results["response"].status_code == 200
    assert results["response"].text.startswith("slow done")
    assert time.monotonic() - start < 8
    with pytest.raises(httpx.ConnectError):
        get(server.url("/"), timeout=2)


@pytest.mark.serial  # bounds a duration
def test_sigquit_stops_at_once(spawn):
    server = supervised(spawn)
    workers = server.workers()
    thread = start_thread(pytest.raises, httpx.HTTPError, get, server.url("/slow?s=30"), timeout=20)
    server.wait_for_log("slow request started")
    start = time.monotonic()
    server.send_signal(signal.SIGQUIT)
    assert server.wait(15) == 0
    assert time.monotonic() - start < 10  # at once, not after the request's 30 s
    thread.join(15)  # the request failed (pytest.raises in the thread)
    assert not any(pid_alive(pid) for pid in workers)


def test_ttin_ttou_change_the_worker_count(spawn):
    server = supervised(spawn)
    server.send_signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.send_signal(signal.SIGTTOU)
    server.wait_workers(2)
    server.send_signal(signal.SIGTTOU)
    server.wait_workers(1)
    server.send_signal(signal.SIGTTOU)  # never below one
    server.wait_for_log("already down to one worker")
    assert len(server.workers()) == 1
    worker_pid(server.url())
    assert server.stop() == 0


def test_two_ttin_back_to_back_add_two_workers_two_ttou_remove_two(spawn):
    """Two signals of a kind back to back count twice, also when the second comes
    while the first is still queued in the master (it used to drop the second).

    One signal first: the master handles it and goes back to sleep with a worker to
    fork (or retire) when it wakes up; the pair wakes it, and the first of the two
    stays queued while it forks, when the second one arrives."""
    server = supervised(spawn)
    server.send_signal(signal.SIGTTIN)
    server.wait_for_log(r"Received SIGTTIN: 3 worker\(s\) now")
    server.send_signal_twice(signal.SIGTTIN)
    server.wait_workers(5)
    server.wait_for_log(r"Received SIGTTIN: 5 worker\(s\) now")
    assert server.log().count("Received SIGTTIN") == 3
    # all ready: the master is idle again, as send_signal_twice needs
    server.wait_for_log(r"Worker \[\d+\] is ready", count=5)
    before = server.workers()
    server.send_signal(signal.SIGTTOU)
    server.wait_for_log(r"Received SIGTTOU: 4 worker\(s\) now")
    server.send_signal_twice(signal.SIGTTOU)
    assert server.wait_workers(2) < before
    server.wait_for_log(r"Received SIGTTOU: 2 worker\(s\) now")
    assert server.log().count("Received SIGTTOU") == 3
    assert worker_pid(server.url()) in server.workers()
    assert server.stop() == 0


def test_max_requests_recycles_workers(spawn):
    server = supervised(spawn, "--max-requests", "10", "--max-requests-jitter", "3")
    before = server.workers()
    pids = set()
    for _ in range(60):
        pids.add(worker_pid(server.url()))
    wait_until(lambda: len(server.workers()) == 2, 10)
    assert len(pids) > 2
    assert not before <= server.workers()
    assert "Maximum request limit" in server.log()
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("app", "code", "reason"),
    [
        ("tests.apps_process:missing", 1, "the app could not be loaded"),
        ("tests.apps_process:startup_fails", 3, "application startup failed"),
    ],
)
def test_repeated_boot_failure_stops_the_master(spawn, app, code, reason):
    server = spawn(app, "--port", "0", "--workers", "2", ready=False)
    assert server.wait(30) == code
    log = server.log()
    assert f"failed to boot 3 times in a row (last: exit code {code} ({reason}))" in log
    assert log.count("failed to boot (") <= 4  # no fork loop


def test_preload_import_error_fails_in_the_master(spawn):
    server = spawn(
        "tests.apps_process:missing", "--port", "0", "--workers", "2", "--preload", ready=False
    )
    assert server.wait(15) == 1
    assert 'Attribute "missing" not found' in server.log()
    assert "Started server process" not in server.log()


def test_reuse_port_workers(spawn):
    server = supervised(spawn, "--reuse-port")
    assert "SO_REUSEPORT" in server.log()
    pids = {worker_pid(server.url()) for _ in range(40)}
    assert pids <= server.workers()
    before = server.workers()
    server.send_signal(signal.SIGHUP)
    server.wait_workers(2, exclude=before)
    worker_pid(server.url())
    assert server.stop() == 0


def test_unix_socket_workers(spawn, tmp_path):
    path = str(tmp_path / "fs.sock")
    server = spawn(APP, "--uds", path, "--workers", "2", ready=False)
    server.wait_for_log(r"Fastserve running on unix socket")
    server.wait_workers(2)
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport) as client:
        response = client.get("http://fastserve/scope")
    assert response.status_code == 200
    assert json.loads(response.text)["pid"] in server.workers()
    assert server.stop() == 0
    assert not os.path.exists(path)


def test_sigusr1_reopens_log_files(spawn, tmp_path):
    log_path = tmp_path / "server.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(process)d %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_path),
                "formatter": "plain",
            }
        },
        "loggers": {
            "fastserve": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "fastserve.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }
    config_path = tmp_path / "log.json"
    config_path.write_text(json.dumps(config))
    server = spawn(
        APP, "--port", "0", "--workers", "2", "--log-config", str(config_path), ready=False
    )
    wait_until(lambda: log_path.exists() and "Fastserve running on" in log_path.read_text(), 15)
    port = log_path.read_text().split("127.0.0.1:")[1].split()[0]
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: log_path.read_text().count("is ready") == 2, 15)
    rotated = tmp_path / "server.log.1"
    log_path.rename(rotated)
    server.send_signal(signal.SIGUSR1)
    wait_until(log_path.exists, 5)
    wait_until(lambda: "reopened log files" in log_path.read_text(), 5)
    # every worker has reopened: it holds the new file open, no more the rotated one
    wait_until(
        lambda: all(
            str(log_path) in open_paths(pid) and str(rotated) not in open_paths(pid)
            for pid in server.workers()
        ),
        15,
        message="the workers to reopen the log file",
    )
    for _ in range(10):
        get(url + "/")
    # Access lines from the workers land in the new file, not the rotated one.
    wait_until(
        lambda: log_path.read_text().count('"GET / HTTP/1.1" 200') == 10,
        15,
        message="10 access lines in the new log file",
    )
    assert '"GET / HTTP/1.1"' not in rotated.read_text()
    assert server.stop() == 0


def test_run_routes_to_the_supervisor(spawn):
    server = ServerProcess(
        [sys.executable, "-c", f"import fastserve; fastserve.run({APP!r}, port=0, workers=2)"]
    )
    try:
        server.wait_ready()
        server.wait_workers(2)
        assert worker_pid(server.url()) in server.workers()
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_invalid_worker_options_are_one_line_errors():
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "fastserve", APP, "--workers", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "fastserve: error: --workers must be a positive number"
    ]


def test_rolling_restart_with_broken_code_keeps_the_old_workers(spawn, tmp_path):
    module = tmp_path / "deployed_app.py"
    module.write_text("from apps_process import app\n")
    server = spawn(
        "deployed_app:app",
        "--app-dir",
        str(tmp_path),
        "--port",
        "0",
        "--workers",
        "2",
        env={"PYTHONPATH": os.path.dirname(__file__)},
    )
    before = server.wait_workers(2)
    # The first workers must have imported the good code before it breaks.
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    module.write_text("raise RuntimeError('broken deploy')\n")
    server.send_signal(signal.SIGHUP)
    server.wait_for_log("Rolling restart aborted", timeout=30)
    assert server.proc.poll() is None
    wait_until(lambda: server.workers() == before, 10)
    assert all(worker_pid(server.url()) in before for _ in range(10))
    # Fixed code: the next SIGHUP goes through.
    module.write_text("from apps_process import app\n")
    server.send_signal(signal.SIGHUP)
    server.wait_workers(2, exclude=before)
    assert server.stop() == 0


def test_inherited_socket_fd(spawn):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    server = ServerProcess.fastserve(APP, "--fd", str(fd), "--workers", "2", pass_fds=(fd,))
    try:
        listener.close()
        server.wait_workers(2)
        server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
        assert worker_pid(f"http://127.0.0.1:{port}") in server.workers()
        assert server.stop() == 0
    finally:
        server.cleanup()
