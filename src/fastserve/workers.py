"""Gunicorn worker classes: `gunicorn -k fastserve.workers.FastserveWorker module:app`.

Gunicorn's arbiter binds the sockets, forks, and supervises; each worker runs
fastserve's `Server` (with the same heartbeat and signal policy as a worker of
fastserve's own supervisor) on gunicorn's sockets, with gunicorn's settings:

    bind / backlog / certfile, keyfile, ssl_context...  sockets, listen backlog, TLS
    keepalive                     --timeout-keep-alive
    timeout                       notify() heartbeat from inside the event loop
    graceful_timeout              --timeout-graceful-shutdown
    max_requests (+ jitter)       --limit-max-requests
    limit_request_line            --limit-request-line (414)
    limit_request_fields          --limit-request-fields (431)
    limit_request_field_size      --limit-request-field-size (431)
    forwarded_allow_ips           --forwarded-allow-ips
    threads                       --threads: a WSGI app's thread pool (Gunicorn's
                                  default: 1, its sync worker's one request at a time)
    proxy_protocol (off|v1|v2|auto, or gunicorn < 27's true: v1)   --proxy-protocol;
    proxy_allow_ips               added to --forwarded-allow-ips (fastserve has one
                                  list of trusted peers for both)
    accesslog / errorlog / loglevel   the fastserve.access / fastserve.error loggers
    access_log_format             --access-log-format (gunicorn's default included)
    statsd_host, statsd_prefix, dogstatsd_tags   --statsd-*: each worker sends its
                                  requests, status codes, durations and log counts
                                  (the arbiter sends gunicorn.workers and its own)

$FASTSERVE_LOG_FORMAT=json (as `fastserve --log-format json`) makes fastserve's records
JSON lines in gunicorn's log files and streams; gunicorn's own lines keep its format.

Signals, as gunicorn's own workers: TERM graceful stop, INT and QUIT immediate stop,
USR1 reopen log files, WINCH ignored, ABRT (from the arbiter on timeout) log the
stack and exit. `gunicorn --reload` stops the worker gracefully on every change and
the arbiter starts a new one on the new code.

Needs gunicorn: `pip install 'fastserve[gunicorn]'`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from fastserve import gunicorn_config
from fastserve.config import Config
from fastserve.statsd import address_option
from fastserve.supervisors.worker import WorkerServer, heartbeat_interval_for

# gunicorn allows up to this many header fields; 0 there means "no limit".
MAX_REQUEST_FIELDS = 32768
# gunicorn has no log-format setting: the one the fastserve command reads from the
# environment (click's FASTSERVE_ prefix) selects it here too.
LOG_FORMAT_ENV = "FASTSERVE_LOG_FORMAT"


def trusted_peers(*lists) -> list:
    """gunicorn's lists of trusted peers (strings or lists of addresses), as one."""
    peers: list = []
    for entries in lists:
        if isinstance(entries, str):
            entries = entries.split(",")
        for entry in entries:
            entry = str(entry).strip()
            if entry and entry not in peers:
                peers.append(entry)
    return peers


