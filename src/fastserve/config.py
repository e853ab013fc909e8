"""Config: every setting, its default, its validation, and app loading.

Names follow uvicorn's where the concept is the same, so `uvicorn.Config(...)` becomes
`fastserve.Config(...)`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import inspect
import json
import logging
import logging.config
import os
import socket
import ssl
import stat
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Union

from fastserve import interface as app_interface
from fastserve.hooks import ServerHooks
from fastserve.importer import ImportFromStringError, import_from_string
from fastserve.logging import (
    LOG_FORMATS,
    LOG_LEVELS,
    LOGGING_CONFIG,
    TRACE_LOG_LEVEL,
    AccessLogFormat,
    JsonFormatter,
    alias_uvicorn_loggers,
    as_fastserve_config,
    as_fastserve_ini,
    configure_access_log,
    log_to_file,
    shapes_access_lines,
)
from fastserve.metrics import prometheus_missing
from fastserve.process import (
    Listener,
    OptionError,
    parse_bind,
    parse_umask,
    primary_group,
    resolve_group,
    resolve_user,
)
from fastserve.protocols.http.headers import is_field_value, is_token
from fastserve.protocols.http.proxy import PROXY_HEADERS_STYLES, ProxyTrust
from fastserve.protocols.http.target import root_path_error
from fastserve.protocols.http2.limits import FRAME_SIZE_MAX, FRAME_SIZE_MIN, WINDOW_SIZE_MAX
from fastserve.protocols.http2.negotiation import (
    ALPN_H2,
    http2_protocol_class,
    nghttp2_protocol_class,
)
from fastserve.protocols.tls import read_server_cert
from fastserve.protocols.wsgi.runner import WSGIApp
from fastserve.statsd import parse_statsd_address

logger = logging.getLogger("fastserve.error")

# The protocol and lifespan classes, by the name a setting gives them. `--http auto`
# is "c" when the extension imports, else "python".
HTTP_PROTOCOLS = {
    "c": "fastserve._parser:HttpProtocol",
    "python": "fastserve.protocols.http.h11_impl:H11Protocol",
}
LIFESPAN = {
    "auto": "fastserve.lifespan:LifespanOn",
    "on": "fastserve.lifespan:LifespanOn",
    "off": "fastserve.lifespan:LifespanOff",
}
# WebSocket protocols by the framing library they use; `--ws auto` is the first
# whose library imports, `none` serves upgrade requests as plain HTTP.
WS_PROTOCOLS = {
    "websockets": "fastserve.protocols.websockets.websockets_impl:WebSocketsProtocol",
    "wsproto": "fastserve.protocols.websockets.wsproto_impl:WSProtoProtocol",
}
WS_LIBRARIES = {"websockets": "websockets", "wsproto": "wsproto"}
# HTTP/2 (--http2): the protocol is the HTTP mode's (negotiation.http2_protocol_class);
# the pure one, over `h2` (the one that needs this package), is also the C mode's
# fallback.
HTTP2_LIBRARY = "h2"
HTTP_MODES = ("auto", *HTTP_PROTOCOLS)
WS_MODES = ("auto", *WS_PROTOCOLS, "none")
LOOP_MODES = ("auto", "asyncio", "uvloop")
# uvicorn's values for the same settings (README "Switching from uvicorn"): its HTTP
# implementations run the mode with the same parser (httptools wraps llhttp, as the C
# mode does; zttp is a C parser too), its sans-I/O `websockets` is fastserve's.
HTTP_ALIASES = {"h11": "python", "httptools": "c", "zttp": "c"}
WS_ALIASES = {"websockets-sansio": "websockets"}
HTTP_CHOICES = (*HTTP_MODES, *HTTP_ALIASES)
WS_CHOICES = (*WS_MODES, *WS_ALIASES)
# Event loops by the module whose new_event_loop makes them; `none` (uvicorn's) and
# `asyncio` are asyncio's, by its event loop policy. Any other value is the import
# string of a loop factory ("module:function"), as uvicorn takes it.
LOOP_MODULES = {"uvloop": "uvloop", "zuvloop": "zuvloop"}
LOOP_CHOICES = (*LOOP_MODES, "none", "zuvloop")
INTERFACES = app_interface.INTERFACES
PROXY_PROTOCOL_MODES = ("off", "v1", "v2", "auto")
LIFESPAN_MODES = tuple(LIFESPAN)
SSL_PROTOCOL_VERSION = ssl.PROTOCOL_TLS_SERVER
ALPN_HTTP1 = "http/1.1"
# What `fastserve` with no APP serves.
DEMO_APP = "fastserve.demo:app"
# Peers trusted for proxy headers unless --forwarded-allow-ips (or its
# environment variable) says otherwise: this machine, over IPv4 and IPv6.
FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
# The command line puts the current directory first on sys.path to find APP;
# `Config(app_dir=None)` leaves sys.path alone.
CLI_APP_DIR = "."

# The record's message alone: a custom access format is the whole line.
ACCESS_LINE_ONLY = "%(message)s"
# Highest TCP port number.
MAX_PORT = 65535
# A process's memory in pages (its second field is the resident set), for --max-worker-memory.
PROC_STATM = "/proc/{pid}/statm"

# A unix socket any local user may connect to, without --umask (as Uvicorn's).
UNIX_SOCKET_MODE = 0o666
# Seconds without a heartbeat before a supervised worker is replaced, when
# --timeout-worker-healthcheck is not given (it is Gunicorn's --timeout default).
WORKER_HEALTHCHECK_TIMEOUT = 30.0

# Exit code when the app fails to start (lifespan startup failed), as uvicorn.
STARTUP_FAILURE = 3


class ConfigError(Exception):
    """A setting or the app cannot be used; the message is one line for the user.
    `exc_info`: the exception the app's own code raised while it was imported, whose
    traceback goes under that line (logger.error(..., exc_info=exc.exc_info))."""

    exc_info: Optional[BaseException] = None


def create_ssl_context(
    certfile: str,
    keyfile: Optional[str],
    password: Optional[str],
    ssl_version: int,
    cert_reqs: int,
    ca_certs: Optional[str],
    ciphers: Optional[str],
    http2: bool = False,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl_version)
    ctx.load_cert_chain(certfile, keyfile, password or None)
    ctx.verify_mode = ssl.VerifyMode(cert_reqs)
    if ca_certs:
        ctx.load_verify_locations(ca_certs)
    if ciphers:
        ctx.set_ciphers(ciphers)
    # the protocols served, preferred first: without --http2 a client offering h2 as
    # well is told to speak HTTP/1.1
    ctx.set_alpn_protocols([ALPN_H2, ALPN_HTTP1] if http2 else [ALPN_HTTP1])
    return ctx


def load_env_file(path: str) -> None:
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise ConfigError(
            "--env-file needs python-dotenv: pip install 'fastserve[standard]'"
        ) from None
    if not os.path.isfile(path):
        raise ConfigError(f"Env file {path!r} does not exist.")
    load_dotenv(dotenv_path=path)


def set_environment(items: list) -> None:
    """--env KEY=VALUE (Gunicorn's raw_env): into this process's environment, which the
    workers inherit, before the app is imported."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--env {item!r} is not KEY=VALUE")
        os.environ[key.strip()] = value


