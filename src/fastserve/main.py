"""`fastserve.run()`: the programmatic entry point, as `uvicorn.run()`."""

from __future__ import annotations

import logging
import ssl
import sys
from typing import Any, Callable, Optional, Union

from fastserve.config import SSL_PROTOCOL_VERSION, STARTUP_FAILURE, Config, ConfigError
from fastserve.hooks import ServerHooks
from fastserve.logging import LOGGING_CONFIG
from fastserve.server import Server

logger = logging.getLogger("fastserve.error")


def run(
    app: Any,
    *,
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
    """Serve `app` (an ASGI app or a "module:attribute" string) until stopped.

    Takes `Config`'s arguments, with its defaults (a test keeps the two signatures
    the same). Exits the process with a non-zero code when the app cannot be loaded
    (1) or fails its startup (3).
    """
    settings = {name: value for name, value in locals().items() if name != "app"}  # Config's
    try:
        config = Config(app, **settings)
    except ConfigError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    run_config(config)


def run_config(config: Config) -> None:
    """Serve with a ready Config: under the reloader, the supervisor, or in this process."""
    if config.reload:
        from fastserve.supervisors.reload import Reloader

        if not isinstance(config.app, str):
            logger.error(
                '--reload needs the app as an import string ("module:attribute"), '
                "so that each restart imports the changed code"
            )
            sys.exit(1)
        try:
            reloader = Reloader(config)
        except ConfigError as exc:
            logger.error("%s", exc)
            sys.exit(1)
        code = reloader.run()
    elif config.supervised:
        from fastserve.supervisors.multiprocess import Supervisor

        code = Supervisor(config).run()
    else:
        server = Server(config)
        server.run()
        code = 0 if server.started else STARTUP_FAILURE
    if code:
        sys.exit(code)
