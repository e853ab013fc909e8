"""The `fastserve` command as a user runs it: real processes, real sockets."""

from __future__ import annotations

import os
import re
import signal
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


def start_server(*args: str) -> tuple[subprocess.Popen, str, str]:
    """Start `fastserve ARGS --port 0`; return the process, its base URL and mode."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastserve", *args, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
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
