"""Switching from uvicorn: every uvicorn flag, value, variable and `Config` argument is
taken (read from the installed uvicorn itself, so a new uvicorn option fails here
until fastserve takes it), ASGI 2 apps are served, and the uvicorn names fastserve
maps are served with their meaning. README "Switching from uvicorn"."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import click
import httpx
import pytest
import uvicorn
import uvicorn.config
import uvicorn.server
from click.testing import CliRunner
from websockets.asyncio.client import connect

import fastserve
from fastserve.cli import cli
from fastserve.config import Config, ConfigError
from fastserve.config_file import COMMAND_OPTIONS
from fastserve.interface import detect
from fastserve.logging import LOGGING_CONFIG
from process_util import ServerProcess
from proxy_stack import HAS_IPV6

# The `uvicorn` command (`uvicorn.main` is the function the package exports, not the module).
UVICORN_COMMAND = importlib.import_module("uvicorn.main").main

ROOT = Path(__file__).resolve().parent.parent
APPS = "tests.apps_uvicorn"

# uvicorn values fastserve refuses at start-up, with one line naming them (README).
REFUSED: dict = {}
# uvicorn values that need a package this machine may not have (uvicorn fails too).
NEEDS_A_PACKAGE = "is not installed"
# uvicorn attributes fastserve has not, and why (README "Switching from uvicorn").
ATTRIBUTES_NOT_TAKEN = {
    "setup_event_loop": "removed in uvicorn 0.36: uvicorn's own only raises",
    "reload_dirs_excludes": "the reloader matches --reload-exclude as it walks",
}


async def asgi_app(scope, receive, send):  # pragma: no cover - never called
    pass


def literal_values(annotation) -> list:
    """The values of every Literal inside `annotation` (uvicorn's HTTPProtocolType...)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in literal_values(arg)]


UVICORN_HINTS = typing.get_type_hints(uvicorn.config.Config.__init__)
UVICORN_OPTIONS = [
    param
    for param in UVICORN_COMMAND.params
    if isinstance(param, click.Option) and param.name != "version"
]


def option_values(param: click.Option) -> list:
    """The values to try for one uvicorn option: every choice or Literal value,
    else its default, else a sample of its type."""
    if param.is_flag:
        return [None]
    if isinstance(param.type, click.Choice):
        return list(param.type.choices)
    literals = literal_values(UVICORN_HINTS.get(param.name))
    if literals:
        return literals
    if isinstance(param.default, (str, int, float)) and param.default != "":
        return [str(param.default)]
    samples = {"headers": "X-Sample: 1", "forwarded_allow_ips": "10.0.0.1", "root_path": "/sample"}
    if param.name in samples:
        return [samples[param.name]]
    return ["1"] if isinstance(param.type, (click.types.IntParamType,)) else ["sample"]


def option_cases() -> list:
    cases = []
    for param in UVICORN_OPTIONS:
        for flag in [*param.opts, *param.secondary_opts]:
            for value in option_values(param) if flag in param.opts else [None]:
                cases.append(pytest.param(param.name, flag, value, id=f"{flag}={value}"))
    return cases


@pytest.fixture
def paths(tmp_path, monkeypatch) -> dict:
    """Files the path options need to exist."""
    monkeypatch.chdir(tmp_path)  # no pyproject.toml here: no [tool.fastserve]
    log_config = tmp_path / "logging.json"
    log_config.write_text(json.dumps({"version": 1, "disable_existing_loggers": False}))
    env_file = tmp_path / "app.env"
    env_file.write_text("")
    return {"log_config": str(log_config), "env_file": str(env_file), "reload_dirs": "."}


def test_fastserve_help_lists_every_uvicorn_flag() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    flags = [flag for param in UVICORN_OPTIONS for flag in param.opts + param.secondary_opts]
    missing = [flag for flag in flags if flag not in result.output]
    assert not missing, f"uvicorn flags fastserve --help does not list: {missing}"


@pytest.mark.parametrize("name, flag, value", option_cases())
def test_every_uvicorn_flag_and_value_is_accepted(paths, name, flag, value) -> None:
    """Parsed by fastserve's command line and taken by its Config, as `fastserve`
    would run it; the values fastserve refuses say so in one line."""
    args = [flag] if value is None else [flag, paths.get(name, value)]
    if name == "ssl_keyfile":
        args += ["--ssl-certfile", "cert.pem"]  # a key alone is refused, as uvicorn does
    try:
        ctx = cli.make_context("fastserve", [f"{APPS}:context", *args])
    except click.UsageError as exc:
        pytest.fail(f"fastserve {' '.join(args)}: {exc.format_message()}")
    params = dict(ctx.params)
    for command_option in COMMAND_OPTIONS:
        params.pop(command_option)
    app, log_config = params.pop("app"), params.pop("log_config")
    refused = REFUSED.get((name, True if value is None else value))
    try:
        Config(app, log_config=log_config or LOGGING_CONFIG, **params)
    except ConfigError as exc:
        if refused is None and NEEDS_A_PACKAGE not in str(exc):
            pytest.fail(f"fastserve {' '.join(args)}: {exc}")
        assert refused is None or str(exc).startswith(refused), exc
    else:
        assert refused is None, f"{refused} should be refused at start-up"


def test_every_uvicorn_config_argument_is_taken() -> None:
    ours = inspect.signature(Config).parameters
    theirs = inspect.signature(uvicorn.config.Config).parameters
    missing = [name for name in theirs if name not in ours]
    assert not missing, f"uvicorn Config arguments fastserve's Config lacks: {missing}"
    for name, parameter in theirs.items():
        if name == "app" or parameter.default is inspect.Parameter.empty:
            continue
        value = None if name == "log_config" else parameter.default  # not uvicorn's loggers
        try:
            Config(asgi_app, **{"http": "python", "ws": "none", name: value})
        except ConfigError as exc:
            assert (name, value) in REFUSED, f"Config({name}={value!r}): {exc}"


def test_every_uvicorn_config_attribute_is_there(monkeypatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    theirs = uvicorn.config.Config(asgi_app, log_config=None)
    theirs.load()
    ours = Config(asgi_app, log_config=None, http="python")
    ours.load()
    names = {name for name in vars(uvicorn.config.Config) if not name.startswith("_")}
    names |= {name for name in vars(theirs) if not name.startswith("_")}
    missing = sorted(name for name in names - set(ATTRIBUTES_NOT_TAKEN) if not hasattr(ours, name))
    assert not missing, f"uvicorn Config attributes fastserve's Config lacks: {missing}"
    assert ours.asgi_version == theirs.asgi_version == "3.0"
    assert ours.use_subprocess is theirs.use_subprocess is False
    assert ours.should_reload is theirs.should_reload is False
    assert Config("m:app", reload=True, http="python").should_reload is True
    assert Config("m:app", workers=2, http="python").use_subprocess is True


def test_run_takes_configs_arguments_by_name() -> None:
    """`fastserve.run`'s keyword parameters are Config's, with its defaults (editors
    and help() show them), and take every uvicorn.run argument."""
    ours = dict(inspect.signature(fastserve.run).parameters)
    assert ours.pop("app").kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    config = dict(inspect.signature(Config).parameters)
    config.pop("app")
    assert list(ours) == list(config), "fastserve.run must list Config's parameters in order"
    for name, parameter in ours.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameter.default == config[name].default, name
    theirs = inspect.signature(uvicorn.run).parameters
    missing = [name for name in theirs if name != "app" and name not in ours]
    assert not missing, f"uvicorn.run arguments fastserve.run lacks: {missing}"


def test_server_has_uvicorns_methods() -> None:
    theirs = {name for name in vars(uvicorn.server.Server) if not name.startswith("_")}
    ours = fastserve.Server(Config(asgi_app, http="python"))
    missing = sorted(name for name in theirs if not hasattr(ours, name))
    assert not missing, f"uvicorn Server methods fastserve's Server lacks: {missing}"


# -- aliases, as served ------------------------------------------------------------------


@pytest.fixture
def start():
    """`start(*ARGS, env=...)`: `fastserve ARGS --port 0`, ready; killed at teardown."""
    started: list[ServerProcess] = []

    def run(*args: str, env=None, host: str = "127.0.0.1") -> ServerProcess:
        server = ServerProcess.fastserve(*args, "--host", host, "--port", "0", env=env)
        started.append(server)
        server.wait_ready()
        return server

    yield run
    for server in started:
        server.cleanup()


@pytest.mark.parametrize(
    "value, mode, note",
    [("h11", "python", False), ("httptools", "c", True), ("zttp", "c", True)],
)
def test_uvicorn_http_values_run_their_mode(start, value, mode, note) -> None:
    server = start(f"{APPS}:context", "--http", value)
    assert f"({mode} mode" in server.output()
    assert (f"--http {value}: served by fastserve's C mode" in server.output()) is note
    assert httpx.get(server.url("/")).status_code == 200
    assert server.stop() == 0


def test_websockets_sansio_is_the_websockets_protocol(start) -> None:
    server = start(f"{APPS}:ASGI2Class", "--ws", "websockets-sansio")

    async def talk() -> str:
        async with connect(f"ws://127.0.0.1:{server.port}/") as websocket:
            await websocket.send("hello")
            return await websocket.recv()

    assert asyncio.run(asyncio.wait_for(talk(), 30)) == "2.0:hello"
    assert server.stop() == 0


@pytest.mark.parametrize(
    "loop, expected",
    [
        ("none", "asyncio.unix_events._UnixSelectorEventLoop"),
        (f"{APPS}:new_custom_loop", "tests.apps_uvicorn.CustomLoop"),
    ],
)
def test_uvicorn_loop_values(start, loop, expected) -> None:
    server = start(f"{APPS}:context", "--loop", loop)
    assert httpx.get(server.url("/")).json()["loop"] == expected
    assert server.stop() == 0


@pytest.mark.parametrize("mode", ["c", "python"])
def test_h11_max_incomplete_event_size_is_the_head_limit(start, mode) -> None:
    server = start(f"{APPS}:context", "--http", mode, "--h11-max-incomplete-event-size", "2048")
    assert httpx.get(server.url("/"), headers={"x-pad": "a" * 1000}).status_code == 200
    assert httpx.get(server.url("/"), headers={"x-pad": "a" * 3000}).status_code == 431
    assert server.stop() == 0


def websocket_text(server: ServerProcess) -> str:
    """The first message a WebSocket to the server's / receives."""

    async def talk() -> str:
        async with connect(f"ws://127.0.0.1:{server.port}/") as websocket:
            return await websocket.recv()

    return asyncio.run(asyncio.wait_for(talk(), 30))


@pytest.mark.parametrize("mode", ["c", "python"])
def test_reset_contextvars(start, mode) -> None:
    """A contextvar set at the app's import shows in requests and WebSockets, unless
    --reset-contextvars."""
    server = start(f"{APPS}:context", "--http", mode)
    assert httpx.get(server.url("/")).json()["set_at_import"] == "set at import"
    assert websocket_text(server) == "set at import"
    reset = start(f"{APPS}:context", "--http", mode, "--reset-contextvars")
    assert httpx.get(reset.url("/")).json()["set_at_import"] is None
    assert websocket_text(reset) == "None"
    assert server.stop() == 0 and reset.stop() == 0


# -- UVICORN_* variables -----------------------------------------------------------------


def fastserve_command(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastserve", *args],
        cwd=ROOT,
        env={**clean_environment(), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def clean_environment() -> dict:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FASTSERVE_", "UVICORN_")) and name != "WEB_CONCURRENCY"
    }


def test_uvicorn_variables_are_read_after_fastserves() -> None:
    result = fastserve_command(
        "--print-config",
        env={
            "UVICORN_APP": f"{APPS}:context",
            "UVICORN_PORT": "9101",
            "UVICORN_HTTP": "h11",
            "UVICORN_ROOT_PATH": "/uvicorn",
            "FASTSERVE_ROOT_PATH": "/fastserve",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f'app = "{APPS}:context"  # environment UVICORN_APP' in lines
    assert "port = 9101  # environment UVICORN_PORT" in lines
    assert 'http = "h11"  # environment UVICORN_HTTP' in lines
    assert 'root-path = "/fastserve"  # environment FASTSERVE_ROOT_PATH' in lines


def test_uvicorn_port_binds() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ServerProcess.fastserve(f"{APPS}:context", env={"UVICORN_PORT": str(port)})
    try:
        assert server.wait_ready() == f"http://127.0.0.1:{port}"
        assert server.stop() == 0
    finally:
        server.cleanup()


# -- ASGI 2, WSGI --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["c", "python"])
@pytest.mark.parametrize("app", ["ASGI2Class", "asgi2_function"])
def test_asgi2_app_is_served(start, mode, app) -> None:
    """HTTP, WebSocket and lifespan, detected (auto) and with --interface asgi2."""
    for flags in ((), ("--interface", "asgi2")):
        server = start(f"{APPS}:{app}", "--http", mode, *flags)
        assert httpx.get(server.url("/")).json() == {"asgi": "2.0", "lifespan": True}

        async def talk() -> str:
            async with connect(f"ws://127.0.0.1:{server.port}/") as websocket:
                await websocket.send("hi")
                return await websocket.recv()

        assert asyncio.run(asyncio.wait_for(talk(), 30)) == "2.0:hi"
        assert server.stop() == 0


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("flags", [(), ("--interface", "wsgi")], ids=["auto", "wsgi"])
def test_a_wsgi_app_is_served(start, flags) -> None:
    """Found by auto (uvicorn: ASGI 2) or named, as uvicorn's --interface wsgi serves it."""
    server = start(f"{APPS}:wsgi_app", *flags)
    response = httpx.get(server.url("/"))
    assert (response.status_code, response.text) == (200, "a WSGI app")
    assert "WSGI, 8 threads" in server.output()
    assert server.stop() == 0


# -- programmatic hooks ----------------------------------------------------------------------


def run_script(tmp_path: Path, source: str) -> ServerProcess:
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(source))
    return ServerProcess([sys.executable, str(script)])


def test_ssl_context_factory(tmp_path, tls_files) -> None:
    key, cert, client_context = tls_files
    server = run_script(
        tmp_path,
        f"""
        import fastserve

        def factory(config, default):
            context = default()
            print("factory made the context", flush=True)
            return context

        fastserve.run(
            "{APPS}:context", port=0, ssl_certfile={cert!r}, ssl_keyfile={key!r},
            ssl_context_factory=factory, app_dir={str(ROOT)!r},
        )
        """,
    )
    try:
        server.wait_ready()
        assert "factory made the context" in server.output()
        assert httpx.get(server.url("/"), verify=client_context).status_code == 200
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_capture_signals_override_is_honoured(tmp_path) -> None:
    """A subclass that handles the stop signals itself (uvicorn >= 0.29's hook) keeps
    them: fastserve's handlers are not installed over its own."""
    server = run_script(
        tmp_path,
        f"""
        import contextlib, signal
        import fastserve

        class Embedded(fastserve.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                def stop(sig, frame):
                    print("the app's own handler", flush=True)
                    self.should_exit = True
                previous = signal.signal(signal.SIGTERM, stop)
                try:
                    yield
                finally:
                    signal.signal(signal.SIGTERM, previous)

        Embedded(fastserve.Config("{APPS}:context", port=0, app_dir={str(ROOT)!r})).run()
        """,
    )
    try:
        server.wait_ready()
        assert server.stop() == 0
        assert "the app's own handler" in server.output()
    finally:
        server.cleanup()


# -- --host :: ----------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "workers"])
def test_host_ipv6_any_is_dual_stack(start, workers) -> None:
    server = start(f"{APPS}:context", *workers, host="::")
    for client_host, seen in (("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")):
        answer = httpx.get(f"http://{client_host}:{server.port}/", timeout=10)
        assert answer.json()["client"] in (seen, f"::ffff:{seen}")
    assert server.stop() == 0


def test_readme_switching_table_names_every_uvicorn_flag() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Switching from uvicorn", 1)[1].split("\n## ", 1)[0]
    flags = [flag for param in UVICORN_OPTIONS for flag in param.opts + param.secondary_opts]
    missing = [flag for flag in [*flags, "--version"] if f"`{flag}" not in section]
    assert not missing, f"README's Switching from uvicorn does not name: {missing}"


# -- detection ----------------------------------------------------------------------------


class AwaitableASGI3:
    def __init__(self, scope, receive, send):  # pragma: no cover - never called
        pass

    def __await__(self):  # pragma: no cover - never called
        yield


class AsyncCallable:
    async def __call__(self, scope, receive, send):  # pragma: no cover - never called
        pass


def returns_the_coroutine(scope, receive, send):  # pragma: no cover - never called
    return asgi_app(scope, receive, send)


async def takes_a_prefix(prefix, scope, receive, send):  # pragma: no cover - never called
    pass


@pytest.mark.parametrize(
    "app, interface",
    [
        (asgi_app, "asgi3"),
        (AsyncCallable(), "asgi3"),
        (AwaitableASGI3, "asgi3"),
        (functools.partial(takes_a_prefix, "/api"), "asgi3"),
        (returns_the_coroutine, "asgi3"),  # uvicorn: asgi2
        (importlib.import_module(APPS).ASGI2Class, "asgi2"),
        (importlib.import_module(APPS).asgi2_function, "asgi2"),
        (importlib.import_module(APPS).wsgi_app, "wsgi"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_interface_detection(app, interface) -> None:
    assert detect(app) == interface


def test_a_factory_given_without_factory_is_called(tmp_path, monkeypatch) -> None:
    """As uvicorn: an app that is a function of no arguments is taken as a factory."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "factory_only_app.py").write_text(
        "async def app(scope, receive, send):\n    pass\n\ndef create_app():\n    return app\n"
    )
    config = Config("factory_only_app:create_app", app_dir=str(tmp_path), http="python")
    config.load()
    assert config.loaded_app.__name__ == "app"
    monkeypatch.delitem(sys.modules, "factory_only_app")


def test_ssl_context_factory_must_return_a_context() -> None:
    config = Config(asgi_app, http="python", ssl_context_factory=lambda config, default: "ctx")
    assert config.is_ssl
    with pytest.raises(ConfigError, match="ssl_context_factory must return an ssl.SSLContext"):
        config.load()


def test_default_ssl_context_needs_a_certificate() -> None:
    config = Config(asgi_app, http="python", ssl_context_factory=lambda config, default: default())
    with pytest.raises(ConfigError, match="the default TLS context needs ssl_certfile"):
        config.load()