def c_extension_error() -> Optional[ImportError]:
    """Why the C extension does not import, or None when it does."""
    try:
        import fastserve._parser  # noqa: F401
    except ImportError as exc:
        return exc
    return None


def resolve_http_mode(http: str) -> str:
    """The HTTP mode a `--http` value runs: "c" or "python" (auto: c when built;
    uvicorn's names as HTTP_ALIASES says)."""
    http = HTTP_ALIASES.get(http, http)
    if http == "auto":
        return "python" if c_extension_error() else "c"
    if http == "c":
        error = c_extension_error()
        if error is not None:
            raise ConfigError(
                f"--http c: the C extension is not available ({error}); "
                "reinstall fastserve with a C compiler, or use --http python"
            )
    return http


def resolve_ws_mode(ws: str) -> str:
    """The WebSocket protocol a `--ws` value runs, or "none" (auto: the first
    library installed; uvicorn's names as WS_ALIASES says)."""
    ws = WS_ALIASES.get(ws, ws)
    candidates = list(WS_PROTOCOLS) if ws == "auto" else [ws]
    for name in candidates:
        if name == "none":
            return name
        try:
            importlib.import_module(WS_LIBRARIES[name])
        except ImportError:
            if ws != "auto":
                raise ConfigError(
                    f"--ws {ws}: the {WS_LIBRARIES[name]!r} package is not installed "
                    f"(pip install {WS_LIBRARIES[name]}), or use --ws auto"
                ) from None
        else:
            return name
    return "none"


@dataclass(frozen=True)
class ProtocolSettings:
    """What every connection reads, built once by `Config.load()`: typed, final,
    and the same object for every protocol (HTTP in both modes, WebSocket)."""

    app: Any
    root_path: str
    proxy_headers: bool
    proxy_trust: ProxyTrust
    access_log: bool
    limit_concurrency: Optional[int]
    limit_request_head: int
    limit_request_line: int  # 0: only the head limit
    limit_request_fields: int
    limit_request_field_size: int  # 0: only the head limit
    limit_request_body: Optional[int]
    timeout_keep_alive: float
    timeout_request_header: float
    timeout_request: Optional[float]  # None: no limit
    ws_protocol_class: Optional[type]  # None: upgrade requests are plain HTTP
    h2_protocol_class: Optional[type]  # None: --no-http2 (the preface is refused)
    h2_max_concurrent_streams: int  # HTTP/2's SETTINGS, advertised by each connection
    h2_max_inbound_frame_size: int
    h2_initial_window_size: int
    wsgi: bool  # the app is WSGI: the protocols build each request's environ head
    ws_max_size: int
    ws_max_queue: int
    ws_ping_interval: Optional[float]  # None: no pings
    ws_ping_timeout: Optional[float]  # None: no timeout
    ws_per_message_deflate: bool
    tls_server_cert: Optional[str]  # PEM of --ssl-certfile's certificate; None without TLS
    reset_contextvars: bool  # app calls run in a fresh context, not a copy of the server's
    http2_keep_alive_interval: Optional[float]  # None: no keep-alive PINGs
    http2_keep_alive_timeout: float


