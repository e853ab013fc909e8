"""Metrics (`--metrics-port`, and the counts statsd.py sends for --statsd-host): what
one process counts, how a worker reports it to its master, how the master sums the
reports, and the Prometheus `/metrics` endpoint.

- `ProcessMetrics` lives on a `ServerState` (`server_state.metrics`, None when
  metrics are off). The protocols count each complete response into its flat
  arrays (C mode through typed memoryviews of the same arrays); gauges are read
  from the server state when a report is taken. A `LogCounter` on the error log
  counts its warnings and errors (for StatsD) into the same object.
- A supervised worker writes `snapshot()` as a frame (`frame()`: 4-byte length,
  JSON) into its heartbeat pipe; any frame is also a heartbeat. `FrameReader`
  takes the frames apart in the master. Snapshots hold totals since the worker
  started, so a lost frame loses nothing the next one does not carry.
- `Aggregate` (the master) keeps each worker's latest snapshot and the summed
  counters of workers that exited, so that counters never go down.
- `Collector` turns the numbers into Prometheus metric families;
  `ScrapeReader` reads one HTTP request (h11) and answers it for `/metrics`, both for the
  asyncio endpoint of a single process (`serve_endpoint`) and the master's
  (`MasterEndpoint`, run from its select loop: the master forks, so no threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from array import array
from bisect import bisect_left
from collections import Counter
from http import HTTPStatus
from typing import Callable, NamedTuple, Optional

import h11

logger = logging.getLogger("fastserve.error")

# The `method` label: these, and "other" for any other method (bounded cardinality).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
OTHER_METHOD = "other"
METHOD_LABELS = (*METHODS, OTHER_METHOD)
METHOD_INDEX = {method: index for index, method in enumerate(METHODS)}
OTHER_METHOD_INDEX = len(METHODS)
# Response codes 100..599 (ASGI's range) index the per-method row of counters.
MIN_STATUS = 100
STATUS_SPAN = 500
# Upper bounds (seconds) of the request duration histogram, Prometheus' defaults.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# The `protocol` label of the request counter and the duration histogram: the HTTP
# version a request came in, as the access log's request line names it but HTTP/2 as
# RFC 9113 does. PROTOCOL_INDEX: its position, by the scope's `http_version`.
PROTOCOLS = ("HTTP/1.0", "HTTP/1.1", "HTTP/2")
PROTOCOL_INDEX = {"1.0": 0, "1.1": 1, "2": 2}
# One protocol's share of the flat arrays: its request counters, its histogram buckets
# (non-cumulative; the last one is +Inf).
REQUESTS_PER_PROTOCOL = len(METHOD_LABELS) * STATUS_SPAN
BUCKETS_PER_PROTOCOL = len(DURATION_BUCKETS) + 1
# Why the master replaced a worker (`fastserve_worker_restarts_total{reason}`).
RESTART_REASONS = ("exit", "healthcheck", "max_requests", "memory", "reload")
# The error log's records counted (--statsd-host sends them as gunicorn.log.NAME):
# an ERROR record with a traceback is an "exception", as Gunicorn's logger.exception.
LOG_COUNTS = ("critical", "error", "warning", "exception")
# How often the event loop's lateness is probed, and the window its maximum covers.
LAG_PROBE_INTERVAL = 0.05
LAG_WINDOW = 1.0

FRAME_HEADER = struct.Struct("!I")
# A frame larger than this is a broken pipe protocol, not a report.
MAX_FRAME = 16 * 1024 * 1024
# The endpoint reads at most this much of a request head, and waits this long for it.
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0
# The master serves this many scrapes at once at most (it drops older ones beyond).
MAX_MASTER_CONNECTIONS = 16
# The master blocks at most this long writing one scrape's answer.
ANSWER_TIMEOUT = 1.0
METRICS_PATH = b"/metrics"


def prometheus_missing() -> Optional[str]:
    """Why --metrics-port cannot work here, or None."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return "--metrics-port needs prometheus_client: pip install 'fastserve[metrics]'"
    return None


