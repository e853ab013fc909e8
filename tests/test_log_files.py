"""--access-logfile / --error-logfile (Gunicorn's): a real server writes its access
log and its error log to files, or to stdout / stderr for "-"."""

from __future__ import annotations

import json
import re
import signal

import httpx
import pytest

from process_util import ServerProcess, free_port, open_paths, wait_until

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
RUNNING = "Fastserve running on http://127.0.0.1:"


def access_line(token: str) -> str:
    return rf'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /_/hello\?token={token} HTTP/1\.1" 200 OK$'


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.cleanup()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_logs_go_to_the_files(mode, workers, tmp_path, token, servers):
    access_file, error_file = tmp_path / "access.log", tmp_path / "error.log"
    error_file.write_text("an earlier line\n")  # appended to, as Gunicorn
    port = free_port()
    server = ServerProcess.fastserve(
        APP, "--http", mode, "--port", str(port), "--workers", workers,
        "--access-logfile", str(access_file), "--error-logfile", str(error_file),
    )  # fmt: skip
    servers.append(server)
    wait_until(lambda: RUNNING in error_file.read_text(), 30, message="the start-up line")
    with httpx.Client(timeout=10) as client:
        assert client.get(f"http://127.0.0.1:{port}/_/hello?token={token}").status_code == 200
    wait_until(lambda: re.search(access_line(token), access_file.read_text()), 15)
    assert server.stop() == 0
    errors = error_file.read_text()
    assert errors.startswith("an earlier line\nINFO:     ")
    assert "Shutting down" in errors and "/_/hello" not in errors
    assert RUNNING not in access_file.read_text()
    # nothing on the standard streams
    assert server.output() == ""


def test_sigusr1_reopens_the_files(tmp_path, token, servers):
    """logrotate's way: the files are moved away, SIGUSR1 to the master; the workers'
    (buffered) access lines and the error log go to the new files."""
    access_file, error_file = tmp_path / "access.log", tmp_path / "error.log"
    port = free_port()
    server = ServerProcess.fastserve(
        APP, "--port", str(port), "--workers", "2",
        "--access-logfile", str(access_file), "--error-logfile", str(error_file),
    )  # fmt: skip
    servers.append(server)
    wait_until(
        lambda: error_file.exists() and error_file.read_text().count("is ready") == 2,
        30,
        message="2 workers ready",
    )
    rotated = {path: path.with_suffix(".log.1") for path in (access_file, error_file)}
    for path, moved in rotated.items():
        path.rename(moved)
    server.send_signal(signal.SIGUSR1)
    wait_until(
        lambda: all(
            {str(access_file), str(error_file)} <= open_paths(pid)
            and not {str(moved) for moved in rotated.values()} & open_paths(pid)
            for pid in server.workers()
        ),
        15,
        message="the workers to reopen the files",
    )
    with httpx.Client(timeout=10) as client:
        for _ in range(10):
            assert client.get(f"http://127.0.0.1:{port}/_/hello?token={token}").status_code == 200
    wait_until(lambda: len(re.findall(access_line(token), access_file.read_text())) == 10, 15)
    assert "reopened log files" in error_file.read_text()
    assert server.stop() == 0
    assert token not in rotated[access_file].read_text()


def test_dash_is_the_standard_stream(mode, tmp_path, token, servers):
    """A log config that writes the access log to stderr and the error log to stdout;
    "-" puts each back on its standard stream."""
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "%(name)s: %(message)s"}},
        "handlers": {
            "to_out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
            "to_err": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["to_out"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["to_err"], "level": "INFO", "propagate": False},
        },
    }  # fmt: skip
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    server = ServerProcess.fastserve(
        APP, "--http", mode, "--port", "0", "--log-config", str(path),
        "--access-logfile", "-", "--error-logfile", "-",
    )  # fmt: skip
    servers.append(server)
    server.wait_ready()
    assert httpx.get(server.url(f"/_/hello?token={token}")).status_code == 200
    server.wait_for_log(f"token={token}")
    assert server.stop() == 0
    assert f"token={token}" in server.output("out")
    assert "fastserve.error: Fastserve running on" in server.output("err")
    assert RUNNING not in server.output("out")
    assert f"token={token}" not in server.output("err")


@pytest.mark.parametrize("option", ["--access-logfile", "--error-logfile"])
def test_a_file_that_cannot_be_opened_is_one_line(option, tmp_path):
    path = tmp_path / "no-such-directory" / "x.log"
    server = ServerProcess.fastserve(APP, "--port", "0", option, str(path))
    try:
        assert server.wait() != 0
    finally:
        server.cleanup()
    lines = server.output("err").splitlines()
    assert lines == [
        f"fastserve: error: {option} {str(path)!r} cannot be opened: No such file or directory"
    ]
