"""Unit tests of `fastserve.Config`: validation, `load()`, `protocol_settings`, and
the command line's defaults (no server, no sockets).

`Config()` configures logging, as it does in a real run; that is harmless here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import socket
import ssl
import sys
import uuid
from pathlib import Path

import click
import pytest
import trustme
from click.testing import CliRunner

import fastserve
import fastserve.cli
import fastserve.config
from fastserve import Config
from fastserve.config import (
    CLI_APP_DIR,
    FORWARDED_ALLOW_IPS,
    PYTHON_ONLY_SETTINGS,
    ConfigError,
    ProtocolSettings,
)
from fastserve.config_file import COMMAND_OPTIONS
from fastserve.logging import LOGGING_CONFIG
from fastserve.protocols.http.proxy import ProxyTrust


async def asgi_app(scope, receive, send):  # pragma: no cover - never called
    pass


class DummyProtocol:
    """A stand-in protocol class (`Config(http=cls)`), so these tests do not depend on
    either real HTTP protocol importing."""


def make(app=asgi_app, **kwargs) -> Config:
    """A Config of the pure HTTP protocol without WebSocket, unless a test says
    otherwise: validation and settings do not depend on those modules."""
    kwargs.setdefault("http", "python")
    kwargs.setdefault("ws", "none")
    return Config(app, **kwargs)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("FORWARDED_ALLOW_IPS", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("FASTSERVE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write importable modules into tmp_path: `modules(source) -> module name`.
    sys.path and sys.modules are restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"fastserve_test_app_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source)
        return name

    yield write
    for name in set(sys.modules) - before:
        if name.startswith("fastserve_test_app_"):
            del sys.modules[name]


# -- validate(): every ConfigError branch -------------------------------------------------


def _kwargs_id(kwargs: dict) -> str:
    return ",".join(f"{name}={value!r}" for name, value in kwargs.items())[:60]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"http": "h2"}, "--http must be one of"),
        ({"http": "hyper"}, "--http must be one of"),
        ({"http": ""}, "--http must be one of"),
        ({"ws": "socketio"}, "--ws must be one of"),
        ({"ws_max_size": 0}, "--ws-max-size must be a positive number"),
        ({"ws_max_queue": -1}, "--ws-max-queue must be a positive number"),
        ({"ws_ping_interval": 0}, "--ws-ping-interval must be greater than 0"),
        ({"ws_ping_timeout": -1.0}, "--ws-ping-timeout must be greater than 0"),
        ({"http2_keep_alive_interval": 0}, "--http2-keep-alive-interval must be greater than 0"),
        ({"http2_keep_alive_timeout": 0}, "--http2-keep-alive-timeout must be greater than 0"),
        ({"http2_keep_alive_timeout": None}, "--http2-keep-alive-timeout must be greater than 0"),
        ({"loop": "trio"}, "--loop must be one of"),
        ({"lifespan": "maybe"}, "--lifespan must be one of"),
        ({"limit_request_head": 0}, "--limit-request-head must be a positive number"),
        ({"limit_request_head": -1}, "--limit-request-head must be a positive number"),
        ({"limit_request_head": None}, "--limit-request-head must be a positive number"),
        ({"limit_request_fields": 0}, "--limit-request-fields must be a positive number"),
        ({"backlog": 0}, "--backlog must be a positive number"),
        ({"backlog": -5}, "--backlog must be a positive number"),
        ({"limit_concurrency": 0}, "--limit-concurrency must be a positive number"),
        ({"limit_concurrency": -1}, "--limit-concurrency must be a positive number"),
        ({"limit_max_requests": 0}, "--limit-max-requests must be a positive number"),
        ({"limit_request_body": 0}, "--limit-request-body must be a positive number"),
        ({"limit_request_body": -1}, "--limit-request-body must be a positive number"),
        ({"timeout_keep_alive": 0}, "--timeout-keep-alive must be greater than 0"),
        ({"timeout_keep_alive": -1.5}, "--timeout-keep-alive must be greater than 0"),
        ({"timeout_request_header": 0}, "--timeout-request-header must be greater than 0"),
        ({"timeout_request": 0}, "--timeout-request must be greater than 0"),
        ({"warn_loop_stall": -1.0}, "--warn-loop-stall must be greater than 0"),
        ({"workers": -1}, "--workers must be a positive number"),
        ({"limit_max_requests_jitter": -1}, "--max-requests-jitter must not be negative"),
        ({"timeout_worker_healthcheck": 0}, "--timeout-worker-healthcheck must be greater than 0"),
        ({"reload_delay": -0.1}, "--reload-delay must not be negative"),
        ({"interface": "asgi4"}, "--interface must be one of"),
        ({"threads": -1}, "--threads must not be negative"),
        (
            {"h11_max_incomplete_event_size": 0},
            "--h11-max-incomplete-event-size must be a positive",
        ),
        ({"timeout_graceful_shutdown": -1}, "--timeout-graceful-shutdown must not be negative"),
        ({"statsd_host": "host:port"}, "--statsd-host 'host:port': expected HOST:PORT"),
        ({"statsd_host": "host:0"}, "--statsd-host 'host:0': the port must be between"),
        ({"statsd_host": "unix:"}, "--statsd-host 'unix:': unix: needs a socket path"),
        ({"reuse_port": True, "uds": "/tmp/fastserve.sock"}, "--reuse-port applies to TCP"),
        ({"reuse_port": True, "fd": 3}, "--reuse-port applies to TCP"),
        ({"ssl_keyfile": "key.pem"}, "--ssl-keyfile needs --ssl-certfile"),
        ({"headers": [("bad name", "v")]}, "--header 'bad name':'v' is not a valid HTTP header"),
        ({"headers": [("", "v")]}, "is not a valid HTTP header"),
        ({"headers": [("x-a", "b"), ("x:y", "v")]}, "is not a valid HTTP header"),
        ({"headers": [("x-split", "a\r\nset-cookie: x=1")]}, "is not a valid HTTP header"),
        ({"headers": [("x-nul", "a\x00")]}, "is not a valid HTTP header"),
        # not latin-1: cannot be sent at all
        ({"headers": [("x-euro", "\u20ac")]}, "is not a valid HTTP header"),
        ({"headers": [("x-\u00e9", "v")]}, "is not a valid HTTP header"),
        # --root-path goes into raw_path as is: a path of visible ASCII, no query
        ({"root_path": "api"}, "--root-path 'api' must be empty or a path starting with \"/\""),
        ({"root_path": "/a b"}, "--root-path '/a b' must be empty"),
        ({"root_path": "/caf\u00e9"}, "must be empty or a path"),
        ({"root_path": "/api?x=1"}, 'without "?" or "#"'),
        ({"root_path": "/api#top"}, 'without "?" or "#"'),
    ],
    ids=lambda value: _kwargs_id(value) if isinstance(value, dict) else "",
)
def test_validate_rejects(kwargs, message):
    with pytest.raises(ConfigError) as info:
        make(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_reuse_port_needs_so_reuseport(monkeypatch):
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    with pytest.raises(ConfigError, match="--reuse-port is not supported on this platform"):
        make(reuse_port=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"workers": 4},
        {"workers": 0},  # 0 / None: one process
        {"reload": True, "workers": 1},
        {"reuse_port": True} if hasattr(socket, "SO_REUSEPORT") else {},
        {"uds": "/tmp/fastserve.sock"},
        {"limit_concurrency": 1, "limit_max_requests": 1, "limit_request_body": 1},
        {"limit_request_line": 0, "limit_request_field_size": 0},
        {"limit_max_requests_jitter": 0, "reload_delay": 0},
        {"headers": [("X-Frame-Options", "DENY"), ("x-empty", ""), ("x-latin", "caf\u00e9")]},
        {"http": "auto"},
        {"http": DummyProtocol},
        {"ws": "auto", "ws_ping_interval": None, "ws_ping_timeout": None},
        {"loop": "asyncio"},
        {"lifespan": "off"},
        # a trailing slash and percent-escapes are taken as uvicorn takes them
        {"root_path": "/api/v1.2/"},
        {"root_path": "/my%20app;x=1"},
        {"timeout_graceful_shutdown": None},  # uvicorn's default: wait forever
        {"statsd_host": "localhost"},
        {"statsd_host": "[::1]:9125"},
        {"statsd_host": "unix:///run/statsd.sock"},
    ],
)
def test_validate_accepts(kwargs):
    make(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "supervised"),
    [
        ({}, False),
        ({"workers": 1}, False),
        ({"workers": 2}, True),
        ({"limit_max_requests": 100}, True),
        ({"max_worker_memory": 500}, True),
        ({"timeout_worker_healthcheck": 10}, True),
    ],
    ids=lambda value: _kwargs_id(value) if isinstance(value, dict) else str(value),
)
def test_settings_that_need_a_supervisor_start_one(kwargs, supervised):
    assert make(**kwargs).supervised is supervised


def test_workers_default_to_one():
    assert make().workers == 1
    assert make(workers=None).workers == 1
    assert make(workers=3).workers == 3


def test_workers_from_web_concurrency(monkeypatch):
    """As uvicorn's Config: WEB_CONCURRENCY when workers is not given; --reload wins
    over either (one warning line, tests/test_reload.py)."""
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert make().workers == 3
    assert make(workers=2).workers == 2
    assert make(reload=True).workers == 1
    assert make(reload=True, workers=4).workers == 1
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY must be a number, not 'many'"):
        make()


def test_http_c_without_the_extension_is_a_config_error(monkeypatch):
    monkeypatch.setattr(fastserve.config, "c_extension_error", lambda: ImportError("not built"))
    with pytest.raises(ConfigError, match="--http c: the C extension is not available"):
        make(http="c")
    assert make(http="auto").http_mode == "python"


def test_ws_auto_picks_an_installed_library():
    # websockets is in the test extra
    assert make(ws="auto").ws_mode in ("websockets", "wsproto")
    assert make(ws="none").ws_mode == "none"


def test_missing_env_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make(env_file=str(tmp_path / "missing.env"))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.json", None, "does not exist"),
        ("bad.json", "{not json", "is not a valid logging config"),
        ("bad.yaml", "version: [", "is not a valid logging config"),
        ("bad.ini", "[loggers]\nkeys=nope\n", "is not a valid logging config"),
    ],
)
def test_bad_log_config_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        make(log_config=str(path))


# -- load(): the app --------------------------------------------------------------------


@pytest.mark.parametrize(
    "app",
    [
        "fastserve_no_such_module_anywhere:app",
        "fastserve_no_such_module_anywhere.sub:app",
        "fastserve:no_such_attribute",
        "fastserve.config:Config.nope",
        "no-colon-at-all",
        ":app",
        "fastserve:",
    ],
)
def test_unimportable_app(app):
    config = make(app, http=DummyProtocol)
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith("Error loading ASGI app")
    assert not config.loaded


def test_app_module_failing_at_import(modules):
    name = modules("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError) as info:
        make(f"{name}:app", http=DummyProtocol).load()
    assert str(info.value).startswith("Error loading ASGI app")
    assert "boom at import" in str(info.value)


def test_app_module_with_a_missing_dependency(modules):
    name = modules("import fastserve_no_such_dependency\napp = None\n")
    with pytest.raises(ConfigError) as info:
        make(f"{name}:app", http=DummyProtocol).load()
    assert str(info.value).startswith("Error loading ASGI app")
    assert "fastserve_no_such_dependency" in str(info.value)


@pytest.mark.parametrize("value", ["42", "'a string'", "None", "[1, 2]"])
def test_non_callable_app(modules, value):
    name = modules(f"app = {value}\n")
    with pytest.raises(ConfigError, match="is not callable"):
        make(f"{name}:app", http=DummyProtocol).load()


def test_non_callable_app_object():
    with pytest.raises(ConfigError, match="is not callable"):
        make(object(), http=DummyProtocol).load()


def test_factory(modules):
    name = modules(
        "async def app(scope, receive, send):\n    pass\n"
        "def create_app():\n    return app\n"
        "def needs_arguments(a, b):\n    return app\n"
        "def returns_nothing():\n    return None\n"
    )
    config = make(f"{name}:create_app", factory=True, http=DummyProtocol)
    config.load()
    assert config.loaded_app is sys.modules[name].app
    with pytest.raises(ConfigError, match="Error loading ASGI app factory"):
        make(f"{name}:needs_arguments", factory=True, http=DummyProtocol).load()
    with pytest.raises(ConfigError, match="is not callable"):
        make(f"{name}:returns_nothing", factory=True, http=DummyProtocol).load()


def test_app_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"fastserve_test_app_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("async def app(scope, receive, send):\n    pass\n")
    try:
        with pytest.raises(ConfigError, match="Error loading ASGI app"):
            make(f"{name}:app", http=DummyProtocol).load()
        config = make(f"{name}:app", http=DummyProtocol, app_dir=str(tmp_path))
        config.load()
        assert config.loaded_app is sys.modules[name].app
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "http, module, cls",
    [
        ("python", "fastserve.protocols.http.h11_impl", "H11Protocol"),
        ("c", "fastserve._parser", "HttpProtocol"),
    ],
)
def test_load_picks_the_protocol_class(http, module, cls):
    if http == "c" and fastserve.config.c_extension_error() is not None:
        pytest.skip("the C extension is not built")
    config = make(http=http)
    config.load()
    assert config.http_mode == http
    assert config.http_protocol_class is getattr(sys.modules[module], cls)
    assert config.lifespan_class.__name__ == "LifespanOn"


def test_load_with_a_protocol_class():
    config = make(http=DummyProtocol, lifespan="off")
    config.load()
    assert config.http_protocol_class is DummyProtocol
    assert config.lifespan_class.__name__ == "LifespanOff"
    assert config.ssl is None
    assert config.loaded


# -- load(): TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    other = ca.issue_cert("other.example")
    files = {
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
        "combined": directory / "combined.pem",
        "other_key": directory / "other_key.pem",
        "garbage": directory / "garbage.pem",
        "ca": directory / "ca.pem",
    }
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["combined"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize(
    "certfile, keyfile, extra",
    [
        ("missing", None, {}),
        ("missing", "key", {}),
        ("garbage", None, {}),
        ("cert", None, {}),  # no key in the file, none given
        ("cert", "other_key", {}),  # a key that does not match
        ("cert", "garbage", {}),
        ("cert", "key", {"ssl_ciphers": "NO-SUCH-CIPHER"}),
        ("cert", "key", {"ssl_ca_certs": "missing"}),
    ],
)
def test_bad_tls_certificate(tls_files, tmp_path, certfile, keyfile, extra):
    files = dict(tls_files, missing=str(tmp_path / "missing.pem"))
    extra = {name: files.get(value, value) for name, value in extra.items()}
    config = make(
        http=DummyProtocol,
        ssl_certfile=files[certfile],
        ssl_keyfile=files[keyfile] if keyfile else None,
        **extra,
    )
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith("Cannot load the TLS certificate or key")
    assert not config.loaded


@pytest.mark.parametrize(
    "certfile, keyfile, extra",
    [
        ("cert", "key", {}),
        ("combined", None, {}),
        ("cert", "key", {"ssl_ca_certs": "ca", "ssl_cert_reqs": int(ssl.CERT_REQUIRED)}),
        ("cert", "key", {"ssl_ciphers": "ECDHE+AESGCM"}),
    ],
)
def test_tls_certificate(tls_files, certfile, keyfile, extra):
    extra = {name: tls_files.get(value, value) for name, value in extra.items()}
    config = make(
        http=DummyProtocol,
        ssl_certfile=tls_files[certfile],
        ssl_keyfile=tls_files[keyfile] if keyfile else None,
        **extra,
    )
    assert config.is_ssl
    config.load()
    assert isinstance(config.ssl, ssl.SSLContext)
    assert config.ssl.verify_mode == ssl.VerifyMode(extra.get("ssl_cert_reqs", ssl.CERT_NONE))


def test_ssl_ciphers_default_is_openssls(tls_files):
    assert inspect.signature(Config).parameters["ssl_ciphers"].default is None
    config = make(http=DummyProtocol, ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"])
    assert config.ssl_ciphers is None
    config.load()
    default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert [c["name"] for c in config.ssl.get_ciphers()] == [
        c["name"] for c in default.get_ciphers()
    ]


# -- load(): protocol_settings -------------------------------------------------------------


def test_protocol_settings_hold_the_values_given():
    config = make(
        http=DummyProtocol,
        root_path="/api",
        proxy_headers=False,
        forwarded_allow_ips="10.0.0.0/8, 192.168.1.1",
        access_log=False,
        limit_concurrency=7,
        limit_request_head=12345,
        limit_request_line=2048,
        limit_request_fields=33,
        limit_request_field_size=999,
        limit_request_body=1_000_000,
        timeout_keep_alive=2.5,
        timeout_request_header=7.0,
        ws_max_size=4096,
        ws_max_queue=3,
        ws_ping_interval=None,
        ws_ping_timeout=1.5,
        ws_per_message_deflate=False,
    )
    config.load()
    settings = config.protocol_settings
    assert isinstance(settings, ProtocolSettings)
    assert dataclasses.is_dataclass(settings)
    assert settings.app is asgi_app is config.loaded_app
    assert settings.root_path == "/api"
    assert settings.proxy_headers is False
    assert settings.access_log is False
    assert settings.limit_concurrency == 7
    assert settings.limit_request_head == 12345
    assert settings.limit_request_line == 2048
    assert settings.limit_request_fields == 33
    assert settings.limit_request_field_size == 999
    assert settings.limit_request_body == 1_000_000
    assert settings.timeout_keep_alive == 2.5
    assert settings.timeout_request_header == 7.0
    assert settings.ws_protocol_class is None  # ws="none"
    assert settings.ws_max_size == 4096
    assert settings.ws_max_queue == 3
    assert settings.ws_ping_interval is None
    assert settings.ws_ping_timeout == 1.5
    assert settings.ws_per_message_deflate is False
    assert isinstance(settings.proxy_trust, ProxyTrust)
    assert settings.proxy_trust.is_trusted("10.20.30.40")
    assert settings.proxy_trust.is_trusted("192.168.1.1")
    assert not settings.proxy_trust.is_trusted("127.0.0.1")


def test_protocol_settings_defaults():
    config = make(http=DummyProtocol)
    config.load()
    settings = config.protocol_settings
    signature = inspect.signature(Config).parameters
    compared = 0
    for field in dataclasses.fields(ProtocolSettings):
        if field.name != "app" and field.name in signature:  # not proxy_trust, ws_protocol_class
            assert getattr(settings, field.name) == signature[field.name].default, field.name
            compared += 1
    assert compared >= 10
    assert settings.proxy_trust.is_trusted("127.0.0.1")
    assert settings.proxy_trust.is_trusted("::1")
    assert not settings.proxy_trust.is_trusted("10.0.0.1")


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(ProtocolSettings)])
def test_protocol_settings_are_frozen(field):
    config = make(http=DummyProtocol)
    config.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config.protocol_settings, field, None)


# The C protocol's copy of ProtocolSettings: `_c_settings` in the extension's source.
PARSER_SOURCE = Path(__file__).parents[1] / "src" / "fastserve" / "_parser.pyx"
PROTOCOL_SETTINGS_FIELDS = [field.name for field in dataclasses.fields(ProtocolSettings)]


def c_settings_source() -> str:
    """The source of `_c_settings`, up to the first blank line after its start."""
    text = PARSER_SOURCE.read_text()
    start = text.index("cdef _Settings _c_settings(")
    return text[start : text.index("\n\n", start)]


@pytest.mark.parametrize("field", PROTOCOL_SETTINGS_FIELDS)
def test_each_protocol_setting_is_copied_to_c_or_marked_python_only(field):
    """A new ProtocolSettings field is either read by `_c_settings` (so that the C
    mode's hot path reads a C field) or in PYTHON_ONLY_SETTINGS, never both."""
    copied = re.search(rf"\bsettings\.{field}\b", c_settings_source()) is not None
    assert copied != (field in PYTHON_ONLY_SETTINGS), field


def test_python_only_settings_are_protocol_settings():
    assert PYTHON_ONLY_SETTINGS <= set(PROTOCOL_SETTINGS_FIELDS)


def test_load_twice_is_refused():
    config = make(http=DummyProtocol)
    config.load()
    with pytest.raises(AssertionError):
        config.load()


# -- forwarded_allow_ips -----------------------------------------------------------------------


def test_forwarded_allow_ips_default():
    assert FORWARDED_ALLOW_IPS == "127.0.0.1,::1"
    assert make().forwarded_allow_ips == "127.0.0.1,::1"


def test_forwarded_allow_ips_from_the_environment(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.2.3,*")
    config = make(http=DummyProtocol)
    assert config.forwarded_allow_ips == "10.1.2.3,*"
    config.load()
    assert config.protocol_settings.proxy_trust.is_trusted("8.8.8.8")


def test_forwarded_allow_ips_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    config = make(http=DummyProtocol, forwarded_allow_ips=["10.0.0.1"])
    config.load()
    assert config.protocol_settings.proxy_trust.is_trusted("10.0.0.1")
    assert not config.protocol_settings.proxy_trust.is_trusted("8.8.8.8")


@pytest.mark.parametrize("style", ["x-forwarded", "forwarded"])
def test_proxy_headers_style_reaches_the_protocol_settings(style):
    config = make(http=DummyProtocol, proxy_headers_style=style)
    config.load()
    assert config.protocol_settings.proxy_trust.style == style


def test_proxy_headers_style_must_be_known():
    with pytest.raises(
        ConfigError, match="--proxy-headers-style must be one of x-forwarded, forwarded"
    ):
        make(proxy_headers_style="both")


# -- the command line's defaults are Config's ------------------------------------------------


# Every setting the command line takes; --config and --print-config are about the
# command itself, not Config.
CLI_OPTIONS = [
    param
    for param in fastserve.cli.cli.params
    if isinstance(param, click.Option) and param.expose_value and param.name not in COMMAND_OPTIONS
]
SIGNATURE = inspect.signature(Config).parameters


def test_defaults_table_is_configs_signature():
    for name, parameter in SIGNATURE.items():
        if name == "app_dir":
            assert parameter.default is None
            assert fastserve.cli.DEFAULTS[name] == CLI_APP_DIR == "."
        else:
            assert fastserve.cli.DEFAULTS[name] == parameter.default, name


@pytest.mark.parametrize("param", CLI_OPTIONS, ids=lambda param: param.name)
def test_cli_option_default_is_configs(param):
    assert param.name in SIGNATURE, f"--{param.name} is no Config parameter"
    if param.multiple:
        return  # an empty tuple from click; checked resolved in the test below
    if param.name == "log_config":
        # None on the command line stands for Config's LOGGING_CONFIG (see cli()).
        assert param.default is None and SIGNATURE[param.name].default is LOGGING_CONFIG
        return
    assert param.default == fastserve.cli.DEFAULTS[param.name]


def test_cli_passes_configs_defaults(monkeypatch):
    """`fastserve APP` with no options builds the same Config as `Config(APP)` (with
    the command line's app_dir)."""
    seen = {}

    def fake_config(app, **kwargs):
        seen.update(kwargs, app=app)
        raise ConfigError("stop here")

    monkeypatch.setattr(fastserve.cli, "Config", fake_config)
    monkeypatch.setattr(fastserve.cli, "run_config", lambda config: None)
    result = CliRunner().invoke(fastserve.cli.cli, ["tests.apps:app"], env={})
    assert "stop here" in result.output
    assert seen.pop("app") == "tests.apps:app"
    assert seen.pop("log_config") is LOGGING_CONFIG
    assert seen.pop("app_dir") == CLI_APP_DIR
    for name, value in seen.items():
        default = SIGNATURE[name].default
        if name in ("reload_dirs", "reload_includes", "reload_excludes", "headers", "bind", "env"):
            assert list(value or []) == list(default or []), name
        else:
            assert value == default, name
            assert type(value) is type(default), name


def test_uvicorns_logging_config_dict_configures_fastserves_loggers():
    """`Config(log_config=uvicorn.config.LOGGING_CONFIG)`, as a uvicorn.run() caller
    passes it: fastserve's loggers get uvicorn's handlers and formatters."""
    uvicorn_config = pytest.importorskip("uvicorn.config")
    import logging

    Config("tests.apps:app", log_config=uvicorn_config.LOGGING_CONFIG)
    try:
        [handler] = logging.getLogger("fastserve.access").handlers
        assert type(handler.formatter).__module__ == "uvicorn.logging"
        assert logging.getLogger("uvicorn.access") is logging.getLogger("fastserve.access")
        both = {"version": 1, "loggers": {"uvicorn.error": {}, "fastserve.error": {}}}
        with pytest.raises(ConfigError, match="'fastserve.error' are one logger here"):
            Config("tests.apps:app", log_config=both)
    finally:
        Config("tests.apps:app")  # the built-in set-up again, for the tests after this one
