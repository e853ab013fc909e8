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
from typing import Optional

import httpx
import pytest

import fastserve
from fastserve.cli import cli
from process_util import ServerProcess, start_thread

ROOT = Path(__file__).resolve().parent.parent
RUNNING = re.compile(r"Fastserve running on http://([\d.]+):(\d+) \((\w+) mode")
DEMO_LINE = re.compile(r"Fastserve running on \S+ \(\w+ mode, the built-in demo app")
# What a visitor's credentials would be; the demo page must never show them.
CREDENTIALS = {
    "Authorization": "Bearer secret-token-1",
    "Proxy-Authorization": "Basic secret-token-2",
    "Cookie": "session=secret-token-3",
}


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastserve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def start_cli():
    """`start_cli(*ARGS)` starts `fastserve ARGS --port 0` and returns the
    `ServerProcess` (ready) and its mode; all are killed at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, env: Optional[dict] = None) -> tuple[ServerProcess, str]:
        server = ServerProcess.fastserve(*args, "--port", "0", env=env)
        started.append(server)
        server.wait_ready()
        return server, server.wait_for_log(RUNNING)[0][2]

    yield start
    for server in started:
        server.cleanup()


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
        (["--proxy-headers-style", "both"], 2, "'both' is not one of"),
        (["--header", "novalue"], 2, "is not NAME:VALUE"),
        (["--limit-request-head", "0"], 2, "must be a positive number"),
        (["--root-path", "api"], 2, "--root-path 'api' must be empty or a path starting"),
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


# An app module whose code raises while it is imported, two frames deep.
FAILING_APP = """\
def check_settings():
    raise RuntimeError("boom-at-import")


