"""--statsd-host: the counters of metrics.py sent to a StatsD server over UDP (or a
unix datagram socket), under Gunicorn's metric names, so that its dashboards keep
working after the switch.

The protocols count responses into `ProcessMetrics` as for --metrics-port (no
per-request work beyond that); a `StatsdReporter` sends what changed once per
`SEND_INTERVAL`: from the server's loop for one process, from the master's loop
(over the workers' summed reports) with --workers, from each worker under
Gunicorn's arbiter (with its statsd_host; the arbiter sends the workers gauge).
Per interval:

    gunicorn.requests:N|c                 responses sent
    gunicorn.request.status.CODE:N|c      responses sent with that status
    gunicorn.request.duration:MS|ms|@R    the interval's mean duration in milliseconds,
                                          sampled at R = 1/N so that StatsD counts N
                                          timings (its mean, sum and count are exact;
                                          its percentiles are those of the means)
    gunicorn.log.LEVEL:N|c                warnings, errors, critical errors and errors
                                          with a traceback ("exception") of fastserve.error
    gunicorn.workers:N|g                  worker processes running

each after --statsd-prefix, and with --dogstatsd-tags as `|#TAGS`.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Optional, Union

from fastserve.metrics import LOG_COUNTS, Totals, View

logger = logging.getLogger("fastserve.error")

DEFAULT_PORT = 8125
# Seconds between sends: StatsD aggregates over its own flush interval (10 s by default).
SEND_INTERVAL = 1.0
# Lines go into datagrams of at most this many bytes (fits a 1500-byte MTU).
MAX_DATAGRAM = 1432
UNIX_PREFIXES = ("unix://", "unix:")
HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")
MAX_PORT = 65535


def parse_statsd_address(value: str) -> tuple[int, object]:
    """`HOST[:PORT]`, `[IPV6][:PORT]` (port 8125 by default) or `unix:PATH` /
    `unix://PATH` -> (address family, address); ValueError with the reason."""
    for prefix in UNIX_PREFIXES:
        if value.startswith(prefix):
            path = value[len(prefix) :]
            if not path:
                raise ValueError("unix: needs a socket path")
            return socket.AF_UNIX, path
    match = HOST_PORT.match(value)
    if match is None:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    port = int(match["port"] or DEFAULT_PORT)
    if not 0 < port <= MAX_PORT:
        raise ValueError(f"the port must be between 1 and {MAX_PORT}")
    if match["v6"] is not None:
        return socket.AF_INET6, (match["v6"], port)
    return socket.AF_INET, (match["host"], port)


def resolve(host: str) -> tuple[int, object]:
    """The address family and the address to send to: a host name is resolved once,
    here, so that no send waits for DNS (OSError when it does not resolve)."""
    family, address = parse_statsd_address(host)
    if family == socket.AF_UNIX:
        return family, address
    name, port = address
    family_wanted = family if family == socket.AF_INET6 else socket.AF_UNSPEC
    infos = socket.getaddrinfo(name, port, family_wanted, socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def metric_prefix(prefix: str) -> str:
    """--statsd-prefix as Gunicorn applies it: with one trailing dot, or nothing."""
    stripped = prefix.rstrip(".")
    return f"{stripped}." if stripped else ""


class StatsdReporter:
    """Sends the change of a `View`'s counters since the last send."""

    def __init__(
        self, host: str, prefix: str = "", tags: str = "", workers_gauge: bool = True
    ) -> None:
        self.host = host
        # Off in a worker under Gunicorn, whose arbiter sends gunicorn.workers itself.
        self.workers_gauge = workers_gauge
        self.prefix = metric_prefix(prefix)
        self.suffix = f"|#{tags}" if tags else ""
        family, self.address = resolve(host)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent = Totals()
        self.sent_at = time.monotonic()
        self.failing = False

    def due(self) -> bool:
        return time.monotonic() - self.sent_at >= SEND_INTERVAL

    def report(self, view: View) -> None:
        """Send what changed since the last report (and the workers gauge)."""
        self.sent_at = time.monotonic()
        lines = self.lines(view.totals, view.workers)
        self.sent = view.totals.copy()
        for datagram in pack(lines):
            self.send(datagram)

    def lines(self, totals: Totals, workers: int) -> list[str]:
        by_status: dict[int, int] = {}
        for (_, _, status), count in totals.requests.items():
            by_status[status] = by_status.get(status, 0) + count
        for (_, _, status), count in self.sent.requests.items():
            by_status[status] -= count
        requests = sum(by_status.values())
        lines = []
        if requests:
            lines.append(f"gunicorn.requests:{requests}|c")
            lines.extend(
                f"gunicorn.request.status.{status}:{count}|c"
                for status, count in sorted(by_status.items())
                if count
            )
            seconds = sum(totals.duration_sum.values()) - sum(self.sent.duration_sum.values())
            mean_ms = seconds * 1000 / requests
            rate = "" if requests == 1 else f"|@{1 / requests:.6g}"
            lines.append(f"gunicorn.request.duration:{mean_ms:.3f}|ms{rate}")
        for name, now, sent in zip(LOG_COUNTS, totals.log_records, self.sent.log_records):
            if now > sent:
                lines.append(f"gunicorn.log.{name}:{now - sent}|c")
        if self.workers_gauge:
            lines.append(f"gunicorn.workers:{workers}|g")
        return [f"{self.prefix}{line}{self.suffix}" for line in lines]

    def send(self, datagram: bytes) -> None:
        try:
            self.sock.sendto(datagram, self.address)
        except OSError as exc:
            # StatsD is best effort: one line when sending starts failing, not one a second.
            if not self.failing:
                logger.warning("Cannot send metrics to StatsD at %s: %s", self.host, exc)
            self.failing = True
        else:
            self.failing = False

    def close(self) -> None:
        self.sock.close()


def pack(lines: list[str]) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most MAX_DATAGRAM bytes."""
    datagrams: list[bytes] = []
    current = b""
    for line in lines:
        encoded = line.encode("ascii")
        if current and len(current) + 1 + len(encoded) > MAX_DATAGRAM:
            datagrams.append(current)
            current = b""
        current = current + b"\n" + encoded if current else encoded
    if current:
        datagrams.append(current)
    return datagrams


def create_reporter(
    host: Optional[str], prefix: str, tags: str, workers_gauge: bool = True
) -> Optional[StatsdReporter]:
    """The reporter for --statsd-host; None when it is not set, or its host does not
    resolve (then one warning: StatsD is best effort, the server serves all the same)."""
    if host is None:
        return None
    try:
        return StatsdReporter(host, prefix, tags, workers_gauge)
    except OSError as exc:
        logger.warning("Cannot send metrics to StatsD at %s: %s; not sending any", host, exc)
        return None


def address_option(address: Union[str, tuple]) -> str:
    """Gunicorn's parsed statsd_host (a unix path, or (host, port)) as --statsd-host."""
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
