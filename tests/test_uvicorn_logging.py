"""uvicorn's logging contract: a log config written for uvicorn works unchanged (its
`uvicorn`, `uvicorn.error`, `uvicorn.access` loggers are fastserve's; uvicorn's
formatter classes, or fastserve's standing in for them when uvicorn is not
installed; its access format); app code written for uvicorn (a `/health` filter on
`uvicorn.access`, INFO lines through `uvicorn.error`); the default access line,
uvicorn's."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import httpx
import pytest
from websockets.asyncio.client import connect

from process_util import ServerProcess, get, wait_until

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
FILTERING_APP = "tests.apps_uvicorn_logging:app"
WEBSOCKET_APP = "tests.apps_websockets:app"
# `python -c BLOCKED ARGS`: the fastserve command in an interpreter where uvicorn
# cannot be imported, as on a machine without it.
BLOCKED = "import sys; sys.modules['uvicorn'] = None; import fastserve.cli; fastserve.cli.main()"
ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'

# A log config in the shape uvicorn documents for --log-config (its LOGGING_CONFIG
# as YAML): uvicorn's formatter classes and loggers, the access line's fields.
UVICORN_YAML = f"""\
version: 1
disable_existing_loggers: false
formatters:
  default:
    (): uvicorn.logging.DefaultFormatter
    fmt: "%(levelprefix)s %(message)s"
    use_colors: null
  access:
    (): uvicorn.logging.AccessFormatter
    fmt: '{ACCESS_FORMAT}'
handlers:
  default:
    formatter: default
    class: logging.StreamHandler
    stream: ext://sys.stderr
  access:
    formatter: access
    class: logging.StreamHandler
    stream: ext://sys.stdout
loggers:
  uvicorn:
    handlers: [default]
    level: INFO
    propagate: false
  uvicorn.error:
    level: INFO
  uvicorn.access:
    handlers: [access]
    level: INFO
    propagate: false
"""

# The same with plain logging.Formatter: the fields are the record's own attributes.
PLAIN_JSON = {
    "version": 1,
    "formatters": {
        "default": {"format": "%(levelname)s: %(message)s"},
        "access": {"format": '%(client_addr)s - "%(request_line)s" %(status_code)s'},
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler"},
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


# The same as an .ini file (fileConfig), which uvicorn's --log-config takes too.
UVICORN_INI = f"""\
[loggers]
keys = root, uvicorn, uvicorn_error, uvicorn_access

[handlers]
keys = default, access

[formatters]
keys = default, access

[logger_root]
handlers =

[logger_uvicorn]
qualname = uvicorn
handlers = default
level = INFO
propagate = 0

[logger_uvicorn_error]
qualname = uvicorn.error
handlers =
level = INFO

[logger_uvicorn_access]
qualname = uvicorn.access
handlers = access
level = INFO
propagate = 0

[handler_default]
class = logging.StreamHandler
formatter = default
args = (sys.stderr,)

[handler_access]
class = logging.StreamHandler
formatter = access
args = (sys.stdout,)

[formatter_default]
class = uvicorn.logging.DefaultFormatter
format = %(levelprefix)s %(message)s

