"""The `fastserve` command: uvicorn's flags, so switching is one word."""

from __future__ import annotations

import inspect
import ipaddress
import logging
import platform
import sys
from typing import Optional

import click
from click.core import ParameterSource

import fastserve
from fastserve.config import (
    CLI_APP_DIR,
    DEMO_APP,
    FORWARDED_ALLOW_IPS,
    HTTP_CHOICES,
    INTERFACES,
    LIFESPAN_MODES,
    LOOP_CHOICES,
    PROXY_HEADERS_STYLES,
    PROXY_PROTOCOL_MODES,
    WS_CHOICES,
    Config,
    ConfigError,
    c_extension_error,
)
from fastserve.config_file import (
    COMMAND_OPTIONS,
    HOOKS_META_KEY,
    ConfigFileCommand,
    describe_settings,
    envvar_used,
)
from fastserve.logging import LOG_FORMATS, LOG_LEVELS, LOGGING_CONFIG
from fastserve.main import run_config

ENV_PREFIX = "FASTSERVE"
UVICORN_ENV_PREFIX = "UVICORN"

# Every option's default is Config's (the one place defaults live).
DEFAULTS = {name: param.default for name, param in inspect.signature(Config).parameters.items()}
DEFAULTS["app_dir"] = CLI_APP_DIR


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    mode = "pure-Python only" if c_extension_error() else "C extension available"
    click.echo(
        f"fastserve {fastserve.__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()} ({mode})"
    )
    ctx.exit()


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_host(ctx: click.Context, host: str) -> str:
    """Where the demo listens: beyond loopback only for --host on the command line. A
    host from the environment or a config file was meant for the app the command
    should have named (a Dockerfile missing its APP), not for the demo."""
    if ctx.get_parameter_source("host") is ParameterSource.COMMANDLINE or is_loopback(host):
        return host
    return DEFAULTS["host"]


def parse_header(ctx: click.Context, param: click.Parameter, values: tuple) -> list:
    headers = []
    for value in values:
        name, sep, header_value = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME:VALUE")
        headers.append((name.strip(), header_value.strip()))
    return headers


def check_env(ctx: click.Context, param: click.Parameter, values: tuple) -> list:
    for value in values:
        key, sep, _ = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
    return list(values)


