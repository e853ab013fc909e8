"""The `fastserve` command as a user runs it: real processes, real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import fastserve
from fastserve.cli import cli

ROOT = Path(__file__).resolve().parent.parent
RUNNING = re.compile(r"Fastserve running on http://([\d.]+):(\d+) \((\w+) mode")


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastserve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_server(*args: str, pass_fds: tuple = ()) -> tuple[subprocess.Popen, str, str]:
    """Start `fastserve ARGS --port 0`; return the process, its base URL and mode."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastserve", *args, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=pass_fds,
    )
    deadline = time.monotonic() + 15
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = RUNNING.search(line)
        if match:
            return proc, f"http://{match.group(1)}:{match.group(2)}", match.group(3)
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(seen))


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"fastserve {fastserve.__version__} ")


@pytest.mark.parametrize(
    "args, exit_code, message",
    [
        (["--bogus"], 2, "No such option"),
        (["--port", "abc"], 2, "'abc' is not a valid integer"),
        (["--http", "rust"], 2, "'rust' is not one of"),
        (["--header", "novalue"], 2, "is not NAME:VALUE"),
        (["--limit-request-head", "0"], 2, "must be a positive number"),
        (["tests.no_such_module:app"], 1, 'Could not import module "tests.no_such_module"'),
        (["fastserve.demo:nothing"], 1, 'Attribute "nothing" not found in module "fastserve.demo"'),
        (["fastserve.demo"], 1, "must be in format"),
    ],
)
def test_bad_usage_is_one_clear_line(args: list, exit_code: int, message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == exit_code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_demo_app_is_served_by_default() -> None:
    proc, url, mode = start_server()
    try:
        expected_mode = "c" if _has_c_extension() else "python"
        assert mode == expected_mode
        page = httpx.get(url + "/")
        assert page.status_code == 200
        assert "fastserve" in page.text and "is running" in page.text
        health = httpx.get(url + "/health")
        assert health.json() == {"status": "ok", "version": fastserve.__version__}
        assert health.headers["server"] == "fastserve"
    finally:
        assert stop_server(proc) == 0


@pytest.mark.parametrize("mode", ["c", "python"])
def test_http_mode_flag_selects_the_protocol(mode: str) -> None:
    proc, url, served_mode = start_server("fastserve.demo:app", "--http", mode)
    try:
        assert served_mode == mode
        assert httpx.get(url + "/health").status_code == 200
    finally:
        assert stop_server(proc) == 0


def test_readme_documents_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    for param in cli.params:
        for flag in param.opts + param.secondary_opts:
            if flag.startswith("--"):
                assert f"`{flag}`" in readme, f"{flag} is missing from README's options table"


def _has_c_extension() -> bool:
    try:
        import fastserve._parser  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("FASTSERVE_NO_EXTENSIONS", "") in ("", "0")


REPORT_APP = "tests.apps_cli:report"


@pytest.mark.parametrize("loop, module", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_loop_flag_picks_the_event_loop(loop: str, module: str) -> None:
    proc, url, _ = start_server(REPORT_APP, "--loop", loop)
    try:
        assert httpx.get(url + "/").json()["loop"].split(".")[0] == module
    finally:
        assert stop_server(proc) == 0


def test_env_file_is_loaded(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FASTSERVE_TEST_VALUE=from-the-env-file\n")
    proc, url, _ = start_server(REPORT_APP, "--env-file", str(env_file))
    try:
        assert httpx.get(url + "/").json()["env"] == "from-the-env-file"
    finally:
        assert stop_server(proc) == 0


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "LOGFILE", "formatter": "plain"},
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "fastserve": {"handlers": ["file", "stderr"], "level": "INFO", "propagate": False},
    },
}

INI_CONFIG = """[loggers]
keys=root,fastserve

[handlers]
keys=file,stderr

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=

[logger_fastserve]
level=INFO
handlers=file,stderr
qualname=fastserve
propagate=0

[handler_file]
class=FileHandler
args=('LOGFILE',)
formatter=plain

[handler_stderr]
class=StreamHandler
args=(sys.stderr,)
formatter=plain

[formatter_plain]
format=CUSTOM %(name)s %(message)s
"""


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_log_config_file(tmp_path: Path, kind: str) -> None:
    import yaml

    log_file = tmp_path / "server.log"
    config_file = tmp_path / f"logging.{kind}"
    if kind == "ini":
        config_file.write_text(INI_CONFIG.replace("LOGFILE", str(log_file)))
    else:
        config = json.loads(json.dumps(LOG_CONFIG).replace("LOGFILE", str(log_file)))
        config_file.write_text(json.dumps(config) if kind == "json" else yaml.safe_dump(config))
    proc, url, _ = start_server(REPORT_APP, "--log-config", str(config_file))
    try:
        assert httpx.get(url + "/").status_code == 200
    finally:
        assert stop_server(proc) == 0
    logged = log_file.read_text()
    assert "CUSTOM fastserve.error Fastserve running on http://127.0.0.1:" in logged
    assert "CUSTOM fastserve.error report app was called" in logged


def test_bad_log_config_is_one_line(tmp_path: Path) -> None:
    config_file = tmp_path / "logging.json"
    config_file.write_text("{not json")
    result = run_cli(REPORT_APP, "--log-config", str(config_file))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a valid logging config" in lines[0], result.stderr


def test_fd_serves_an_inherited_socket() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastserve", REPORT_APP, "--fd", str(listener.fileno())],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
    finally:
        assert stop_server(proc) == 0


def test_graceful_shutdown_timeout_cancels_a_stuck_request() -> None:
    proc, url, _ = start_server(REPORT_APP, "--timeout-graceful-shutdown", "1")
    client = httpx.Client(timeout=20)
    try:
        import threading

        outcome = {}

        def slow_request() -> None:
            try:
                outcome["status"] = client.get(url + "/slow").status_code
            except httpx.TransportError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        thread.join(timeout=10)
        assert "error" in outcome  # the stuck request was cut off, not answered
        log = proc.stderr.read()
        assert "timeout graceful shutdown exceeded" in log
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