class SameStreamHandler(logging.Handler):
    """Writes records, in its own format, to whatever stream one of gunicorn's
    handlers has open now (USR1 reopens it), so that gunicorn's handler keeps its
    format for gunicorn's lines. A handler without a stream (syslog) handles the
    record itself."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(target.level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        target = self.target
        if getattr(target, "stream", None) is None:
            target.handle(record)
            return
        try:
            line = self.format(record)
            target.acquire()
            try:
                target.stream.write(line + "\n")
                target.stream.flush()
            finally:
                target.release()
        except Exception:
            self.handleError(record)


class FastserveWorker(Worker):
    """fastserve's protocol (C when built) on uvloop when installed."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "auto"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        log_format = os.environ.get(LOG_FORMAT_ENV, "text")
        for name, gunicorn_logger in (
            ("fastserve", self.log.error_log),
            ("fastserve.error", self.log.error_log),
            ("fastserve.access", self.log.access_log),
        ):
            target = logging.getLogger(name)
            target.handlers = (
                gunicorn_logger.handlers
                if log_format == "text"
                else [SameStreamHandler(handler) for handler in gunicorn_logger.handlers]
            )
            if name != "fastserve":
                target.setLevel(gunicorn_logger.level)
            target.propagate = False

        config_kwargs: dict[str, Any] = {
            "app": None,
            "log_config": None,
            "access_log": bool(cfg.accesslog),
            "access_log_format": cfg.access_log_format,
            "log_format": log_format,
            "timeout_keep_alive": gunicorn_config.keepalive(cfg.keepalive),
            "timeout_graceful_shutdown": cfg.graceful_timeout,
            "limit_max_requests": self.max_requests if self.max_requests < sys.maxsize else None,
            "limit_request_line": max(0, cfg.limit_request_line),
            "limit_request_fields": cfg.limit_request_fields or MAX_REQUEST_FIELDS,
            "limit_request_field_size": max(0, cfg.limit_request_field_size),
            "forwarded_allow_ips": cfg.forwarded_allow_ips,
            # a WSGI app's thread pool (gunicorn's gthread worker's), and what its
            # environ says of the processes (wsgi.multiprocess)
            "threads": cfg.threads,
            "workers": cfg.workers,
        }
        # Gunicorn 25+'s http_protocols ("h2,h1"); the setting is absent before
        config_kwargs["http2"] = gunicorn_config.wants_http2(getattr(cfg, "http_protocols", ()))
        if config_kwargs["http2"]:  # (its initial window's default is 64 KiB, not taken)
            config_kwargs["h2_max_concurrent_streams"] = cfg.http2_max_concurrent_streams
            config_kwargs["h2_max_inbound_frame_size"] = cfg.http2_max_frame_size
        if cfg.statsd_host:
            config_kwargs.update(
                statsd_host=address_option(cfg.statsd_host),
                statsd_prefix=cfg.statsd_prefix,
                dogstatsd_tags=cfg.dogstatsd_tags,
            )
        proxy_protocol = getattr(cfg, "proxy_protocol", "off")
        if proxy_protocol is True:  # gunicorn < 27: a flag, PROXY v1 only
            proxy_protocol = "v1"
        if proxy_protocol not in (False, None, "off"):
            config_kwargs["proxy_protocol"] = proxy_protocol
            config_kwargs["forwarded_allow_ips"] = trusted_peers(
                cfg.forwarded_allow_ips, cfg.proxy_allow_ips
            )
        if cfg.backlog:
            config_kwargs["backlog"] = cfg.backlog
        if cfg.is_ssl:
            options = cfg.ssl_options
            config_kwargs.update(
                ssl_keyfile=options.get("keyfile"),
                ssl_certfile=options.get("certfile"),
                ssl_keyfile_password=options.get("password"),
                ssl_cert_reqs=options.get("cert_reqs", 0),
                ssl_ca_certs=options.get("ca_certs"),
            )
            if options.get("ssl_version") is not None:
                config_kwargs["ssl_version"] = options["ssl_version"]
            if options.get("ciphers"):
                config_kwargs["ssl_ciphers"] = options["ciphers"]
        config_kwargs.update(self.CONFIG_KWARGS)
        self.config = Config(**config_kwargs)

    def init_signals(self) -> None:
        # The event loop installs the handlers (WorkerServer.install_signal_handlers);
        # reset gunicorn's so that none of them runs sys.exit() inside the loop.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def run(self) -> None:
        config = self.config
        config.app = self.wsgi
        config.load()
        if config.is_ssl:
            config.ssl = self.ssl_context()
        server = WorkerServer(
            config,
            notify=self.notify,
            heartbeat_interval=heartbeat_interval_for(self.timeout or 4.0),
            fast_signals=(signal.SIGINT, signal.SIGQUIT),
            on_abort=lambda: self.cfg.worker_abort(self),
            on_fast_exit=lambda: self.cfg.worker_int(self),
            on_usr1=self.log.reopen_files,
            should_stop=lambda: not self.alive,
            own_statsd=True,
        )
        server.run(sockets=[getattr(sock, "sock", sock) for sock in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def ssl_context(self) -> Any:
        """gunicorn's own TLS context (honours its `ssl_context` hook), else ours."""
        try:
            from gunicorn.sock import ssl_context
        except ImportError:
            return self.config.ssl
        return ssl_context(self.cfg)


class FastserveAsyncioWorker(FastserveWorker):
    """The same on the standard asyncio event loop (no uvloop)."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "auto"}
