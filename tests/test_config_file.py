"""Settings from a TOML file (`--config`, or `[tool.fastserve]` in pyproject.toml):
real `python -m fastserve` processes, and `--print-config` for where each value came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from process_util import ServerProcess, free_port, wait_until, worker_pid

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps_process:app"
# Variables some tests set (more in run_cli).
SET_BY_TESTS = ("FORWARDED_ALLOW_IPS", "FASTSERVE_FORWARDED_ALLOW_IPS", "FASTSERVE_HOST")


def run_cli(*args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    # The tests set every variable they mean; one from the caller's shell would skew them.
    for name in (*SET_BY_TESTS, "FASTSERVE_PORT", "FASTSERVE_WORKERS", "WEB_CONCURRENCY"):
        if not env or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "fastserve", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def print_config(*args: str, env: Optional[dict] = None) -> dict:
    """`--print-config` as {key: (value, source)}."""
    result = run_cli(*args, "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    settings = {}
    for line in result.stdout.splitlines():
        setting, _, source = line.partition("  # ")
        key, _, value = setting.partition(" = ")
        settings[key] = (value, source)
    return settings


def assert_served_by_two_workers(server: ServerProcess, port: int) -> None:
    assert server.port == port
    workers = server.wait_workers(2)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    seen: set = set()

    def both_answered() -> bool:
        seen.add(worker_pid(server.url()))
        return seen == workers

    wait_until(both_answered, timeout=30, interval=0, message="both workers to answer")


def test_config_file_sets_port_and_workers(spawn, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "fastserve.toml"
    config.write_text(f'app = "{APP}"\nport = {port}\nworkers = 2\naccess-log = false\n')
    server = spawn("--config", str(config))
    assert_served_by_two_workers(server, port)
    assert server.stop() == 0


def test_pyproject_table_of_the_app_dir_sets_port_and_workers(spawn, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "app"\n\n[tool.fastserve]\nport = {port}\nworkers = 2\n'
    )
    server = spawn(APP, "--app-dir", str(tmp_path))
    assert_served_by_two_workers(server, port)
    assert server.stop() == 0


def test_precedence_command_line_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "fastserve.toml"
    config.write_text(
        'port = 7001\nworkers = 3\nhost = "0.0.0.0"\n'
        'forwarded-allow-ips = ["10.0.0.1", "10.0.0.0/8"]\n'
        'header = ["X-Frame-Options: DENY"]\nproxy-headers = false\n'
    )
    settings = print_config(
        "--config",
        str(config),
        "--port",
        "7002",
        env={"FASTSERVE_PORT": "7003", "FASTSERVE_WORKERS": "4"},
    )
    assert settings["port"] == ("7002", "command line")
    assert settings["workers"] == ("4", "environment FASTSERVE_WORKERS")
    assert settings["host"] == ('"0.0.0.0"', str(config))
    assert settings["forwarded-allow-ips"] == ('"10.0.0.1,10.0.0.0/8"', str(config))
    assert settings["header"] == ('["X-Frame-Options: DENY"]', str(config))
    assert settings["proxy-headers"] == ("false", str(config))
    assert settings["backlog"] == ("2048", "default")
    assert settings["app"] == ('"fastserve.demo:app"', "default")


def test_forwarded_allow_ips_from_uvicorn_s_variable_is_shown(tmp_path: Path) -> None:
    """FORWARDED_ALLOW_IPS is in force, so --print-config shows its value and source;
    fastserve's own variable wins over it, and both over a file."""
    config = tmp_path / "fastserve.toml"
    config.write_text('forwarded-allow-ips = "10.0.0.1"\nproxy-headers-style = "forwarded"\n')
    uvicorn_s = {"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    settings = print_config("--config", str(config), env=uvicorn_s)
    assert settings["forwarded-allow-ips"] == ('"10.0.0.0/8"', "environment FORWARDED_ALLOW_IPS")
    assert settings["proxy-headers-style"] == ('"forwarded"', str(config))
    both = {**uvicorn_s, "FASTSERVE_FORWARDED_ALLOW_IPS": "192.0.2.1"}
    settings = print_config("--config", str(config), env=both)
    assert settings["forwarded-allow-ips"] == (
        '"192.0.2.1"',
        "environment FASTSERVE_FORWARDED_ALLOW_IPS",
    )
    settings = print_config("--forwarded-allow-ips", "*", env=both)
    assert settings["forwarded-allow-ips"] == ('"*"', "command line")
    assert settings["proxy-headers-style"] == ('"x-forwarded"', "default")
    # unset, the list in force is shown, not "(not set)"
    assert print_config()["forwarded-allow-ips"] == ('"127.0.0.1,::1"', "default")


def test_config_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "fastserve.toml"
    config.write_text("backlog = 10\n")
    settings = print_config(env={"FASTSERVE_CONFIG": str(config)})
    assert settings["backlog"] == ("10", str(config))


def test_config_option_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.fastserve]\nport = 7001\n")
    config = tmp_path / "other.toml"
    config.write_text("backlog = 10\n")
    from_pyproject = print_config("--app-dir", str(tmp_path))
    assert from_pyproject["port"] == ("7001", str(tmp_path / "pyproject.toml"))
    from_config = print_config("--app-dir", str(tmp_path), "--config", str(config))
    assert from_config["port"] == ("8000", "default")
    assert from_config["backlog"] == ("10", str(config))


@pytest.mark.parametrize(
    "content, message",
    [
        ("prot = 8000", "key 'prot': unknown option"),
        ('port = "abc"', "key 'port': expected an integer, got \"abc\""),
        ("workers = 2.5", "key 'workers': expected an integer, got 2.5"),
        ('access-log = "yes"', "key 'access-log': expected a boolean, got \"yes\""),
        (
            'http = "rust"',
            "key 'http': expected one of auto, c, python, h11, httptools, zttp, got \"rust\"",
        ),
        (
            'proxy-headers-style = "both"',
            "key 'proxy-headers-style': expected one of x-forwarded, forwarded, got \"both\"",
        ),
        ('reload-dir = "src"', "key 'reload-dir': expected a list, got \"src\""),
        ('header = ["novalue"]', "key 'header': 'novalue' is not NAME:VALUE"),
        ("port = ", "Invalid value"),
    ],
)
def test_bad_file_is_one_line_naming_key_and_file(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "fastserve.toml"
    config.write_text(content + "\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fastserve: error: {config}: {message}")
    assert "Traceback" not in result.stderr