# The ProtocolSettings fields that the C protocol's `_Settings` (`_c_settings` in
# _parser.pyx) does not copy: none is read per request on the hot path, so the C
# mode reads them, when it needs them, from the Python object (`settings.source`).
# Every other field is copied; tests/test_config.py checks that each is one or the other.
PYTHON_ONLY_SETTINGS = frozenset(
    {
        # read once per connection (connection_made), from `settings.source`
        "tls_server_cert",
        "reset_contextvars",
        # the WebSocket protocols are Python classes, handed `settings.source` on upgrade
        "ws_max_size",
        "ws_max_queue",
        "ws_ping_interval",
        "ws_ping_timeout",
        "ws_per_message_deflate",
        # read once by a connection that turns out to be HTTP/2 (the preface's hand-over),
        # and by the HTTP/2 connections, Python classes handed `settings.source`
        "h2_protocol_class",
        # read once by an HTTP/2 connection (its SETTINGS)
        "h2_max_concurrent_streams",
        "h2_max_inbound_frame_size",
        "h2_initial_window_size",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
    }
)


def _as_list(value: Union[list, tuple, str, None]) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _workers(workers: Optional[int]) -> tuple[int, str]:
    """The number of worker processes, and what set it: the argument, else
    $WEB_CONCURRENCY (as uvicorn's Config reads it), else 1."""
    if workers is not None:
        return workers or 1, f"--workers {workers}"
    value = os.environ.get("WEB_CONCURRENCY", "")
    if not value:
        return 1, "the default"
    try:
        return int(value), f"WEB_CONCURRENCY={value}"
    except ValueError:
        raise ConfigError(f"WEB_CONCURRENCY must be a number, not {value!r}") from None


@dataclass(frozen=True)
class NumberRule:
    """What the numeric settings `settings` must be: above 0 (or at least 0 when
    `zero_allowed`), or None when `optional` (None is then no limit, or off);
    `wording` ends the error line."""

    settings: tuple[str, ...]
    optional: bool
    zero_allowed: bool
    wording: str


# Counts and sizes are "positive numbers", seconds "greater than 0".
NUMBER_RULES = (
    NumberRule(
        ("limit_request_head", "limit_request_fields", "backlog", "ws_max_size", "ws_max_queue")
        + ("workers", "h2_max_concurrent_streams", "h2_initial_window_size"),
        optional=False,
        zero_allowed=False,
        wording="must be a positive number",
    ),
    NumberRule(
        ("limit_concurrency", "limit_max_requests", "limit_request_body", "max_worker_memory"),
        optional=True,
        zero_allowed=False,
        wording="must be a positive number",
    ),
    NumberRule(
        ("timeout_keep_alive", "timeout_request_header", "http2_keep_alive_timeout"),
        optional=False,
        zero_allowed=False,
        wording="must be greater than 0",
    ),
    NumberRule(
        ("ws_ping_interval", "ws_ping_timeout", "timeout_request", "warn_loop_stall")
        + ("timeout_worker_healthcheck", "http2_keep_alive_interval"),
        optional=True,
        zero_allowed=False,
        wording="must be greater than 0",
    ),
    NumberRule(
        ("limit_max_requests_jitter", "reload_delay", "threads"),  # threads 0: on the loop
        optional=False,
        zero_allowed=True,
        wording="must not be negative",
    ),
    NumberRule(
        ("timeout_graceful_shutdown",),
        optional=True,
        zero_allowed=True,
        wording="must not be negative",
    ),
)
# A setting whose option in error lines is not `--` + its name with dashes.
OPTION_NAMES = {"limit_max_requests_jitter": "--max-requests-jitter"}


def is_valid_header(name: str, value: str) -> bool:
    """Whether --header NAME:VALUE is a header that may go on the wire."""
    try:
        return is_token(name.encode("latin-1")) and is_field_value(value.encode("latin-1"))
    except UnicodeEncodeError:
        return False  # a header is latin-1 bytes on the wire