[formatter_access]
class = uvicorn.logging.AccessFormatter
format = {ACCESS_FORMAT}
"""


def access_line(token: str, prefix: str = "INFO:     ") -> str:
    return rf'^{prefix}127\.0\.0\.1:\d+ - "GET /_/hello\?token={token} HTTP/1\.1" 200 OK$'


def start(command: list, mode: str, *flags: str, env=None) -> ServerProcess:
    server = ServerProcess(
        [*command, "--http", mode, "--host", "127.0.0.1", "--port", "0", *flags], env=env
    )
    try:
        server.wait_ready()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.cleanup()


@pytest.mark.parametrize("kind", ["yaml", "ini"])
@pytest.mark.parametrize("uvicorn", ["installed", "not-installed"])
def test_a_uvicorn_log_config_works_unchanged(mode, uvicorn, kind, tmp_path, token, servers):
    path = tmp_path / f"logging.{kind}"
    path.write_text(UVICORN_YAML if kind == "yaml" else UVICORN_INI)
    if uvicorn == "installed":
        pytest.importorskip("uvicorn.logging")
        command = [sys.executable, "-m", "fastserve", APP]
    else:
        command = [sys.executable, "-c", BLOCKED, APP]
    server = start(command, mode, "--log-config", str(path))
    servers.append(server)
    # the start-up line, through the `uvicorn` logger's handler, on stderr
    assert re.search(r"^INFO:     Fastserve running on ", server.output("err"), re.M)
    assert get(server.url(f"/_/hello?token={token}")).status_code == 200
    server.wait_for_log("(?m)" + access_line(token))
    assert re.search("(?m)" + access_line(token), server.output("out"))
    assert server.stop() == 0
    assert "Logging error" not in server.output()
    assert "Shutting down" in server.output("err")


@pytest.mark.parametrize("uvicorn", ["installed", "not-installed"])
def test_a_websockets_line_through_uvicorns_formatter(mode, uvicorn, tmp_path, token, servers):
    """A WebSocket's access record has uvicorn's args too: its handshake's line."""
    path = tmp_path / "logging.yaml"
    path.write_text(UVICORN_YAML)
    if uvicorn == "installed":
        pytest.importorskip("uvicorn.logging")
        command = [sys.executable, "-m", "fastserve", WEBSOCKET_APP]
    else:
        command = [sys.executable, "-c", BLOCKED, WEBSOCKET_APP]
    server = start(command, mode, "--log-config", str(path))
    servers.append(server)

    async def echo():
        url = f"ws://127.0.0.1:{server.port}/echo?token={token}"
        async with connect(url) as websocket:
            await websocket.send("hello")
            assert await websocket.recv() == "hello"

    asyncio.run(echo())
    server.wait_for_log(
        rf'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /echo\?token={token} HTTP/1\.1" 101 Switching Protocols$'
    )
    assert server.stop() == 0
    assert "Logging error" not in server.output()


def test_uvicorns_access_format_with_a_plain_formatter(mode, tmp_path, token, servers):
    """The access record carries `client_addr`, `request_line` and `status_code` as
    attributes: any formatter can name them."""
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(PLAIN_JSON))
    server = start([sys.executable, "-m", "fastserve", APP], mode, "--log-config", str(path))
    servers.append(server)
    assert get(server.url(f"/_/hello?token={token}")).status_code == 200
    server.wait_for_log("(?m)" + access_line(token, prefix=""))
    assert server.stop() == 0
    assert "Logging error" not in server.output()


def test_the_default_access_line_is_uvicorns(mode, token, servers):
    server = start([sys.executable, "-m", "fastserve", APP], mode)
    servers.append(server)
    assert get(server.url(f"/_/hello?token={token}")).status_code == 200
    assert get(server.url("/_/status?code=599")).status_code == 599
    server.wait_for_log("(?m)" + access_line(token))
    # a status without a reason phrase: uvicorn's `599 `
    server.wait_for_log(r'(?m)"GET /_/status\?code=599 HTTP/1\.1" 599 $')
    assert server.stop() == 0