@click.command(cls=ConfigFileCommand, context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.argument("app", default=DEMO_APP, required=False)
@click.option(
    "--host", default=DEFAULTS["host"], show_default=True, help="Bind socket to this host."
)
@click.option(
    "--port",
    default=DEFAULTS["port"],
    type=int,
    show_default=True,
    help="Bind socket to this port (0: any free port).",
)
@click.option("--uds", default=DEFAULTS["uds"], help="Bind to a UNIX domain socket.")
@click.option(
    "--fd",
    default=DEFAULTS["fd"],
    type=int,
    help="Serve on an inherited, already bound socket (file descriptor).",
)
@click.option(
    "-b",
    "--bind",
    "bind",
    multiple=True,
    help="Listen on HOST:PORT, [IPV6]:PORT, unix:PATH or fd://FD (repeatable; Gunicorn's). Replaces --host/--port/--uds/--fd.",
)
@click.option(
    "--backlog", default=DEFAULTS["backlog"], type=int, show_default=True, help="Listen backlog."
)
@click.option(
    "--http",
    "http",
    type=click.Choice(HTTP_CHOICES),
    default=DEFAULTS["http"],
    show_default=True,
    help="HTTP implementation: c (llhttp), python (h11), or auto (c when built); uvicorn's h11 is python, its httptools and zttp are c.",
)
@click.option(
    "--ws",
    type=click.Choice(WS_CHOICES),
    default=DEFAULTS["ws"],
    show_default=True,
    help="WebSocket implementation: websockets (sans-I/O, as uvicorn's websockets-sansio), wsproto, auto (the first installed), or none (upgrade requests are plain HTTP).",
)
@click.option(
    "--ws-max-size",
    default=DEFAULTS["ws_max_size"],
    type=int,
    show_default=True,
    help="Largest WebSocket message in bytes (else close 1009).",
)
@click.option(
    "--ws-max-queue",
    default=DEFAULTS["ws_max_queue"],
    type=int,
    show_default=True,
    help="WebSocket messages received and not yet taken by the app before reading pauses.",
)
@click.option(
    "--ws-ping-interval",
    default=DEFAULTS["ws_ping_interval"],
    type=float,
    show_default=True,
    help="Seconds between WebSocket pings the server sends.",
)
@click.option(
    "--ws-ping-timeout",
    default=DEFAULTS["ws_ping_timeout"],
    type=float,
    show_default=True,
    help="Close a WebSocket (1011) whose peer does not answer a ping within this many seconds.",
)
@click.option(
    "--ws-per-message-deflate",
    default=DEFAULTS["ws_per_message_deflate"],
    type=bool,
    show_default=True,
    help="Negotiate permessage-deflate compression with WebSocket clients.",
)
@click.option(
    "--loop",
    metavar=f"[{'|'.join(LOOP_CHOICES)}|MODULE:FUNCTION]",
    default=DEFAULTS["loop"],
    show_default=True,
    help="Event loop: uvloop when installed with auto; none is asyncio's (its policy's); MODULE:FUNCTION a loop factory.",
)
@click.option(
    "--lifespan",
    type=click.Choice(LIFESPAN_MODES),
    default=DEFAULTS["lifespan"],
    show_default=True,
    help="Lifespan protocol.",
)
@click.option(
    "-w",
    "--workers",
    default=DEFAULTS["workers"],
    type=int,
    envvar="WEB_CONCURRENCY",
    help="Number of worker processes under a pre-fork supervisor. [default: $WEB_CONCURRENCY or 1]",
)
@click.option(
    "--threads",
    default=DEFAULTS["threads"],
    type=int,
    help="Threads a WSGI app is called in, per worker process (Gunicorn's gthread --threads): requests beyond them wait for one. 0: on the event loop's thread (for apps that never block).",
    show_default=True,
)
@click.option(
    "-u",
    "--user",
    default=DEFAULTS["user"],
    help="Serve as this user (name or uid) once the sockets are bound: the workers, or the one server. [default: the current user]",
)
@click.option(
    "-g",
    "--group",
    default=DEFAULTS["group"],
    help="Serve as this group (name or gid) once the sockets are bound. [default: --user's group]",
)
@click.option(
    "-m",
    "--umask",
    default=DEFAULTS["umask"],
    help="Create unix sockets under this umask (022, 0o22, 18), as Gunicorn. [default: sockets are 0o666]",
)
@click.option(
    "--chdir",
    default=DEFAULTS["chdir"],
    help="Change to this directory before loading the app (paths are then relative to it).",
)
@click.option(
    "-p",
    "--pid",
    "pidfile",
    default=DEFAULTS["pidfile"],
    help="Write the pid of the master (or the one server) to this file once bound; removed at exit.",
)
@click.option(
    "--check-config",
    is_flag=True,
    default=False,
    help="Check the settings and import the app, then exit (0, or 1 with the error); binds nothing.",
)
@click.option(
    "--preload",
    is_flag=True,
    default=DEFAULTS["preload"],
    help="Import the app in the supervisor before forking the workers (shares memory; SIGHUP then keeps the old code).",
)
@click.option(
    "--reload",
    is_flag=True,
    default=DEFAULTS["reload"],
    help="Restart the server when files change (development).",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    help="Directory to watch with --reload (repeatable). [default: the current directory]",
)
@click.option(
    "--reload-include",
    "reload_includes",
    multiple=True,
    help="Glob of files to watch with --reload, besides '*.py' (repeatable).",
)
@click.option(
    "--reload-exclude",
    "reload_excludes",
    multiple=True,
    help="Glob of files or directories to ignore with --reload, besides '.*, *.py[cod], .sw.*, ~*, __pycache__' (repeatable).",
)
@click.option(
    "--reload-delay",
    default=DEFAULTS["reload_delay"],
    type=float,
    show_default=True,
    help="Seconds between checks for file changes, and before restarting after one.",
)
@click.option(
    "--timeout-worker-healthcheck",
    default=DEFAULTS["timeout_worker_healthcheck"],
    type=float,
    help="Kill (SIGABRT, then SIGKILL) and replace a worker whose event loop sent no heartbeat for this many seconds; given, it supervises one worker too. [default: 30 under a supervisor]",
)
@click.option(
    "--warn-loop-stall",
    default=DEFAULTS["warn_loop_stall"],
    type=float,
    help="Log a warning with the stack of the blocking code when the event loop has not run for this many seconds. [default: off]",
)
@click.option(
    "--max-worker-memory",
    default=DEFAULTS["max_worker_memory"],
    type=int,
    help="Replace a worker gracefully (as --max-requests) once its resident memory passes this many MiB (supervises one worker too).",
)
@click.option(
    "--metrics-port",
    default=DEFAULTS["metrics_port"],
    type=int,
    help="Serve Prometheus metrics at /metrics on this port, on --metrics-host (with --workers: by the master, summed over the workers). [default: off]",
)
@click.option(
    "--metrics-host",
    default=DEFAULTS["metrics_host"],
    show_default=True,
    help="Bind the --metrics-port endpoint to this host.",
)
@click.option(
    "--statsd-host",
    default=DEFAULTS["statsd_host"],
    help="Send Gunicorn's StatsD metrics (requests, status codes, duration, workers) once a second to HOST:PORT (UDP, port 8125 by default) or unix:PATH. [default: off]",
)
@click.option(
    "--statsd-prefix",
    default=DEFAULTS["statsd_prefix"],
    help="Prefix of the --statsd-host metric names (a trailing '.' is added).",
)
@click.option(
    "--dogstatsd-tags",
    default=DEFAULTS["dogstatsd_tags"],
    help="Comma-separated DogStatsD tags (tag:value) added to every --statsd-host metric.",
)
@click.option(
    "--reuse-port",
    is_flag=True,
    default=DEFAULTS["reuse_port"],
    help="Give each worker its own SO_REUSEPORT socket (the kernel spreads connections) instead of one shared socket.",
)
@click.option(
    "-e",
    "--env",
    "env",
    multiple=True,
    callback=check_env,
    help="Set the environment variable KEY=VALUE in the server's processes (repeatable; Gunicorn's).",
)
@click.option(
    "--env-file",
    type=click.Path(exists=True),
    default=DEFAULTS["env_file"],
    help="Environment file to load (needs python-dotenv).",
)
@click.option(
    "--log-config",
    type=click.Path(exists=True),
    default=None,
    help="Logging config file: .json / .yaml (dictConfig) or .ini (fileConfig).",
)
@click.option(
    "--log-level",
    type=click.Choice(list(LOG_LEVELS)),
    default=DEFAULTS["log_level"],
    help="Log level. [default: info]",
)
@click.option(
    "--access-log/--no-access-log",
    default=DEFAULTS["access_log"],
    show_default=True,
    help="Log every response.",
)
@click.option(
    "--use-colors/--no-use-colors",
    default=DEFAULTS["use_colors"],
    help="Colour log levels (default: when a terminal).",
)
@click.option(
    "--access-log-format",
    default=DEFAULTS["access_log_format"],
    help="Access line in Gunicorn's atoms, e.g. '%(h)s \"%(r)s\" %(s)s %(B)s %(M)s'. [default: uvicorn's line]",
)
@click.option(
    "--log-format",
    type=click.Choice(list(LOG_FORMATS)),
    default=DEFAULTS["log_format"],
    show_default=True,
    help="text, or json: one JSON object per log record.",
)
@click.option(
    "--access-logfile",
    default=DEFAULTS["access_logfile"],
    help="Write the access log to this file (appended to), '-' for stdout. [default: the log config's, stdout]",
)
@click.option(
    "--error-logfile",
    "--log-file",
    "error_logfile",
    default=DEFAULTS["error_logfile"],
    help="Write the error log to this file (appended to), '-' for stderr. [default: the log config's, stderr]",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=DEFAULTS["proxy_headers"],
    show_default=True,
    help="Take client address and scheme from the proxy headers (the family --proxy-headers-style names) of trusted peers.",
)
@click.option(
    "--proxy-headers-style",
    type=click.Choice(PROXY_HEADERS_STYLES),
    default=DEFAULTS["proxy_headers_style"],
    show_default=True,
    help="Which proxy headers to believe: x-forwarded (X-Forwarded-For / X-Forwarded-Proto) or forwarded (RFC 7239 Forwarded); the other family is ignored.",
)
@click.option(
    "--forwarded-allow-ips",
    default=DEFAULTS["forwarded_allow_ips"],
    # uvicorn's variable, after fastserve's own
    envvar=["FASTSERVE_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"],
    help="Comma-separated IPs/networks trusted for proxy headers, or '*'. [default: $FORWARDED_ALLOW_IPS or 127.0.0.1,::1]",
)
@click.option(
    "--proxy-protocol",
    type=click.Choice(PROXY_PROTOCOL_MODES),
    default=DEFAULTS["proxy_protocol"],
    show_default=True,
    help="Peers in --forwarded-allow-ips must start each connection with a PROXY protocol header (v1, v2, or auto: either), which gives the client and server addresses.",
)
@click.option(
    "--server-header/--no-server-header",
    default=DEFAULTS["server_header"],
    show_default=True,
    help="Send 'server: fastserve'.",
)
@click.option(
    "--date-header/--no-date-header",
    default=DEFAULTS["date_header"],
    show_default=True,
    help="Send a Date header.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=parse_header,
    help="Default response header NAME:VALUE (repeatable).",
)
@click.option(
    "--root-path",
    default=DEFAULTS["root_path"],
    help="ASGI root_path: the prefix a proxy mounts the app at and strips (/api); "
    "as in uvicorn, the scope's path and raw_path include it.",
)
@click.option(
    "--limit-concurrency",
    default=DEFAULTS["limit_concurrency"],
    type=int,
    help="Answer 503 beyond this many connections or running requests.",
)
@click.option(
    "--limit-max-requests",
    "--max-requests",
    "limit_max_requests",
    default=DEFAULTS["limit_max_requests"],
    type=int,
    help="A worker exits gracefully after serving this many requests and the supervisor replaces it (one worker too).",
)
@click.option(
    "--limit-max-requests-jitter",
    "--max-requests-jitter",
    "limit_max_requests_jitter",
    default=DEFAULTS["limit_max_requests_jitter"],
    type=int,
    show_default=True,
    help="Add a random 0..N to --max-requests per process, so workers do not restart together.",
)
@click.option(
    "--limit-request-head",
    default=DEFAULTS["limit_request_head"],
    type=int,
    show_default=True,
    help="Max bytes of request line + headers (else 431).",
)
@click.option(
    "--limit-request-line",
    default=DEFAULTS["limit_request_line"],
    type=int,
    show_default=True,
    help="Max bytes of the request target (else 414); 0 = only the head limit.",
)
@click.option(
    "--limit-request-fields",
    default=DEFAULTS["limit_request_fields"],
    type=int,
    show_default=True,
    help="Max number of request headers (else 431).",
)
@click.option(
    "--limit-request-field-size",
    default=DEFAULTS["limit_request_field_size"],
    type=int,
    show_default=True,
    help="Max bytes of one header line (else 431); 0 = only the head limit.",
)
@click.option(
    "--limit-request-body",
    default=DEFAULTS["limit_request_body"],
    type=int,
    help="Max request body bytes (else 413). [default: no limit]",
)
@click.option(
    "--timeout-keep-alive",
    default=DEFAULTS["timeout_keep_alive"],
    type=float,
    show_default=True,
    help="Close idle keep-alive connections after this many seconds.",
)
@click.option(
    "--timeout-request-header",
    default=DEFAULTS["timeout_request_header"],
    type=float,
    show_default=True,
    help="Close a connection whose request head is not complete after this many seconds.",
)
@click.option(
    "--timeout-request",
    default=DEFAULTS["timeout_request"],
    type=float,
    help="Cancel an app call whose response is not complete after this many seconds: 504 if the response had not started, else close the connection. [default: no limit]",
)
@click.option(
    "--timeout-graceful-shutdown",
    "--graceful-timeout",
    "timeout_graceful_shutdown",
    default=DEFAULTS["timeout_graceful_shutdown"],
    type=float,
    show_default=True,
    help="On shutdown, wait at most this many seconds for in-flight requests and open streams, then close their connections (the app gets http.disconnect) and cancel them.",
)
@click.option("--ssl-keyfile", default=DEFAULTS["ssl_keyfile"], help="TLS key file.")
@click.option("--ssl-certfile", default=DEFAULTS["ssl_certfile"], help="TLS certificate file.")
@click.option(
    "--ssl-keyfile-password", default=DEFAULTS["ssl_keyfile_password"], help="TLS key password."
)
@click.option(
    "--ssl-version",
    default=DEFAULTS["ssl_version"],
    type=int,
    show_default=True,
    help="TLS protocol version (see the ssl module).",
)
@click.option(
    "--ssl-cert-reqs",
    default=DEFAULTS["ssl_cert_reqs"],
    type=int,
    show_default=True,
    help="Whether client certificates are required (see the ssl module).",
)
@click.option(
    "--ssl-ca-certs",
    default=DEFAULTS["ssl_ca_certs"],
    help="CA certificates file for client verification.",
)
@click.option(
    "--ssl-ciphers",
    default=DEFAULTS["ssl_ciphers"],
    help="TLS ciphers (an OpenSSL cipher list). [default: OpenSSL's defaults]",
)
@click.option(
    "--factory",
    is_flag=True,
    default=DEFAULTS["factory"],
    help="APP names a factory function that returns the app.",
)
@click.option(
    "--app-dir",
    default=DEFAULTS["app_dir"],
    show_default=True,
    help="Look for APP in this directory (put first on sys.path).",
)
@click.option(
    "--interface",
    type=click.Choice(INTERFACES),
    default=DEFAULTS["interface"],
    show_default=True,
    help="The app's interface: asgi3, asgi2 (served as ASGI 3), wsgi (called in --threads threads), or auto (detected as uvicorn does).",
)
@click.option(
    "--h11-max-incomplete-event-size",
    default=DEFAULTS["h11_max_incomplete_event_size"],
    type=int,
    help="uvicorn's name for --limit-request-head (in both modes); when given, it wins.",
)
@click.option(
    "--reset-contextvars",
    is_flag=True,
    default=DEFAULTS["reset_contextvars"],
    help="Run each app call in an empty contextvars context: nothing set at import or in the lifespan shows.",
)
@click.option(
    "--http2/--no-http2",
    default=DEFAULTS["http2"],
    help="Serve HTTP/2 too: h2 offered by ALPN over TLS, and h2c with prior knowledge on a plain port (see README, HTTP/2).",
)
@click.option(
    "--h2-max-concurrent-streams",
    type=int,
    default=DEFAULTS["h2_max_concurrent_streams"],
    show_default=True,
    help="HTTP/2: the streams a connection may run at once (one more is refused: REFUSED_STREAM).",
)
@click.option(
    "--h2-max-inbound-frame-size",
    type=int,
    default=DEFAULTS["h2_max_inbound_frame_size"],
    show_default=True,
    help="HTTP/2: the largest frame payload a client may send (16384 to 16777215).",
)
@click.option(
    "--h2-initial-window-size",
    type=int,
    default=DEFAULTS["h2_initial_window_size"],
    show_default=True,
    help="HTTP/2: each stream's request body window, reopened as the app reads.",
)
@click.option(
    "--http2-keep-alive-interval",
    default=DEFAULTS["http2_keep_alive_interval"],
    type=float,
    help="Send a PING on an HTTP/2 connection that has been quiet for this many seconds. [default: no PINGs]",
)
@click.option(
    "--http2-keep-alive-timeout",
    default=DEFAULTS["http2_keep_alive_timeout"],
    type=float,
    show_default=True,
    help="Close an HTTP/2 connection (GOAWAY) whose keep-alive PING is not acknowledged within this many seconds.",
)
@click.option(
    "-c",
    "--config",
    "config_file",
    envvar="FASTSERVE_CONFIG",  # by the option's name, as the others (not ..._CONFIG_FILE)
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Settings file: TOML keyed by long option name, or a gunicorn.conf.py (.py: Gunicorn's settings and server hooks). [default: [tool.fastserve] in the app directory's pyproject.toml]",
)
@click.option(
    "--print-config",
    is_flag=True,
    default=False,
    help="Show the effective settings and where each came from, and exit.",
)
@click.option(
    "--version",
    is_flag=True,
    callback=print_version,
    expose_value=False,
    is_eager=True,
    help="Show the version and exit.",
)
def cli(
    app: str,
    log_config: Optional[str],
    config_file: Optional[str],
    print_config: bool,
    check_config: bool,
    **options,
) -> None:
    """Serve the ASGI app APP ("module:attribute"; the built-in demo when omitted)."""
    # config_file was read before the options took their values (ConfigFileCommand).
    ctx = click.get_current_context()
    if print_config:
        click.echo(describe_settings(ctx, {"forwarded_allow_ips": FORWARDED_ALLOW_IPS}))
        return
    given_host = options["host"]
    if app == DEMO_APP and options["uds"] is None and options["fd"] is None:
        options["host"] = demo_host(ctx, given_host)
    if workers_from_web_concurrency(click.get_current_context()):
        options["workers"] = None  # Config reads it, and names it in what it says
    try:
        config = Config(
            app,
            log_config=log_config or LOGGING_CONFIG,
            hooks=ctx.meta.get(HOOKS_META_KEY),
            **options,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if config.host != given_host:
        logging.getLogger("fastserve.error").warning(
            "The built-in demo app listens on %s, not on host %s: only --host on the "
            "command line takes the demo beyond loopback.",
            config.host,
            given_host,
        )
    if check_config:
        check_app(config)
        return
    run_config(config)


def check_app(config: Config) -> None:
    """--check-config: import the app as the server would; exit 1 with the error line."""
    try:
        config.load()
    except ConfigError as exc:
        click.echo(f"fastserve: error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"fastserve: the settings and the app {config.app!r} are fine")


def workers_from_web_concurrency(ctx: click.Context) -> bool:
    param = next(param for param in ctx.command.params if param.name == "workers")
    from_environment = ctx.get_parameter_source("workers") is ParameterSource.ENVIRONMENT
    return from_environment and envvar_used(ctx, param) == "WEB_CONCURRENCY"


def read_uvicorn_variables(command: click.Command) -> None:
    """Each option (and APP) also reads UVICORN_<NAME>, after FASTSERVE_<NAME>: a
    uvicorn deployment's environment keeps working, and fastserve's own wins."""
    for param in command.params:
        if param.name in COMMAND_OPTIONS or not param.expose_value:  # no UVICORN_CONFIG_FILE
            continue
        own = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        name = param.name.upper()
        param.envvar = [*own, f"{ENV_PREFIX}_{name}", f"{UVICORN_ENV_PREFIX}_{name}"]


read_uvicorn_variables(cli)


def main(args: Optional[list] = None) -> None:
    """Entry point: one line on stderr and a non-zero exit for any usage error."""
    try:
        cli.main(args=args, prog_name="fastserve", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"fastserve: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