class ProcessMetrics:
    """One process's counters, counted by its protocols."""

    __slots__ = (
        "requests", "duration_buckets", "duration_sum", "response_bytes",
        "websockets_open", "loop_lag", "_lag_window_max", "_lag_window_end", "log_records",
    )  # fmt: skip

    def __init__(self) -> None:
        # requests[protocol index * REQUESTS_PER_PROTOCOL
        #          + method index * STATUS_SPAN + status - MIN_STATUS]
        self.requests = array("q", bytes(8 * len(PROTOCOLS) * REQUESTS_PER_PROTOCOL))
        # duration_buckets[protocol index * BUCKETS_PER_PROTOCOL + bucket]
        self.duration_buckets = array("q", bytes(8 * len(PROTOCOLS) * BUCKETS_PER_PROTOCOL))
        self.duration_sum = array("d", [0.0] * len(PROTOCOLS))  # by protocol index
        self.response_bytes = array("q", [0])
        self.log_records = array("q", bytes(8 * len(LOG_COUNTS)))  # by LOG_COUNTS
        self.websockets_open = 0
        self.loop_lag = 0.0  # the largest lateness of the last complete window
        self._lag_window_max = 0.0
        self._lag_window_end = time.monotonic() + LAG_WINDOW

    def count_response(
        self, http_version: str, method: str, status: int, duration: float, body_bytes: int
    ) -> None:
        """One complete response to a request of the scope's `http_version` (the pure
        mode's protocols and HTTP/2's; `_parser.pyx` does the same in C)."""
        protocol = PROTOCOL_INDEX[http_version]
        row = (
            protocol * REQUESTS_PER_PROTOCOL
            + METHOD_INDEX.get(method, OTHER_METHOD_INDEX) * STATUS_SPAN
        )
        self.requests[row + status - MIN_STATUS] += 1
        bucket = bisect_left(DURATION_BUCKETS, duration)
        self.duration_buckets[protocol * BUCKETS_PER_PROTOCOL + bucket] += 1
        self.duration_sum[protocol] += duration
        self.response_bytes[0] += body_bytes

    def observe_lag(self, lag: float) -> None:
        now = time.monotonic()
        if now >= self._lag_window_end:
            self.loop_lag = self._lag_window_max
            self._lag_window_max = 0.0
            self._lag_window_end = now + LAG_WINDOW
        if lag > self._lag_window_max:
            self._lag_window_max = lag

    async def probe_loop_lag(self) -> None:
        """Forever: how late a periodic timer fires is how long the loop was busy."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            self.observe_lag(max(0.0, loop.time() - before - LAG_PROBE_INTERVAL))

    def snapshot(self, server_state, max_requests_reached: bool = False) -> dict:
        """Totals since start and current gauges, as plain JSON values."""
        counted = [
            (
                PROTOCOLS[index // REQUESTS_PER_PROTOCOL],
                METHOD_LABELS[index % REQUESTS_PER_PROTOCOL // STATUS_SPAN],
                MIN_STATUS + index % STATUS_SPAN,
                count,
            )
            for index, count in enumerate(self.requests)
            if count
        ]
        buckets = self.duration_buckets
        return {
            "requests": counted,
            # by protocol, those that served a request
            "duration_buckets": {
                protocol: list(buckets[at : at + BUCKETS_PER_PROTOCOL])
                for protocol, at in zip(PROTOCOLS, range(0, len(buckets), BUCKETS_PER_PROTOCOL))
                if any(buckets[at : at + BUCKETS_PER_PROTOCOL])
            },
            "duration_sum": dict(zip(PROTOCOLS, self.duration_sum)),
            "response_bytes": self.response_bytes[0],
            "log_records": list(self.log_records),
            "in_flight": len(server_state.tasks),
            "connections": len(server_state.connections),
            "websockets": self.websockets_open,
            "loop_lag": max(self.loop_lag, self._lag_window_max),
            "max_requests_reached": max_requests_reached,
        }


class LogCounter(logging.Handler):
    """Counts the error log's warnings and errors into an array (by LOG_COUNTS)
    from `attach()` to `detach()` (a forked worker detaches its master's)."""

    def __init__(self, counts: array) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts
        self.logger = logging.getLogger("fastserve.error")

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            name = "critical"
        elif record.levelno >= logging.ERROR:
            name = "exception" if record.exc_info else "error"
        else:
            name = "warning"
        self.counts[LOG_COUNTS.index(name)] += 1

    def attach(self) -> None:
        self.logger.addHandler(self)

    def detach(self) -> None:
        self.logger.removeHandler(self)


# -- worker -> master --------------------------------------------------------------


# What a worker with metrics off reports once it reached --max-requests (a snapshot
# carries the same key): its master starts the replacement while it drains.
MAX_REQUESTS_NOTICE = {"max_requests_reached": True}


def frame(snapshot: Optional[dict]) -> bytes:
    """A report for the heartbeat pipe; None: a bare heartbeat (metrics off)."""
    payload = b"" if snapshot is None else json.dumps(snapshot, separators=(",", ":")).encode()
    return FRAME_HEADER.pack(len(payload)) + payload


class FrameReader:
    """The master's side of one worker's pipe: bytes in, complete reports out."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Optional[dict]]:
        self.buffer += data
        reports: list[Optional[dict]] = []
        while len(self.buffer) >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(self.buffer)
            if size > MAX_FRAME:
                raise ValueError(f"a worker report of {size} bytes")
            end = FRAME_HEADER.size + size
            if len(self.buffer) < end:
                break
            payload = bytes(self.buffer[FRAME_HEADER.size : end])
            del self.buffer[:end]
            reports.append(json.loads(payload) if payload else None)
        return reports


class Totals:
    """Counters summed over snapshots: `requests` by (protocol, method, status), the
    histogram's buckets and sums by protocol (PROTOCOLS' labels; those seen)."""

    __slots__ = ("requests", "duration_buckets", "duration_sum", "response_bytes", "log_records")

    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.duration_buckets: dict[str, list[int]] = {}
        self.duration_sum: Counter = Counter()
        self.response_bytes = 0
        self.log_records = [0] * len(LOG_COUNTS)

    def add(self, snapshot: dict) -> None:
        for protocol, method, status, count in snapshot["requests"]:
            self.requests[protocol, method, status] += count
        for protocol, counts in snapshot["duration_buckets"].items():
            buckets = self.duration_buckets.setdefault(protocol, [0] * BUCKETS_PER_PROTOCOL)
            for index, count in enumerate(counts):
                buckets[index] += count
        self.duration_sum.update(snapshot["duration_sum"])
        self.response_bytes += snapshot["response_bytes"]
        for index, count in enumerate(snapshot["log_records"]):
            self.log_records[index] += count

    def copy(self) -> Totals:
        other = Totals()
        other.requests = Counter(self.requests)
        other.duration_buckets = {
            protocol: list(b) for protocol, b in self.duration_buckets.items()
        }
        other.duration_sum = Counter(self.duration_sum)
        other.response_bytes = self.response_bytes
        other.log_records = list(self.log_records)
        return other


class View(NamedTuple):
    """Everything one scrape shows."""

    totals: Totals
    in_flight: int
    connections: int
    websockets: int
    loop_lag: float
    workers: int
    restarts: dict


def single_process_view(metrics: ProcessMetrics, server_state) -> View:
    snapshot = metrics.snapshot(server_state)
    totals = Totals()
    totals.add(snapshot)
    restarts = dict.fromkeys(RESTART_REASONS, 0)
    return View(
        totals,
        snapshot["in_flight"],
        snapshot["connections"],
        snapshot["websockets"],
        snapshot["loop_lag"],
        1,
        restarts,
    )


class Aggregate:
    """The master's numbers: the latest report of each live worker, the totals of
    workers that are gone, and the restarts by reason."""

    def __init__(self) -> None:
        self.latest: dict[int, dict] = {}
        self.gone = Totals()
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        # the master's own warnings and errors (a worker died, was killed...)
        self.log_records = array("q", bytes(8 * len(LOG_COUNTS)))
        self.log_counter = LogCounter(self.log_records)

    def report(self, pid: int, snapshot: dict) -> None:
        self.latest[pid] = snapshot

    def worker_gone(self, pid: int) -> None:
        snapshot = self.latest.pop(pid, None)
        if snapshot is not None:
            self.gone.add(snapshot)

    def restarted(self, reason: str) -> None:
        self.restarts[reason] += 1

    def view(self, workers: int) -> View:
        totals = self.gone.copy()
        for snapshot in self.latest.values():
            totals.add(snapshot)
        for index, count in enumerate(self.log_records):
            totals.log_records[index] += count
        live = self.latest.values()
        return View(
            totals,
            sum(s["in_flight"] for s in live),
            sum(s["connections"] for s in live),
            sum(s["websockets"] for s in live),
            max((s["loop_lag"] for s in live), default=0.0),
            workers,
            dict(self.restarts),
        )


# -- exposition --------------------------------------------------------------------


class Collector:
    """A prometheus_client collector over a `View` taken at each scrape."""

    def __init__(self, take_view: Callable[[], View]) -> None:
        self.take_view = take_view

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        view = self.take_view()
        totals = view.totals
        requests = CounterMetricFamily(
            "fastserve_requests",
            "Responses sent, by method, status code and HTTP version.",
            labels=["method", "code", "protocol"],
        )
        for (protocol, method, status), count in sorted(totals.requests.items()):
            requests.add_metric([method, str(status), protocol], count)
        yield requests
        durations = HistogramMetricFamily(
            "fastserve_request_duration_seconds",
            "Seconds from a request's complete head to its response's last byte, by HTTP version.",
            labels=["protocol"],
        )
        for protocol, counts in sorted(totals.duration_buckets.items()):
            durations.add_metric(
                [protocol], cumulative_buckets(counts), totals.duration_sum[protocol]
            )
        yield durations
        yield CounterMetricFamily(
            "fastserve_response_bytes",
            "Response body bytes sent (without heads and chunk framing).",
            value=totals.response_bytes,
        )
        gauges = (
            ("fastserve_requests_in_flight", "App calls running (HTTP requests, WebSocket sessions).", view.in_flight),
            ("fastserve_connections_open", "Open client connections (HTTP and WebSocket).", view.connections),
            ("fastserve_websocket_connections_open", "Open WebSocket connections.", view.websockets),
            ("fastserve_workers", "Worker processes running.", view.workers),
            (
                "fastserve_event_loop_lag_seconds",
                "Largest lateness of a periodic event loop timer over the last second (max over workers).",
                view.loop_lag,
            ),
        )  # fmt: skip
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        restarts = CounterMetricFamily(
            "fastserve_worker_restarts", "Workers replaced, by reason.", labels=["reason"]
        )
        for reason, count in view.restarts.items():
            restarts.add_metric([reason], count)
        yield restarts


def cumulative_buckets(counts: list[int]) -> list[tuple[str, int]]:
    """Prometheus' (upper bound, count up to it) pairs of one histogram's buckets."""
    bounds = [repr(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
    cumulative = 0
    buckets = []
    for bound, count in zip(bounds, counts):
        cumulative += count
        buckets.append((bound, cumulative))
    return buckets


def exposition(take_view: Callable[[], View]) -> Callable[[], bytes]:
    """A function that renders the Prometheus text format of the current numbers."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(take_view))
    return lambda: generate_latest(registry)


