"""Server: sockets, event loop, lifespan, connections, limits, graceful shutdown.

It knows protocols only through `config.http_protocol_class` and the contract they
share (built from `config.protocol_settings`, `shutdown()`, `abort()`, `server_state`), so the
supervisor and the Gunicorn worker can drive it with their own sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from email.utils import formatdate
from typing import Any, Callable, Optional

from fastserve import systemd
from fastserve.access_buffer import access_buffer
from fastserve.config import Config, ConfigError
from fastserve.logging import log_running
from fastserve.metrics import LogCounter, ProcessMetrics, serve_endpoint, single_process_view
from fastserve.process import OptionError, PidFile, drop_privileges, remove_unix_sockets
from fastserve.protocols import proxy_protocol
from fastserve.protocols.http2 import negotiation
from fastserve.statsd import StatsdReporter, create_reporter
from fastserve.watchdog import LoopWatchdog

logger = logging.getLogger("fastserve.error")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The main loop wakes this often: Date header, notify, exit checks.
TICK_SECONDS = 0.1
# After the listeners close, connections get this long to have their first
# request read (see shutdown()), and again after they were told to stop.
SHUTDOWN_SETTLE_SECONDS = 0.1


def freeze_startup_heap() -> None:
    """What the process holds once its app has started (modules, the app, what its
    lifespan made) is put out of the cyclic GC's reach (gc.freeze), its garbage
    collected first: a collection then walks the requests' objects, not the whole
    heap (it took a tenth of a small request's time). Objects still go when their
    last reference does."""
    gc.collect()
    gc.freeze()


class ServerState:
    """What every connection of one Server shares."""

    __slots__ = (
        "total_requests", "connections", "tasks", "default_head", "default_headers", "metrics",
    )  # fmt: skip

    def __init__(self, metrics: Optional[ProcessMetrics] = None) -> None:
        self.total_requests = 0
        # What the protocols count for --metrics-port; None when metrics are off.
        self.metrics = metrics
        self.connections: set = set()
        # The running app calls (HTTP requests, WebSocket connections) and the scope
        # of each: the watchdog names the request a stalled task serves.
        self.tasks: dict = {}
        # Date, Server and --header lines, refreshed each second; every response head has them.
        self.default_head = b""
        # The same headers as (name, value) pairs, for HTTP/2's response HEADERS.
        self.default_headers: list = []


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        metrics = ProcessMetrics() if config.collects_metrics else None
        self.server_state = ServerState(metrics)
        self.metrics_endpoint: Optional[asyncio.AbstractServer] = None
        # --statsd-host, for a server on its own (a supervised worker's master sends,
        # unless `own_statsd`: a worker under Gunicorn's arbiter sends its own).
        self.statsd: Optional[StatsdReporter] = None
        self.own_statsd = False
        self._lag_probe: Optional[asyncio.Task] = None
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.last_notified = 0.0
        self.servers: list[asyncio.base_events.Server] = []
        self.systemd_sockets: list[socket.socket] = []
        # Sockets a server on its own bound before importing the app (begin_process),
        # the files of its unix sockets among them, and its --pid file.
        self.bound_sockets: list[socket.socket] = []
        self.unix_paths: list[str] = []
        self.pidfile: Optional[PidFile] = None
        self._date_second = -1
        # A supervised worker's --timeout-worker-healthcheck, for the watchdog.
        self.heartbeat_timeout: Optional[float] = None
        self.watchdog: Optional[LoopWatchdog] = None
        # --limit-max-requests plus this process's share of --limit-max-requests-jitter.
        self.limit_max_requests = config.limit_max_requests
        if self.limit_max_requests is not None and config.limit_max_requests_jitter:
            self.limit_max_requests += random.randint(0, config.limit_max_requests_jitter)

    def run(self, sockets: Optional[Sequence[socket.socket]] = None) -> None:
        """Serve until stopped, in a new event loop of the configured kind."""
        try:
            loop_factory = self.config.get_loop_factory()
        except ConfigError as exc:
            logger.error("%s", exc)
            sys.exit(1)
        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(self.serve(sockets=sockets))
        else:
            loop = loop_factory()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(sockets=sockets))
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                asyncio.set_event_loop(None)
                loop.close()

    async def serve(self, sockets: Optional[Sequence[socket.socket]] = None) -> None:
        with self.capture_signals():
            await self._serve(sockets)

    async def _serve(self, sockets: Optional[Sequence[socket.socket]] = None) -> None:
        config = self.config
        # A worker is handed its sockets by its master, which also talks to systemd
        # and runs the master's hooks; a server on its own is its own master.
        on_its_own = sockets is None
        if on_its_own:
            self.begin_process()
        try:
            if not config.loaded:
                try:
                    config.load()
                except ConfigError as exc:
                    logger.error("%s", exc, exc_info=exc.exc_info)
                    sys.exit(1)
            self.lifespan = config.lifespan_class(config.loaded_app, config.lifespan)
            await self.serve_loaded(on_its_own, sockets)
        finally:
            if on_its_own:
                self.end_process()

    async def serve_loaded(
        self, on_its_own: bool, sockets: Optional[Sequence[socket.socket]]
    ) -> None:
        self.start_watchdog()
        log_counter = None
        if self.server_state.metrics is not None:
            log_counter = LogCounter(self.server_state.metrics.log_records)
            log_counter.attach()
        try:
            logger.info("Started server process [%d]", os.getpid())
            await self.startup(sockets=sockets)
            if self.should_exit:
                return
            if on_its_own:
                hooks = self.config.hooks
                hooks.run("post_worker_init", self.hook_worker)
                hooks.run("when_ready", self.hook_server)
                systemd.notify(systemd.READY)
            await self.main_loop()
            if on_its_own:
                systemd.notify(systemd.STOPPING)
            await self.shutdown()
            logger.info("Finished server process [%d]", os.getpid())
        finally:
            access_buffer.flush()
            if self.watchdog is not None:
                self.watchdog.stop()
            if log_counter is not None:
                log_counter.detach()

    def begin_process(self) -> None:
        """A server on its own is its own master and one worker: Gunicorn's on_starting
        hook, systemd's sockets, the early bind (--bind, --user/--group, --pid: before
        the app is imported, as Gunicorn's master binds), the pid file, post_fork, then
        the privileges are dropped."""
        config = self.config
        hooks = config.hooks
        self.hook_server = hooks.server(config, os.getpid(), num_workers=1)
        self.hook_worker = hooks.worker(config, age=1)
        hooks.run("on_starting", self.hook_server)
        try:
            self.systemd_sockets = systemd.listen_sockets()
            if config.binds_early and not self.systemd_sockets:
                self.bound_sockets = config.bind_sockets()
                self.unix_paths = config.unix_paths()
            if config.pidfile:
                self.pidfile = PidFile.create(config.pidfile)
            hooks.run("post_fork", self.hook_server, self.hook_worker)
            drop_privileges(config.uid, config.gid)
        except (ConfigError, OptionError) as exc:
            logger.error("%s", exc)
            self.release_process()
            sys.exit(1)

    def end_process(self) -> None:
        """At exit, on every path: worker_exit, the pid file and socket files go, on_exit."""
        self.config.hooks.run("worker_exit", self.hook_server, self.hook_worker)
        self.release_process()

    def release_process(self) -> None:
        if self.pidfile is not None:
            self.pidfile.remove()
        remove_unix_sockets(self.unix_paths)
        self.config.hooks.run("on_exit", self.hook_server)

    def start_watchdog(self) -> None:
        """Watch the loop from a thread: for --warn-loop-stall, and in a supervised
        worker for the heartbeat (fastserve/watchdog.py)."""
        warn_after = self.config.warn_loop_stall
        if warn_after is None and self.heartbeat_timeout is None:
            return
        self.watchdog = LoopWatchdog(
            asyncio.get_running_loop(), self.server_state.tasks, warn_after, self.heartbeat_timeout
        )
        self.watchdog.start()

    async def startup(self, sockets: Optional[Sequence[socket.socket]] = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            self.should_exit = True
            return
        self.update_default_headers()
        create_protocol, listener_ssl = self.protocol_factory()
        try:
            await self.start_serving(create_protocol, listener_ssl, sockets)
        except (OSError, ConfigError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            logger.error("Cannot start serving on %s: %s", self.bind_description(), message)
            await self.lifespan.shutdown()
            sys.exit(1)
        if sockets is None:
            self.log_started_message()
        await self.start_metrics(supervised=sockets is not None)
        freeze_startup_heap()
        self.started = True

    def protocol_factory(self) -> tuple[Callable[[], asyncio.Protocol], Any]:
        """What makes each connection's protocol, and the SSL context the listener
        takes (None under --proxy-protocol, whose reader starts TLS itself)."""
        config = self.config
        server_state = self.server_state
        protocol_class = config.http_protocol_class
        settings = config.protocol_settings
        app_state = self.lifespan.state

        def create_protocol() -> asyncio.Protocol:
            return protocol_class(settings=settings, server_state=server_state, app_state=app_state)

        if config.ssl is not None and settings.h2_protocol_class is not None:
            # --http2 over TLS: the protocol is the one ALPN chose, known after the handshake
            create_protocol = negotiation.alpn_factory(
                create_protocol, settings, server_state, app_state
            )
        if config.proxy_protocol == "off":
            return create_protocol, config.ssl
        # The header comes before the TLS handshake: the reader starts TLS itself.
        versions = proxy_protocol.VERSIONS[config.proxy_protocol]

        def create_proxy_header_reader() -> asyncio.Protocol:
            return proxy_protocol.ProxyHeaderReader(
                versions, settings, server_state, create_protocol, config.ssl
            )

        return create_proxy_header_reader, None

    async def start_serving(
        self,
        create_protocol: Callable[[], asyncio.Protocol],
        listener_ssl: Any,
        sockets: Optional[Sequence[socket.socket]],
    ) -> None:
        """Serve on the supervisor's `sockets`, else this server's own (systemd's,
        bound early, or bound now from --uds, --fd or --host/--port)."""
        config = self.config
        loop = asyncio.get_running_loop()
        listeners = sockets if sockets is not None else self.own_listeners()
        if listeners is not None:
            for sock in listeners:
                self.servers.append(
                    await loop.create_server(
                        create_protocol, sock=sock, ssl=listener_ssl, backlog=config.backlog
                    )
                )
        elif config.fd is not None or config.uds or config.is_ipv6_host:
            if config.uds or config.fd is not None:
                sock = config.bind_socket()
            else:  # as the supervisor binds it: `::` is dual-stack
                sock = config.bind_tcp_socket(reuse_port=config.reuse_port)
            create_server = loop.create_unix_server if config.uds else loop.create_server
            self.servers.append(
                await create_server(
                    create_protocol, sock=sock, ssl=listener_ssl, backlog=config.backlog
                )
            )
        else:
            self.servers.append(
                await loop.create_server(
                    create_protocol,
                    host=config.host,
                    port=config.port,
                    ssl=listener_ssl,
                    backlog=config.backlog,
                    reuse_address=True,
                    reuse_port=config.reuse_port or None,
                )
            )

    async def start_metrics(self, supervised: bool) -> None:
        """The loop-lag probe, and on a server on its own the /metrics endpoint and
        the StatsD reporter (a supervised worker reports to its master instead, and
        sends StatsD itself only when own_statsd)."""
        metrics = self.server_state.metrics
        if metrics is None:
            return
        config = self.config
        self._lag_probe = asyncio.get_running_loop().create_task(metrics.probe_loop_lag())
        if not supervised and config.metrics_port is not None:
            await self.start_metrics_endpoint(metrics)
        if not supervised or self.own_statsd:
            self.statsd = create_reporter(
                config.statsd_host,
                config.statsd_prefix,
                config.dogstatsd_tags,
                workers_gauge=not supervised,
            )

    def own_listeners(self) -> Optional[list[socket.socket]]:
        """A server on its own: systemd's sockets, or those it bound early, or None
        (it binds them now)."""
        return self.systemd_sockets or self.bound_sockets or None

    async def start_metrics_endpoint(self, metrics: ProcessMetrics) -> None:
        config = self.config
        try:
            self.metrics_endpoint = await serve_endpoint(
                config.metrics_host,
                config.metrics_port,
                lambda: single_process_view(metrics, self.server_state),
            )
        except OSError as exc:
            logger.error(
                "Cannot serve metrics on %s:%d: %s",
                config.metrics_host,
                config.metrics_port,
                exc.strerror or exc,
            )
            for server in self.servers:
                server.close()
            await self.lifespan.shutdown()
            sys.exit(1)

    def bind_description(self) -> str:
        config = self.config
        if self.systemd_sockets:
            return "the sockets passed by systemd"
        if config.uds:
            return f"unix socket {config.uds}"
        if config.fd is not None:
            return f"socket fd {config.fd}"
        return f"{config.host}:{config.port}"

    def log_started_message(self) -> None:
        scheme = "https" if self.config.is_ssl else "http"
        sockets = [sock for server in self.servers for sock in server.sockets]
        log_running(sockets, scheme, self.config.mode_details)

    async def main_loop(self) -> None:
        while not await self.on_tick():
            await asyncio.sleep(TICK_SECONDS)

    async def on_tick(self) -> bool:
        """Ten times a second: refresh the Date header, notify, and decide to exit."""
        self.update_default_headers()
        if self.config.callback_notify is not None:
            now = time.monotonic()
            if now - self.last_notified > self.config.timeout_notify / 2:
                self.last_notified = now
                await self.config.callback_notify()
        if self.statsd is not None and self.statsd.due():
            self.report_statsd()
        if self.should_exit:
            return True
        max_requests = self.limit_max_requests
        if max_requests is not None and self.server_state.total_requests >= max_requests:
            logger.warning(
                "Maximum request limit of %d exceeded. Terminating process.", max_requests
            )
            return True
        return False

    def report_statsd(self) -> None:
        self.statsd.report(single_process_view(self.server_state.metrics, self.server_state))

    def update_default_headers(self) -> None:
        now = int(time.time())
        if now == self._date_second:
            return
        self._date_second = now
        headers = []
        if self.config.date_header:
            headers.append((b"date", formatdate(now, usegmt=True).encode("ascii")))
        headers.extend(self.config.encoded_headers)
        self.server_state.default_headers = headers
        self.server_state.default_head = b"".join(
            b"%s: %s\r\n" % (name, value) for name, value in headers
        )

    async def shutdown(self) -> None:
        logger.info("Shutting down")
        for server in self.servers:
            server.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        if self.server_state.connections:
            # A connection accepted just before the listeners closed usually has its
            # first request on the way: read it, so that shutdown() lets it finish
            # instead of resetting the connection (other processes share the socket).
            await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)

        for connection in list(self.server_state.connections):
            connection.shutdown()
        await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)

        try:
            await asyncio.wait_for(
                self._wait_for_requests(), timeout=self.config.timeout_graceful_shutdown
            )
        except asyncio.TimeoutError:
            await self.cut_connections()

        if not self.force_exit:
            await self.lifespan.shutdown()
        if self.statsd is not None:
            self.report_statsd()  # the last interval's responses
            self.statsd.close()

    async def cut_connections(self) -> None:
        """Past --timeout-graceful-shutdown (or on a forced exit): close the open
        connections, so that an app waiting in receive() gets http.disconnect
        (websocket.disconnect) and a streaming one fails its next send; cancel the
        app calls still running a moment later."""
        state = self.server_state
        if self.force_exit:
            reason = "forced exit"
        else:
            timeout = self.config.timeout_graceful_shutdown
            reason = f"timeout graceful shutdown exceeded ({timeout:g}s)"
        logger.error(
            "Closing %d open connection(s) and %d running app call(s): %s",
            len(state.connections),
            len(state.tasks),
            reason,
        )
        for connection in list(state.connections):
            connection.abort()
        if state.tasks:
            await asyncio.sleep(SHUTDOWN_SETTLE_SECONDS)
        for task in list(state.tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def _wait_for_requests(self) -> None:
        state = self.server_state
        if state.connections and not self.force_exit:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
            while state.connections and not self.force_exit:
                await asyncio.sleep(TICK_SECONDS)
        if state.tasks and not self.force_exit:
            logger.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
            while state.tasks and not self.force_exit:
                await asyncio.sleep(TICK_SECONDS)
        if self.force_exit:
            raise asyncio.TimeoutError

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The stop signals go to handle_exit while the server serves; the handlers are
        removed after. uvicorn's hook (0.29+): a subclass that handles signals itself
        (a server embedded in an app, or in a thread) overrides it."""
        self.install_signal_handlers()
        try:
            yield
        finally:
            self.remove_signal_handlers()

    def remove_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in HANDLED_SIGNALS:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
