"""systemd integration without libsystemd: socket activation and readiness notification.

Socket activation (sd_listen_fds(3)): systemd starts the service with its listening
sockets already bound on fds 3 .. 3 + LISTEN_FDS - 1, and LISTEN_PID set to the pid
they are meant for. Readiness (sd_notify(3)): the service sends one-line datagrams
("READY=1", "RELOADING=1", "STOPPING=1") to the unix socket named by NOTIFY_SOCKET.
Both are read from the environment of this process; without those variables
nothing here does anything.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from fastserve.config import ConfigError

logger = logging.getLogger("fastserve.error")

# The first descriptor systemd passes (SD_LISTEN_FDS_START): 0-2 are stdio.
LISTEN_FDS_START = 3
# The variables of socket activation, unset once read (as sd_listen_fds(1) does) so
# that a child process does not take the sockets for its own.
LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

READY = "READY=1"
STOPPING = "STOPPING=1"
NANOSECONDS_PER_MICROSECOND = 1000


def listen_sockets() -> list[socket.socket]:
    """The listening sockets systemd passed to this process ([] when it passed none),
    inheritable so that forked workers share them; they take the place of
    --host/--port, --uds and --fd."""
    count = os.environ.get("LISTEN_FDS")
    meant_for = os.environ.get("LISTEN_PID")
    for name in LISTEN_VARIABLES:
        os.environ.pop(name, None)
    if count is None or meant_for is None or meant_for != str(os.getpid()):
        return []
    try:
        fds = range(LISTEN_FDS_START, LISTEN_FDS_START + int(count))
    except ValueError:
        raise ConfigError(f"LISTEN_FDS={count!r} is not a number of sockets") from None
    sockets = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)  # family and type from the descriptor
        except OSError as exc:
            raise ConfigError(
                f"fd {fd} passed by systemd (LISTEN_FDS) is not a socket: {exc.strerror}"
            ) from exc
        if sock.type != socket.SOCK_STREAM:
            raise ConfigError(
                f"fd {fd} passed by systemd (LISTEN_FDS) is not a stream socket: "
                "use ListenStream= in the .socket unit"
            )
        sock.set_inheritable(True)
        sockets.append(sock)
    if sockets:
        logger.info(
            "Serving on %d socket(s) passed by systemd (LISTEN_FDS); "
            "--host, --port, --uds and --fd are not used",
            len(sockets),
        )
    return sockets


def reloading_message() -> str:
    """The RELOADING message; Type=notify-reload wants the time the reload began."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // NANOSECONDS_PER_MICROSECOND
    return f"RELOADING=1\nMONOTONIC_USEC={now}"


def notify(message: str) -> None:
    """Send `message` to systemd's NOTIFY_SOCKET, when it is set (else do nothing)."""
    name = os.environ.get("NOTIFY_SOCKET")
    if not name:
        return
    address = "\0" + name[1:] if name.startswith("@") else name  # "@": an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.warning("Cannot notify systemd (NOTIFY_SOCKET=%s): %s", name, exc)