def render_response(method: bytes, target: bytes, render: Callable[[], bytes]) -> bytes:
    """The whole HTTP/1.1 answer (then close) to one request."""
    from prometheus_client import CONTENT_TYPE_LATEST

    if method not in (b"GET", b"HEAD"):
        status, body, content_type = b"405 Method Not Allowed", b"GET /metrics\n", "text/plain"
    elif target.split(b"?", 1)[0] != METRICS_PATH:
        status, body, content_type = b"404 Not Found", b"Not Found\n", "text/plain"
    else:
        status, body, content_type = b"200 OK", render(), CONTENT_TYPE_LATEST
    return response_head(status, content_type, len(body)) + (b"" if method == b"HEAD" else body)


def response_head(status: bytes, content_type: str, length: int) -> bytes:
    """The head of an answer of `length` body bytes, after which the connection closes."""
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status,
        content_type.encode("latin-1"),
        length,
    )


class ScrapeReader:
    """One scrape's request, read by h11 (a dependency already: the pure mode's
    parser) as its bytes arrive, for both endpoints. `feed(data)` returns the whole
    answer once the head is complete, None while it is not; a head that is malformed
    or bigger than MAX_REQUEST_HEAD gets the status h11 names (400, 431)."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)

    def feed(self, data: bytes) -> Optional[bytes]:
        self.connection.receive_data(data)
        try:
            event = self.connection.next_event()
        except h11.RemoteProtocolError as exc:
            status = HTTPStatus(exc.error_status_hint)
            body = status.phrase.encode("latin-1") + b"\n"
            status_line = b"%d %s" % (status.value, status.phrase.encode("latin-1"))
            return response_head(status_line, "text/plain", len(body)) + body
        if isinstance(event, h11.Request):
            return render_response(event.method, event.target, self.render)
        return None


# -- single process: an endpoint on the server's own loop --------------------------


class EndpointProtocol(asyncio.Protocol):
    def __init__(self, render: Callable[[], bytes]) -> None:
        self.reader = ScrapeReader(render)
        self.transport = None
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, transport.close)

    def connection_lost(self, exc) -> None:
        self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        answer = self.reader.feed(data)
        if answer is not None:
            self.transport.write(answer)
            self.transport.close()


async def serve_endpoint(
    host: str, port: int, take_view: Callable[[], View]
) -> asyncio.AbstractServer:
    render = exposition(take_view)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EndpointProtocol(render), host=host, port=port, reuse_address=True
    )
    log_endpoint(server.sockets[0])
    return server


def log_endpoint(sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    logger.info("Metrics on http://%s:%d%s", host, port, METRICS_PATH.decode())


# -- the master: an endpoint served from its select loop ---------------------------


class MasterEndpoint:
    """`/metrics` in the supervisor, which has no event loop and must not start
    threads (it forks): a non-blocking listener and its scrapes, which the master's
    `select` watches (`fds()`), handled by `ready(fd)`."""

    def __init__(self, host: str, port: int, take_view: Callable[[], View]) -> None:
        self.render = exposition(take_view)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(MAX_MASTER_CONNECTIONS)
        self.listener.setblocking(False)
        # fd -> (socket, its request so far, deadline)
        self.scrapes: dict[int, tuple[socket.socket, ScrapeReader, float]] = {}
        log_endpoint(self.listener)

    def fds(self) -> list[int]:
        return [self.listener.fileno(), *self.scrapes]

    def owns(self, fd: int) -> bool:
        return fd == self.listener.fileno() or fd in self.scrapes

    def ready(self, fd: int) -> None:
        if fd == self.listener.fileno():
            self._accept()
            return
        sock, reader, _ = self.scrapes[fd]
        try:
            chunk = sock.recv(MAX_REQUEST_HEAD)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(fd)
            return
        answer = reader.feed(chunk)
        if answer is not None:
            self._answer(fd, answer)

    def expire(self) -> None:
        now = time.monotonic()
        for fd, (_, _, deadline) in list(self.scrapes.items()):
            if now >= deadline:
                self._drop(fd)

    def close(self) -> None:
        for fd in list(self.scrapes):
            self._drop(fd)
        self.listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        if len(self.scrapes) >= MAX_MASTER_CONNECTIONS:
            self._drop(min(self.scrapes, key=lambda fd: self.scrapes[fd][2]))
        reader = ScrapeReader(self.render)
        self.scrapes[sock.fileno()] = (sock, reader, time.monotonic() + REQUEST_TIMEOUT)

    def _answer(self, fd: int, response: bytes) -> None:
        sock = self.scrapes[fd][0]
        # A scrape is a few KiB: the socket's send buffer takes it at once, or soon.
        sock.settimeout(ANSWER_TIMEOUT)
        with contextlib.suppress(OSError):
            sock.sendall(response)
        self._drop(fd)

    def _drop(self, fd: int) -> None:
        sock = self.scrapes.pop(fd)[0]
        sock.close()
