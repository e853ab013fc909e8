"""The `fastserve` command: uvicorn's flags, so switching is one word."""

from __future__ import annotations

import platform
import ssl
import sys
from typing import Optional

import click

import fastserve
from fastserve.config import (
    HTTP_MODES,
    LIFESPAN_MODES,
    LOOP_MODES,
    SSL_PROTOCOL_VERSION,
    Config,
    ConfigError,
    c_extension_available,
)
from fastserve.logging import LOG_LEVELS, LOGGING_CONFIG
from fastserve.main import run_config

DEMO_APP = "fastserve.demo:app"


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    mode = "C extension available" if c_extension_available() else "pure-Python only"
    click.echo(
        f"fastserve {fastserve.__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()} ({mode})"
    )
    ctx.exit()


def parse_header(ctx: click.Context, param: click.Parameter, values: tuple) -> list:
    headers = []
    for value in values:
        name, sep, header_value = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME:VALUE")
        headers.append((name.strip(), header_value.strip()))
    return headers


@click.command(context_settings={"auto_envvar_prefix": "FASTSERVE"})
@click.argument("app", default=DEMO_APP, required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind socket to this host.")
@click.option("--port", default=8000, type=int, show_default=True, help="Bind socket to this port (0: any free port).")
@click.option("--uds", default=None, help="Bind to a UNIX domain socket.")
@click.option("--fd", default=None, type=int, help="Serve on an inherited, already bound socket (file descriptor).")
@click.option("--backlog", default=2048, type=int, show_default=True, help="Listen backlog.")
@click.option("--http", "http", type=click.Choice(HTTP_MODES), default="auto", show_default=True, help="HTTP implementation: c (llhttp), python (h11), or auto (c when built).")
@click.option("--loop", type=click.Choice(LOOP_MODES), default="auto", show_default=True, help="Event loop: uvloop when installed with auto.")
@click.option("--lifespan", type=click.Choice(LIFESPAN_MODES), default="auto", show_default=True, help="Lifespan protocol.")
@click.option("--workers", default=None, type=int, envvar="WEB_CONCURRENCY", help="Number of worker processes under a pre-fork supervisor. [default: $WEB_CONCURRENCY or 1]")
@click.option("--preload", is_flag=True, default=False, help="Import the app in the supervisor before forking the workers (shares memory; SIGHUP then keeps the old code).")
@click.option("--reload", is_flag=True, default=False, help="Restart the server when files change (development).")
@click.option("--reload-dir", "reload_dirs", multiple=True, help="Directory to watch with --reload (repeatable). [default: the current directory]")
@click.option("--reload-include", "reload_includes", multiple=True, help="Glob of files to watch with --reload, besides '*.py' (repeatable).")
@click.option("--reload-exclude", "reload_excludes", multiple=True, help="Glob of files or directories to ignore with --reload, besides '.*, .py[cod], .sw.*, ~*' (repeatable).")
@click.option("--reload-delay", default=0.25, type=float, show_default=True, help="Seconds between checks for file changes, and before restarting after one.")
@click.option("--timeout-worker-healthcheck", default=30.0, type=float, show_default=True, help="Kill (SIGABRT, then SIGKILL) and replace a worker whose event loop sent no heartbeat for this many seconds.")
@click.option("--reuse-port", is_flag=True, default=False, help="Give each worker its own SO_REUSEPORT socket (the kernel spreads connections) instead of one shared socket.")
@click.option("--env-file", type=click.Path(exists=True), default=None, help="Environment file to load (needs python-dotenv).")
@click.option("--log-config", type=click.Path(exists=True), default=None, help="Logging config file: .json / .yaml (dictConfig) or .ini (fileConfig).")
@click.option("--log-level", type=click.Choice(list(LOG_LEVELS)), default=None, help="Log level. [default: info]")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every response.")
@click.option("--use-colors/--no-use-colors", default=None, help="Colour log levels (default: when a terminal).")
@click.option("--proxy-headers/--no-proxy-headers", default=True, show_default=True, help="Take client address and scheme from X-Forwarded-For / X-Forwarded-Proto of trusted peers.")
@click.option("--forwarded-allow-ips", default=None, help="Comma-separated IPs/networks trusted for proxy headers, or '*'. [default: $FORWARDED_ALLOW_IPS or 127.0.0.1]")
@click.option("--server-header/--no-server-header", default=True, show_default=True, help="Send 'server: fastserve'.")
@click.option("--date-header/--no-date-header", default=True, show_default=True, help="Send a Date header.")
@click.option("--header", "headers", multiple=True, callback=parse_header, help="Default response header NAME:VALUE (repeatable).")
@click.option("--root-path", default="", help="ASGI root_path when mounted below a prefix by a proxy.")
@click.option("--limit-concurrency", default=None, type=int, help="Answer 503 beyond this many connections or running requests.")
@click.option("--limit-max-requests", "--max-requests", "limit_max_requests", default=None, type=int, help="A process (each worker) exits gracefully after serving this many requests; a supervised worker is then replaced.")
@click.option("--limit-max-requests-jitter", "--max-requests-jitter", "limit_max_requests_jitter", default=0, type=int, show_default=True, help="Add a random 0..N to --max-requests per process, so workers do not restart together.")
@click.option("--limit-request-head", default=65536, type=int, show_default=True, help="Max bytes of request line + headers (else 431).")
@click.option("--limit-request-line", default=0, type=int, show_default=True, help="Max bytes of the request target (else 414); 0 = only the head limit.")
@click.option("--limit-request-fields", default=100, type=int, show_default=True, help="Max number of request headers (else 431).")
@click.option("--limit-request-field-size", default=0, type=int, show_default=True, help="Max bytes of one header line (else 431); 0 = only the head limit.")
@click.option("--limit-request-body", default=None, type=int, help="Max request body bytes (else 413). [default: no limit]")
@click.option("--timeout-keep-alive", default=5.0, type=float, show_default=True, help="Close idle keep-alive connections after this many seconds.")
@click.option("--timeout-request-header", default=30.0, type=float, show_default=True, help="Close a connection whose request head is not complete after this many seconds.")
@click.option("--timeout-graceful-shutdown", default=None, type=float, help="On shutdown, wait at most this many seconds for in-flight requests. [default: no limit]")
@click.option("--ssl-keyfile", default=None, help="TLS key file.")
@click.option("--ssl-certfile", default=None, help="TLS certificate file.")
@click.option("--ssl-keyfile-password", default=None, help="TLS key password.")
@click.option("--ssl-version", default=int(SSL_PROTOCOL_VERSION), type=int, show_default=True, help="TLS protocol version (see the ssl module).")
@click.option("--ssl-cert-reqs", default=int(ssl.CERT_NONE), type=int, show_default=True, help="Whether client certificates are required (see the ssl module).")
@click.option("--ssl-ca-certs", default=None, help="CA certificates file for client verification.")
@click.option("--ssl-ciphers", default="TLSv1", show_default=True, help="Ciphers to use (see the ssl module).")
@click.option("--factory", is_flag=True, default=False, help="APP names a factory function that returns the app.")
@click.option("--app-dir", default=".", show_default=True, help="Look for APP in this directory (put first on sys.path).")
@click.option("--version", is_flag=True, callback=print_version, expose_value=False, is_eager=True, help="Show the version and exit.")
def cli(app: str, log_config: Optional[str], **options) -> None:
    """Serve the ASGI app APP ("module:attribute"; the built-in demo when omitted)."""
    try:
        config = Config(app, log_config=log_config or LOGGING_CONFIG, **options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    run_config(config)


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