check_settings()
"""


TRACEBACK_CARETS = re.compile(r"\s*[~^]+\s*")


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
@pytest.mark.parametrize(
    "processes", [(), ("--workers", "2"), ("--workers", "2", "--preload")], ids=str
)
def test_an_app_raising_at_import_shows_its_traceback(tmp_path, level, processes) -> None:
    """One clear line, then the app's own traceback (its frames only, not the import
    machinery's), at every log level that shows errors; a non-zero exit."""
    (tmp_path / "failing_app.py").write_text(FAILING_APP)
    result = run_cli(
        "failing_app:app",
        "--app-dir",
        str(tmp_path),
        "--port",
        "0",
        "--log-level",
        level,
        *processes,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    first = lines.index(
        'ERROR:    Error loading ASGI app. Could not import module "failing_app": '
        "RuntimeError: boom-at-import"
    )
    path = tmp_path / "failing_app.py"
    # (Python 3.13+ marks the failing expression with a line of carets: not compared)
    traceback = [line for line in lines[first + 1 :] if not TRACEBACK_CARETS.fullmatch(line)]
    assert traceback[:6] == [
        "Traceback (most recent call last):",
        f'  File "{path}", line 5, in <module>',
        "    check_settings()",
        f'  File "{path}", line 2, in check_settings',
        '    raise RuntimeError("boom-at-import")',
        "RuntimeError: boom-at-import",
    ], result.stderr


def test_an_app_with_a_syntax_error_shows_where(tmp_path) -> None:
    (tmp_path / "broken_app.py").write_text("app = (\n")
    result = run_cli("broken_app:app", "--app-dir", str(tmp_path))
    assert result.returncode == 1
    assert 'Could not import module "broken_app": SyntaxError' in result.stderr
    assert f'  File "{tmp_path / "broken_app.py"}", line 1' in result.stderr


def test_demo_app_is_served_by_default(start_cli) -> None:
    server, mode = start_cli()
    expected_mode = "c" if _has_c_extension() else "python"
    assert mode == expected_mode
    page = httpx.get(server.url("/"))
    assert page.status_code == 200
    assert "fastserve" in page.text and "is running" in page.text
    health = httpx.get(server.url("/health"))
    assert health.json() == {"status": "ok", "version": fastserve.__version__}
    assert health.headers["server"] == "fastserve"
    assert server.stop() == 0


def test_the_demo_says_so_in_its_start_up_line(start_cli) -> None:
    for args in ((), ("--workers", "2"), ("--reload",)):
        server, _ = start_cli(*args)
        server.wait_for_log(DEMO_LINE)
    app_server, _ = start_cli("tests.apps_process:app")
    assert not DEMO_LINE.search(app_server.output())


def test_the_demo_never_echoes_credentials(start_cli, mode: str) -> None:
    server, _ = start_cli("--http", mode)
    page = httpx.get(server.url("/"), headers={**CREDENTIALS, "X-Shown": "not-a-secret"})
    assert page.status_code == 200
    assert "secret-token" not in page.text, page.text
    assert page.text.count("(redacted)") == len(CREDENTIALS)
    assert "not-a-secret" in page.text


@pytest.mark.parametrize("source", ["environment", "config file"])
def test_the_demo_keeps_loopback_unless_host_is_on_the_command_line(
    start_cli, tmp_path: Path, source: str
) -> None:
    if source == "environment":
        args, env = (), {"FASTSERVE_HOST": "0.0.0.0"}
    else:
        (tmp_path / "fastserve.toml").write_text('host = "0.0.0.0"\n')
        args, env = ("--config", str(tmp_path / "fastserve.toml")), None
    demo, _ = start_cli(*args, env=env)
    assert demo.host == "127.0.0.1"
    demo.wait_for_log("only --host on the command line takes the demo beyond loopback")
    # The same host is taken by an app the command names, and by the demo from --host.
    app_server, _ = start_cli("tests.apps_process:app", *args, env=env)
    assert app_server.host == "0.0.0.0"
    typed, _ = start_cli("--host", "0.0.0.0", env=env)
    assert typed.host == "0.0.0.0"
    assert "beyond loopback" not in typed.output()


def test_http_mode_flag_selects_the_protocol(start_cli, mode: str) -> None:
    server, served_mode = start_cli("fastserve.demo:app", "--http", mode)
    assert served_mode == mode
    assert httpx.get(server.url("/health")).status_code == 200
    assert server.stop() == 0


def readme_options_table() -> str:
    """README's options table: from its header row to the first line that is no row
    (a blank line inside it would end it there, and leave the rest plain text)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| Option | Default | Meaning |")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_readme_documents_every_option() -> None:
    table = readme_options_table()
    for param in cli.params:
        for flag in param.opts + param.secondary_opts:
            if flag.startswith("--"):
                assert f"`{flag}`" in table, f"{flag} is missing from README's options table"


def _has_c_extension() -> bool:
    try:
        import fastserve._parser  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("FASTSERVE_NO_EXTENSIONS", "") in ("", "0")


REPORT_APP = "tests.apps_cli:report"


@pytest.mark.parametrize("loop, module", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_loop_flag_picks_the_event_loop(start_cli, loop: str, module: str) -> None:
    server, _ = start_cli(REPORT_APP, "--loop", loop)
    assert httpx.get(server.url("/")).json()["loop"].split(".")[0] == module
    assert server.stop() == 0


def test_env_file_is_loaded(start_cli, tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FASTSERVE_TEST_VALUE=from-the-env-file\n")
    server, _ = start_cli(REPORT_APP, "--env-file", str(env_file))
    assert httpx.get(server.url("/")).json()["env"] == "from-the-env-file"
    assert server.stop() == 0


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
def test_log_config_file(start_cli, tmp_path: Path, kind: str) -> None:
    import yaml

    log_file = tmp_path / "server.log"
    config_file = tmp_path / f"logging.{kind}"
    if kind == "ini":
        config_file.write_text(INI_CONFIG.replace("LOGFILE", str(log_file)))
    else:
        config = json.loads(json.dumps(LOG_CONFIG).replace("LOGFILE", str(log_file)))
        config_file.write_text(json.dumps(config) if kind == "json" else yaml.safe_dump(config))
    server, _ = start_cli(REPORT_APP, "--log-config", str(config_file))
    assert httpx.get(server.url("/")).status_code == 200
    assert server.stop() == 0
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
    server = ServerProcess.fastserve(
        REPORT_APP, "--fd", str(listener.fileno()), pass_fds=(listener.fileno(),)
    )
    listener.close()
    try:
        assert server.wait_ready() == f"http://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        assert server.stop() == 0
    finally:
        server.cleanup()


@pytest.mark.serial  # bounds a duration
def test_graceful_shutdown_timeout_cancels_a_stuck_request(start_cli) -> None:
    server, _ = start_cli(REPORT_APP, "--timeout-graceful-shutdown", "1")
    with httpx.Client(timeout=20) as client:

        def slow_request() -> None:
            # the stuck request is cut off, not answered
            with pytest.raises(httpx.TransportError):
                client.get(server.url("/slow"))

        thread = start_thread(slow_request)
        server.wait_for_log("slow request started")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(15) == 0
        assert time.monotonic() - started < 8  # the 1 s timeout, not the app's 30 s
        thread.join(15)
    assert "timeout graceful shutdown exceeded" in server.output()


def test_readme_table_shows_config_defaults() -> None:
    """Each literal default in README's options table is the option's default, which
    the CLI takes from Config's signature (the one place defaults live)."""
    rows = re.findall(r"^\| `(--[a-z-]+)`[^|]*\| `([^`]*)` \|", readme_options_table(), re.M)
    assert len(rows) > 15
    defaults = {param.opts[0]: param.default for param in cli.params if param.opts}
    for flag, shown in rows:
        default = defaults[flag]
        assert shown == ('""' if default == "" else str(default)), f"{flag}: README says {shown!r}"