@pytest.mark.parametrize("filter_on", ["logger", "handler"])
@pytest.mark.parametrize(
    "flags", [(), ("--log-config", "UVICORN_YAML")], ids=["built-in", "uvicorn-config"]
)
def test_a_health_filter_sees_every_access_record(mode, filter_on, flags, tmp_path, servers):
    """The app adds the filter to `uvicorn.access` (or its handler) at import, after
    fastserve set up its logging: no /health line ever appears, from the first
    request on, buffered default line or not."""
    if flags:
        path = tmp_path / "logging.yaml"
        path.write_text(UVICORN_YAML)
        flags = ("--log-config", str(path))
    server = start(
        [sys.executable, "-m", "fastserve", FILTERING_APP],
        mode,
        *flags,
        env={"FASTSERVE_TEST_FILTER_ON": filter_on},
    )
    servers.append(server)
    with httpx.Client(timeout=10) as client:
        for n in range(5):
            assert client.get(server.url("/health")).status_code == 200
            assert client.get(server.url(f"/ok?n={n}")).status_code == 200
    wait_until(lambda: '"GET /ok?n=4 HTTP/1.1" 200 OK' in server.output("out"), 15)
    assert server.stop() == 0
    out = server.output("out")
    assert [int(n) for n in re.findall(r'"GET /ok\?n=(\d) HTTP/1\.1" 200 OK', out)] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert "/health" not in server.output()


def test_an_app_configuring_uvicorns_loggers_itself(mode, token, servers):
    """A dictConfig at the app's import, naming uvicorn's loggers with the default
    `disable_existing_loggers` (true), leaves fastserve's loggers working: the
    start-up line and the access line come out in the app's formats."""
    server = start(
        [sys.executable, "-m", "fastserve", FILTERING_APP],
        mode,
        env={"FASTSERVE_TEST_DICT_CONFIG": "1"},
    )
    servers.append(server)
    assert re.search(r"(?m)^APP INFO Fastserve running on", server.output("err"))
    assert get(server.url(f"/ok?token={token}")).status_code == 200
    server.wait_for_log(rf'(?m)^APP 127\.0\.0\.1:\d+ - "GET /ok\?token={token} HTTP/1\.1" 200 OK$')
    assert server.stop() == 0


def test_a_filter_added_while_lines_wait_in_the_buffer(mode, servers):
    """The built-in set-up's buffered line, then a filter added by a request: the
    lines before it are written, in order, and the filter sees every later record."""
    server = start(
        [sys.executable, "-m", "fastserve", FILTERING_APP],
        mode,
        env={"FASTSERVE_TEST_FILTER_ON": "runtime"},
    )
    servers.append(server)
    with httpx.Client(timeout=10) as client:
        for path in ("/health", "/ok?n=0", "/add-filter", "/health", "/ok?n=1"):
            assert client.get(server.url(path)).status_code == 200
    server.wait_for_log(r'"GET /ok\?n=1 HTTP/1\.1" 200 OK')
    assert server.stop() == 0
    requested = re.findall(r'"GET (\S+) HTTP/1\.1" 200 OK', server.output("out"))
    assert requested == ["/health", "/ok?n=0", "/add-filter", "/ok?n=1"]


def test_a_custom_format_over_a_uvicorn_config(mode, tmp_path, servers):
    """--access-log-format replaces uvicorn's AccessFormatter (it renders uvicorn's
    line only); a filter reading uvicorn's args still finds the path."""
    pytest.importorskip("uvicorn.logging")
    path = tmp_path / "logging.yaml"
    path.write_text(UVICORN_YAML)
    server = start(
        [sys.executable, "-m", "fastserve", FILTERING_APP],
        mode,
        "--log-config", str(path), "--access-log-format", "%(r)s -> %(s)s",
    )  # fmt: skip
    servers.append(server)
    with httpx.Client(timeout=10) as client:
        for path in ("/health", "/ok"):
            assert client.get(server.url(path)).status_code == 200
    server.wait_for_log(r"(?m)^GET /ok HTTP/1\.1 -> 200$")
    assert server.stop() == 0
    assert "/health" not in server.output()
    assert "Logging error" not in server.output()


def test_app_code_logs_through_uvicorn_error(mode, token, servers):
    server = start([sys.executable, "-m", "fastserve", FILTERING_APP], mode)
    servers.append(server)
    assert get(server.url(f"/say?{token}")).status_code == 200
    server.wait_for_log(rf"(?m)^INFO:     the app says {token}$")
    assert server.stop() == 0