class Config:
    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        uds: Optional[str] = None,
        fd: Optional[int] = None,
        loop: str = "auto",
        http: Union[str, type] = "auto",
        lifespan: str = "auto",
        env_file: Optional[str] = None,
        log_config: Union[dict, str, None] = LOGGING_CONFIG,
        log_level: Union[str, int, None] = None,
        access_log: bool = True,
        use_colors: Optional[bool] = None,
        access_log_format: Optional[str] = None,
        log_format: str = "text",
        access_logfile: Optional[str] = None,
        error_logfile: Optional[str] = None,
        workers: Optional[int] = None,
        preload: bool = False,
        reload: bool = False,
        reload_dirs: Union[list, str, None] = None,
        reload_includes: Union[list, str, None] = None,
        reload_excludes: Union[list, str, None] = None,
        reload_delay: float = 0.25,
        reuse_port: bool = False,
        timeout_worker_healthcheck: Optional[float] = None,
        metrics_port: Optional[int] = None,
        metrics_host: str = "127.0.0.1",
        statsd_host: Optional[str] = None,
        statsd_prefix: str = "",
        dogstatsd_tags: str = "",
        max_worker_memory: Optional[int] = None,
        proxy_headers: bool = True,
        server_header: bool = True,
        date_header: bool = True,
        forwarded_allow_ips: Union[list, str, None] = None,
        proxy_headers_style: str = "x-forwarded",
        proxy_protocol: str = "off",
        root_path: str = "",
        limit_concurrency: Optional[int] = None,
        limit_max_requests: Optional[int] = None,
        limit_max_requests_jitter: int = 0,
        limit_request_head: int = 65536,
        limit_request_line: int = 0,
        limit_request_fields: int = 100,
        limit_request_field_size: int = 0,
        limit_request_body: Optional[int] = None,
        backlog: int = 2048,
        timeout_keep_alive: float = 5.0,
        timeout_request_header: float = 30.0,
        timeout_request: Optional[float] = None,
        warn_loop_stall: Optional[float] = None,
        ws: str = "auto",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_max_queue: int = 32,
        ws_ping_interval: Optional[float] = 20.0,
        ws_ping_timeout: Optional[float] = 20.0,
        ws_per_message_deflate: bool = True,
        timeout_graceful_shutdown: Optional[float] = 30.0,
        timeout_notify: float = 30,
        callback_notify: Optional[Callable[..., Any]] = None,
        ssl_keyfile: Optional[str] = None,
        ssl_certfile: Optional[str] = None,
        ssl_keyfile_password: Optional[str] = None,
        ssl_version: int = int(SSL_PROTOCOL_VERSION),
        ssl_cert_reqs: int = int(ssl.CERT_NONE),
        ssl_ca_certs: Optional[str] = None,
        ssl_ciphers: Optional[str] = None,
        headers: Optional[list] = None,
        factory: bool = False,
        app_dir: Optional[str] = None,
        # uvicorn's settings under uvicorn's names (README "Switching from uvicorn")
        interface: str = "auto",
        http2: bool = False,
        # HTTP/2's advertised limits, under hypercorn's names (README "HTTP/2")
        h2_max_concurrent_streams: int = 100,
        h2_max_inbound_frame_size: int = 16384,
        h2_initial_window_size: int = 1 << 20,
        ssl_context_factory: Optional[Callable[..., ssl.SSLContext]] = None,
        h11_max_incomplete_event_size: Optional[int] = None,
        reset_contextvars: bool = False,
        # Gunicorn's process options (after Uvicorn's, which callers may pass by position)
        bind: Union[list, str, None] = None,
        user: Union[str, int, None] = None,
        group: Union[str, int, None] = None,
        umask: Union[int, str, None] = None,
        chdir: Optional[str] = None,
        pidfile: Optional[str] = None,
        hooks: Optional[ServerHooks] = None,
        env: Union[list, str, None] = None,
        # Gunicorn's worker options
        threads: int = 8,
        # HTTP/2's keep-alive PINGs (granian's names; seconds)
        http2_keep_alive_interval: Optional[float] = None,
        http2_keep_alive_timeout: float = 20.0,
    ) -> None:
        # every setting is kept under its argument's name, as uvicorn's Config keeps
        # them (callers read them there); the lines below put some in working form
        vars(self).update((k, v) for k, v in locals().items() if k not in ("self", "env_file"))
        self.bind = _as_list(bind)
        self.env = _as_list(env)
        self.reload_dirs = _as_list(reload_dirs)
        self.reload_includes = _as_list(reload_includes)
        self.reload_excludes = _as_list(reload_excludes)
        self.hooks = hooks if hooks is not None else ServerHooks()
        self.workers, self.workers_origin = _workers(workers)
        self.headers: list[tuple[str, str]] = [tuple(h) for h in headers or []]
        if h11_max_incomplete_event_size is not None:
            # h11 buffers at most this much of an incomplete head: the head limit
            self.limit_request_head = h11_max_incomplete_event_size
        if forwarded_allow_ips is None:
            self.forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS)
        self.loaded = False
        ignored_workers = self.one_worker_with_reload()
        self.validate_process_options()
        self.validate()
        self.http_mode = resolve_http_mode(http) if isinstance(http, str) else http.__name__
        self.ws_mode = resolve_ws_mode(ws)
        set_environment(self.env)
        if env_file is not None:
            load_env_file(env_file)  # what --env set wins (python-dotenv does not override)
        self.configure_logging()
        self.log_uvicorn_mappings(ignored_workers)

    def one_worker_with_reload(self) -> Optional[str]:
        """uvicorn's rule: --reload wins over --workers (or WEB_CONCURRENCY). What set
        the number ignored (said once, by log_uvicorn_mappings), or None."""
        if not (self.reload and self.workers > 1):
            return None
        self.workers = 1
        return self.workers_origin

    def log_uvicorn_mappings(self, ignored_workers: Optional[str]) -> None:
        """One line for each uvicorn value that fastserve runs differently."""
        if ignored_workers is not None:
            logger.warning(
                "%s is ignored with --reload: one server process, restarted on changes",
                ignored_workers,
            )
        if isinstance(self.http, str) and self.http in ("httptools", "zttp"):
            logger.info("--http %s: served by fastserve's C mode (llhttp), HTTP/1.1", self.http)
        self.change_directory()

    def change_directory(self) -> None:
        """--chdir, once the files the command line checked (--env-file, --log-config)
        were read where it checked them: the app, --uds and --bind paths, TLS files and
        --pid are then relative to the new directory, as under Gunicorn."""
        if self.chdir is None:
            return
        try:
            os.chdir(self.chdir)
        except OSError as exc:
            raise ConfigError(f"--chdir {self.chdir!r}: {exc.strerror}") from None

    def validate_process_options(self) -> None:
        """Gunicorn's process options (fastserve/process.py)."""
        try:
            self.listeners: list[Listener] = [parse_bind(value) for value in self.bind]
            self.uid = resolve_user(self.user)
            self.gid = resolve_group(self.group)
            if self.uid is not None and self.gid is None:
                self.gid = primary_group(self.uid)
            if self.umask is not None:
                self.umask = parse_umask(self.umask)
        except OptionError as exc:
            raise ConfigError(str(exc)) from None
        defaults = inspect.signature(Config).parameters
        moved = (self.host, self.port) != (defaults["host"].default, defaults["port"].default)
        mixed = self.uds or self.fd is not None or moved
        if self.bind and mixed:
            raise ConfigError(
                "--bind replaces --host/--port/--uds/--fd: give every address with --bind"
            )
        if self.bind and self.reuse_port:
            raise ConfigError("--reuse-port takes --host/--port, not --bind")

    @property
    def binds_early(self) -> bool:
        """A server on its own binds before importing the app (as Gunicorn's master
        does) with --bind, and when it must drop privileges or write a pid file then."""
        return bool(self.bind) or self.uid is not None or self.gid is not None or bool(self.pidfile)

    def validate(self) -> None:
        """Every setting's check, by topic; raises ConfigError with the first failure."""
        self.validate_modes()
        self.validate_uvicorn_settings()
        self.validate_logging()
        self.validate_numbers()
        self.validate_sockets()
        self.validate_metrics()
        self.validate_http()

    def validate_modes(self) -> None:
        """The implementation choices: --http, --ws, --loop, --lifespan."""
        if isinstance(self.http, str) and self.http not in HTTP_CHOICES:
            raise ConfigError(f"--http must be one of {', '.join(HTTP_CHOICES)}, not {self.http!r}")
        if self.ws not in WS_CHOICES:
            raise ConfigError(f"--ws must be one of {', '.join(WS_CHOICES)}, not {self.ws!r}")
        if self.loop not in LOOP_CHOICES and ":" not in self.loop:
            raise ConfigError(
                f"--loop must be one of {', '.join(LOOP_CHOICES)}, or a loop factory as "
                f'"module:function", not {self.loop!r}'
            )
        if self.lifespan not in LIFESPAN_MODES:
            raise ConfigError(
                f"--lifespan must be one of {', '.join(LIFESPAN_MODES)}, not {self.lifespan!r}"
            )

    def validate_logging(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )
        if self.access_log_format is not None:
            try:
                AccessLogFormat(self.access_log_format)
            except ValueError as exc:
                raise ConfigError(
                    f"--access-log-format {self.access_log_format!r} is not a valid format: {exc}"
                ) from None

    def validate_numbers(self) -> None:
        """The limits, sizes, counts and seconds, each by its rule in NUMBER_RULES."""
        for rule in NUMBER_RULES:
            for name in rule.settings:
                value = getattr(self, name)
                if value is None and rule.optional:
                    continue
                if value is None or value < 0 or (value == 0 and not rule.zero_allowed):
                    option = OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
                    raise ConfigError(f"{option} {rule.wording}")

    def validate_sockets(self) -> None:
        if self.reuse_port and (self.uds or self.fd is not None):
            raise ConfigError("--reuse-port applies to TCP sockets only, not --uds or --fd")
        if self.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("--reuse-port is not supported on this platform")

    def validate_metrics(self) -> None:
        """--metrics-port, --statsd-host, and --max-worker-memory's source of numbers."""
        if self.metrics_port is not None:
            if not 0 <= self.metrics_port <= MAX_PORT:
                raise ConfigError(f"--metrics-port must be between 0 and {MAX_PORT}")
            missing = prometheus_missing()
            if missing:
                raise ConfigError(missing)
        if self.max_worker_memory is not None and not os.path.exists(PROC_STATM.format(pid="self")):
            raise ConfigError(f"--max-worker-memory reads {PROC_STATM}, which this system has not")
        if self.statsd_host is not None:
            try:
                parse_statsd_address(self.statsd_host)
            except ValueError as exc:
                raise ConfigError(f"--statsd-host {self.statsd_host!r}: {exc}") from None

    def validate_http(self) -> None:
        """What shapes requests and responses: proxies, TLS, --root-path, --header."""
        if self.proxy_headers_style not in PROXY_HEADERS_STYLES:
            raise ConfigError(
                f"--proxy-headers-style must be one of {', '.join(PROXY_HEADERS_STYLES)},"
                f" not {self.proxy_headers_style!r}"
            )
        if self.proxy_protocol not in PROXY_PROTOCOL_MODES:
            raise ConfigError(
                f"--proxy-protocol must be one of {', '.join(PROXY_PROTOCOL_MODES)},"
                f" not {self.proxy_protocol!r}"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        invalid_root_path = root_path_error(self.root_path)
        if invalid_root_path is not None:
            raise ConfigError(f"--root-path {self.root_path!r} {invalid_root_path}")
        for name, value in self.headers:
            if not is_valid_header(name, value):
                raise ConfigError(f"--header {name!r}:{value!r} is not a valid HTTP header")

    def validate_uvicorn_settings(self) -> None:
        if self.interface not in INTERFACES:
            raise ConfigError(
                f"--interface must be one of {', '.join(INTERFACES)}, not {self.interface!r}"
            )
        if self.http2 and importlib.util.find_spec(HTTP2_LIBRARY) is None:
            # (--http is one of its choices here: validate_modes ran; a class of one's
            # own serves HTTP/2 over `h2`)
            mode = resolve_http_mode(self.http) if isinstance(self.http, str) else "python"
            if nghttp2_protocol_class(mode) is None:
                why = "its HTTP/2 extension is not built"
                if mode != "c":
                    why = "the c mode's HTTP/2 needs none"
                raise ConfigError(
                    f"--http2 in the {mode} mode needs the {HTTP2_LIBRARY!r} package ({why}):"
                    " pip install 'fastserve[http2]'"
                )
        self.validate_http2_limits()
        size = self.h11_max_incomplete_event_size
        if size is not None and size <= 0:
            raise ConfigError("--h11-max-incomplete-event-size must be a positive number")

    def validate_http2_limits(self) -> None:
        """The RFC's bounds of the SETTINGS values (positive numbers: NUMBER_RULES)."""
        frame_size = self.h2_max_inbound_frame_size
        if not FRAME_SIZE_MIN <= frame_size <= FRAME_SIZE_MAX:
            raise ConfigError(
                f"--h2-max-inbound-frame-size must be between {FRAME_SIZE_MIN} and"
                f" {FRAME_SIZE_MAX} (RFC 9113 6.5.2), not {frame_size}"
            )
        if self.h2_initial_window_size > WINDOW_SIZE_MAX:
            raise ConfigError(f"--h2-initial-window-size must be at most {WINDOW_SIZE_MAX}")

    @property
    def mode_details(self) -> str:
        """How the start-up line describes what runs: the HTTP mode (with --http2, once
        loaded, the library serving HTTP/2), and the demo when that is the app (so that
        a command missing its APP is seen at once), or a WSGI app's thread pool (known
        once the app is loaded, or with --interface wsgi)."""
        mode = f"{self.http_mode} mode"
        if self.loaded and self.protocol_settings.h2_protocol_class is not None:
            mode += f", HTTP/2 by {self.protocol_settings.h2_protocol_class.library}"
        if self.app == DEMO_APP:
            return f"{mode}, the built-in demo app"
        if self.interface == "wsgi":
            if not self.threads:
                return f"{mode}, WSGI, on the event loop's thread"
            plural = "" if self.threads == 1 else "s"
            return f"{mode}, WSGI, {self.threads} thread{plural}"
        return mode

    @property
    def supervised(self) -> bool:
        """Whether the pre-fork supervisor runs, even for one worker: more than one
        worker, or a setting only a supervisor can honour (it replaces the worker)."""
        return self.workers > 1 or any(
            value is not None
            for value in (
                self.limit_max_requests,
                self.max_worker_memory,
                self.timeout_worker_healthcheck,
            )
        )

    @property
    def worker_healthcheck_timeout(self) -> float:
        """--timeout-worker-healthcheck, or under a supervisor without it, Gunicorn's
        --timeout default."""
        if self.timeout_worker_healthcheck is None:
            return WORKER_HEALTHCHECK_TIMEOUT
        return self.timeout_worker_healthcheck

    @property
    def collects_metrics(self) -> bool:
        """Whether the processes count responses: for --metrics-port or --statsd-host."""
        return self.metrics_port is not None or self.statsd_host is not None

    @property
    def is_ssl(self) -> bool:
        return bool(self.ssl_certfile or self.ssl_context_factory)

    @property
    def is_ipv6_host(self) -> bool:
        """--host is an IPv6 address: bound by bind_tcp_socket in every process model,
        dual-stack."""
        return ":" in self.host

    @property
    def asgi_version(self) -> str:
        """The ASGI version the app is called with ("3.0" until an ASGI 2 app is loaded)."""
        return app_interface.ASGI_VERSIONS.get(self.interface, "3.0")

    @property
    def should_reload(self) -> bool:
        return isinstance(self.app, str) and self.reload

    @property
    def use_subprocess(self) -> bool:
        return bool(self.reload or self.workers > 1)

    @property
    def encoded_headers(self) -> list[tuple[bytes, bytes]]:
        """Default response headers: server and --header ones (date is added per second)."""
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers
        ]
        names = {name for name, _ in headers}
        if self.server_header and b"server" not in names:
            headers.insert(0, (b"server", b"fastserve"))
        return headers

    def configure_logging(self) -> None:
        logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")
        # uvicorn's loggers are fastserve's, for a log config and app code written for it
        alias_uvicorn_loggers()
        self.load_log_config()
        self.open_log_files()
        if self.log_level is not None:
            level = (
                LOG_LEVELS[self.log_level] if isinstance(self.log_level, str) else self.log_level
            )
            for name in ("fastserve", "fastserve.error", "fastserve.access"):
                logging.getLogger(name).setLevel(level)
        if not self.access_log:
            logging.getLogger("fastserve.access").handlers = []
            logging.getLogger("fastserve.access").propagate = False
        if self.log_format == "json":
            # whatever config made the handlers of fastserve's loggers (the built-in
            # one, --log-config, the Gunicorn worker's), they write JSON
            formatter = JsonFormatter()
            for name in ("fastserve", "fastserve.error", "fastserve.access"):
                for handler in logging.getLogger(name).handlers:
                    handler.setFormatter(formatter)
        elif self.access_log_format is not None:
            # a custom access format is the whole line, as Gunicorn writes it: the
            # built-in (or uvicorn's) access formatter goes, a formatter of your own stays
            for handler in logging.getLogger("fastserve.access").handlers:
                if shapes_access_lines(handler.formatter):
                    handler.setFormatter(logging.Formatter(ACCESS_LINE_ONLY))
        configure_access_log(self.access_log_format)

    def open_log_files(self) -> None:
        """--access-logfile / --error-logfile, over what the log config set up."""
        for option, path, names, stream in (
            ("--access-logfile", self.access_logfile, ("fastserve.access",), sys.stdout),
            ("--error-logfile", self.error_logfile, ("fastserve", "fastserve.error"), sys.stderr),
        ):
            if path is None:
                continue
            try:
                log_to_file(names, path, stream)
            except OSError as exc:
                raise ConfigError(f"{option} {path!r} cannot be opened: {exc.strerror}") from None

    def load_log_config(self) -> None:
        if isinstance(self.log_config, dict):
            log_config = self.log_config
            if self.use_colors in (True, False):
                # a copy: the dict may be the module's LOGGING_CONFIG, or the caller's
                log_config = copy.deepcopy(log_config)
                for formatter in ("default", "access"):
                    log_config["formatters"][formatter]["use_colors"] = self.use_colors
            try:
                log_config = as_fastserve_config(log_config)
            except ValueError as exc:
                raise ConfigError(f"log_config is not a valid logging config: {exc}") from None
            logging.config.dictConfig(log_config)
        elif self.log_config is not None:
            self.load_log_config_file(self.log_config)

    @staticmethod
    def load_log_config_file(path: str) -> None:
        if not os.path.isfile(path):
            raise ConfigError(f"--log-config file {path!r} does not exist")
        try:
            if path.endswith(".json"):
                with open(path) as file:
                    logging.config.dictConfig(as_fastserve_config(json.load(file)))
            elif path.endswith((".yaml", ".yml")):
                try:
                    import yaml
                except ImportError:
                    raise ConfigError(
                        "--log-config YAML needs PyYAML: pip install 'fastserve[standard]'"
                    ) from None
                with open(path) as file:
                    logging.config.dictConfig(as_fastserve_config(yaml.safe_load(file)))
            else:
                logging.config.fileConfig(as_fastserve_ini(path), disable_existing_loggers=False)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"--log-config {path!r} is not a valid logging config: {exc}"
            ) from exc

    def load(self) -> None:
        """Import the app and pick the protocol; raises ConfigError with one line."""
        assert not self.loaded
        tls_server_cert = None
        if self.is_ssl:
            self.ssl, tls_server_cert = self.load_tls()
        else:
            self.ssl = None

        if isinstance(self.http, str):
            self.http_protocol_class = import_from_string(HTTP_PROTOCOLS[self.http_mode])
        else:
            self.http_protocol_class = self.http
        self.loaded_app = self.load_app()
        self.lifespan_class = import_from_string(LIFESPAN[self.lifespan_mode])
        ws_protocol_class = None
        if self.ws_mode != "none" and self.interface != "wsgi":
            # a WSGI app has no WebSocket: an upgrade request is plain HTTP to it
            ws_protocol_class = import_from_string(WS_PROTOCOLS[self.ws_mode])
        self.ws_protocol_class = ws_protocol_class  # as uvicorn's Config has it
        h2_protocol_class = http2_protocol_class(self.http_mode) if self.http2 else None
        self.protocol_settings = ProtocolSettings(
            app=self.loaded_app,
            root_path=self.root_path,
            proxy_headers=self.proxy_headers,
            proxy_trust=ProxyTrust(self.forwarded_allow_ips, self.proxy_headers_style),
            access_log=self.access_log,
            limit_concurrency=self.limit_concurrency,
            limit_request_head=self.limit_request_head,
            limit_request_line=self.limit_request_line,
            limit_request_fields=self.limit_request_fields,
            limit_request_field_size=self.limit_request_field_size,
            limit_request_body=self.limit_request_body,
            timeout_keep_alive=self.timeout_keep_alive,
            timeout_request_header=self.timeout_request_header,
            timeout_request=self.timeout_request,
            ws_protocol_class=ws_protocol_class,
            h2_protocol_class=h2_protocol_class,
            h2_max_concurrent_streams=self.h2_max_concurrent_streams,
            h2_max_inbound_frame_size=self.h2_max_inbound_frame_size,
            h2_initial_window_size=self.h2_initial_window_size,
            wsgi=self.interface == "wsgi",
            ws_max_size=self.ws_max_size,
            ws_max_queue=self.ws_max_queue,
            ws_ping_interval=self.ws_ping_interval,
            ws_ping_timeout=self.ws_ping_timeout,
            ws_per_message_deflate=self.ws_per_message_deflate,
            tls_server_cert=tls_server_cert,
            reset_contextvars=self.reset_contextvars,
            http2_keep_alive_interval=self.http2_keep_alive_interval,
            http2_keep_alive_timeout=self.http2_keep_alive_timeout,
        )
        self.loaded = True

    def load_tls(self) -> tuple[ssl.SSLContext, Optional[str]]:
        """The SSLContext and the server certificate (PEM), read from the files now;
        the context is ssl_context_factory's when one is given (uvicorn's hook: it is
        called with this Config and the function that builds the default context)."""
        try:
            if self.ssl_context_factory is None:
                context = self.default_ssl_context()
            else:
                context = self.ssl_context_factory(self, self.default_ssl_context)
                if not isinstance(context, ssl.SSLContext):
                    raise ConfigError(
                        "ssl_context_factory must return an ssl.SSLContext, "
                        f"not {type(context).__name__}"
                    )
            cert = read_server_cert(self.ssl_certfile) if self.ssl_certfile else None
            return context, cert
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Cannot load the TLS certificate or key: {exc}") from exc

    def default_ssl_context(self) -> ssl.SSLContext:
        """The context the --ssl-* settings describe."""
        if not self.ssl_certfile:
            raise ConfigError("the default TLS context needs ssl_certfile (--ssl-certfile)")
        return create_ssl_context(
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=self.ssl_keyfile_password,
            ssl_version=self.ssl_version,
            cert_reqs=self.ssl_cert_reqs,
            ca_certs=self.ssl_ca_certs,
            ciphers=self.ssl_ciphers,
            http2=self.http2,
        )

    def reload_tls(self) -> None:
        """Read the certificate and key files again (a rotation on disk). A loaded
        config (--preload) takes the new context for the workers forked from now on;
        an unloaded one is only checked, since each worker reads the files in its own
        `load()`. Raises ConfigError and keeps the current context when they fail."""
        context, tls_server_cert = self.load_tls()
        if self.loaded:
            self.ssl = context
            self.protocol_settings = replace(
                self.protocol_settings, tls_server_cert=tls_server_cert
            )

    def load_app(self) -> Any:
        if self.app_dir is not None:
            sys.path.insert(0, self.app_dir)
        try:
            app = import_from_string(self.app)
        except ImportFromStringError as exc:
            error = ConfigError(f"Error loading ASGI app. {exc}")
            error.exc_info = exc.raised
            raise error from exc
        factory = self.factory
        if not factory and app_interface.looks_like_factory(app):
            logger.warning(
                "ASGI app factory detected (a function of no arguments): using it; "
                "pass --factory to say so"
            )
            factory = True
        if factory:
            try:
                app = app()
            except TypeError as exc:
                raise ConfigError(f"Error loading ASGI app factory: {exc}") from exc
        if not callable(app):
            raise ConfigError(f"The ASGI app {self.app!r} is not callable.")
        if self.interface == "auto":
            self.interface = app_interface.detect(app)
        if self.interface == "wsgi":
            return WSGIApp(app, self.threads, multiprocess=self.workers > 1)
        return app_interface.adapt(app, self.interface)

    @property
    def lifespan_mode(self) -> str:
        """--lifespan, once the app's interface is known: a WSGI app has no lifespan
        (`auto` skips it quietly, as uvicorn's WSGI middleware; `on` is refused)."""
        if self.interface != "wsgi":
            return self.lifespan
        if self.lifespan == "on":
            raise ConfigError(
                "--lifespan on: a WSGI app has no lifespan protocol; use --lifespan auto or off"
            )
        return "off"

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        if self.loop in ("asyncio", "none"):
            return asyncio.new_event_loop
        if ":" in self.loop:
            try:
                return import_from_string(self.loop)
            except ImportFromStringError as exc:
                raise ConfigError(f"--loop {self.loop}: {exc}") from None
        module = LOOP_MODULES.get(self.loop, "uvloop")  # auto: uvloop when installed
        try:
            return importlib.import_module(module).new_event_loop
        except ImportError:
            if self.loop == "auto":
                return asyncio.new_event_loop
            raise ConfigError(
                f"--loop {self.loop}: {module} is not installed (pip install {module})"
            ) from None

    def bind_sockets(self) -> list[socket.socket]:
        """The listening sockets, bound in this process for the supervisor (or the
        server itself) to share: every --bind address, else --uds, --fd or
        --host/--port. Inheritable, listening."""
        listeners = self.listeners or [self.listener()]
        sockets: list[socket.socket] = []
        try:
            for listener in listeners:
                sockets.append(self.bind_listener(listener))
        except ConfigError:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def bind_socket(self) -> socket.socket:
        """The one listening socket of --uds, --fd or --host/--port."""
        return self.bind_listener(self.listener())

    def listener(self) -> Listener:
        if self.uds:
            return Listener("unix", path=self.uds)
        if self.fd is not None:
            return Listener("fd", fd=self.fd)
        return Listener("tcp", host=self.host, port=self.port)

    def unix_paths(self) -> list[str]:
        """The socket files bind_sockets() creates (removed at exit)."""
        listeners = self.listeners or [self.listener()]
        return [listener.path for listener in listeners if listener.kind == "unix"]

    def bind_listener(self, listener: Listener) -> socket.socket:
        if listener.kind == "unix":
            sock = self.bind_unix_socket(listener.path)
        elif listener.kind == "fd":
            sock = socket_from_fd(listener.fd)
        else:
            sock = self.bind_tcp_socket(host=listener.host, port=listener.port)
        sock.listen(self.backlog)
        sock.set_inheritable(True)
        return sock

    def bind_unix_socket(self, path: str) -> socket.socket:
        """Without --umask the socket is 0o666 (as Uvicorn's: any local user may
        connect); with it, its mode is what the umask leaves (as Gunicorn's). Owned
        by --user/--group when given, so that the workers may remove it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)
            if self.umask is None:
                sock.bind(path)
                os.chmod(path, UNIX_SOCKET_MODE)
            else:
                previous = os.umask(self.umask)
                try:
                    sock.bind(path)
                finally:
                    os.umask(previous)
            if self.uid is not None or self.gid is not None:
                os.chown(
                    path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
                )
        except OSError as exc:
            sock.close()
            raise ConfigError(f"Cannot bind unix socket {path}: {exc.strerror}") from exc
        return sock

    def bind_tcp_socket(
        self, reuse_port: bool = False, host: Optional[str] = None, port: Optional[int] = None
    ) -> socket.socket:
        """A TCP socket bound to host/port (default --host/--port), not listening yet."""
        host = self.host if host is None else host
        port = self.port if port is None else port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            # `--host ::` takes IPv4 clients too (as IPv4-mapped addresses), whatever
            # the system's default (Linux: net.ipv6.bindv6only)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            raise ConfigError(f"Cannot bind {shown}:{port}: {exc.strerror}") from exc
        return sock


def socket_from_fd(fd: int) -> socket.socket:
    """The inherited socket of --fd / fd://N, with its own family."""
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"fd {fd} is not a socket: {exc.strerror}") from exc
