"""Helpers of tests/test_floods.py, tests/test_soak.py and tests/test_wsgi_limits.py:
what a server process holds (/proc: RSS and its peak, descriptors, CPU time, a
socket's unread bytes), the wait for a count that stopped growing, and many
non-blocking client sockets driven by one selector."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import time

from process_util import wait_until

# SO_LINGER on, 0 seconds: close() sends a RST (and leaves no TIME_WAIT behind).
LINGER_RESET = struct.pack("ii", 1, 0)
# Bytes read at a time from one socket.
RECV_SIZE = 65536
# Polls (STALL_POLL apart) with no progress before a stream or upload counts as stalled.
STALL_POLLS = 4
STALL_POLL = 0.25


# -- the server process, from /proc ------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    """A memory figure of `pid` in KiB (/proc/PID/status: "VmRSS", "VmHWM"...)."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (VmRSS)."""
    return status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The peak resident memory of `pid` so far in KiB (VmHWM)."""
    return status_kib(pid, "VmHWM")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def open_files_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of `pid` (/proc/PID/limits)."""
    with open(f"/proc/{pid}/limits") as file:
        for line in file:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open files limit in /proc/{pid}/limits")


def unread_bytes(server_port: int, client: socket.socket) -> int:
    """Bytes in the receive queue of the server's end of `client`'s connection (the
    server has not read them), from /proc/net/tcp; -1 when it is not there."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as file:
        next(file)
        for line in file:
            fields = line.split()
            if (
                int(fields[1].rsplit(":", 1)[1], 16) == server_port
                and int(fields[2].rsplit(":", 1)[1], 16) == client_port
            ):
                return int(fields[4].split(":")[1], 16)
    return -1


def wait_stalled(read_value, what: str, timeout: float = 60):
    """Poll `read_value()` until it has not changed for STALL_POLLS polls (and is not
    zero); returns it."""
    history: list = []

    def stalled():
        history.append(read_value())
        recent = history[-STALL_POLLS:]
        return len(recent) == STALL_POLLS and len(set(recent)) == 1 and recent[0]

    wait_until(stalled, timeout, interval=STALL_POLL, message=what)
    return history[-1]


# -- many client sockets ---------------------------------------------------------------------


def connect_many(port: int, count: int, batch: int = 1000, timeout: float = 60) -> list:
    """`count` non-blocking TCP connections to 127.0.0.1:`port`, opened `batch` at a
    time (each batch fits in the listen backlog), in the order they connected."""
    connected: list = []
    with selectors.DefaultSelector() as selector:
        for start in range(0, count, batch):
            pending = 0
            for _ in range(min(batch, count - start)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex(("127.0.0.1", port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise OSError(code, f"connect: {os.strerror(code)}")
                selector.register(sock, selectors.EVENT_WRITE)
                pending += 1
            deadline = time.monotonic() + timeout
            while pending:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{pending} connections not established in {timeout}s"
                for key, _ in selector.select(remaining):
                    sock = key.fileobj
                    selector.unregister(sock)
                    pending -= 1
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert code == 0, f"connect: {os.strerror(code)}"
                    connected.append(sock)
    return connected


def reset_all(socks) -> None:
    """Close every socket with a RST."""
    for sock in socks:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
        sock.close()


def response_end(buf, start: int = 0) -> int:
    """Where the response at `start` in `buf` ends (a head with Content-Length, or a
    head without a body, as the server's canned answers); -1: not complete yet."""
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return -1
    at = buf.find(b"content-length: ", start, head_end)
    length = 0 if at < 0 else int(buf[at + 16 : buf.find(b"\r", at + 16)])
    end = head_end + 4 + length
    return end if len(buf) >= end else -1


def status_of(response: bytes) -> int:
    return int(response[9:12])


def exchange(socks, request: bytes, timeout: float = 120) -> list:
    """Send `request` on every socket, then read one response from each (all at once);
    returns [(response bytes, seconds from the send to its last byte)] in order."""
    sent_at = {}
    for sock in socks:
        sent_at[sock] = time.monotonic()
        # a few bytes on a socket with nothing in flight: never a partial send
        assert sock.send(request) == len(request)
    buffers = {sock: bytearray() for sock in socks}
    answers: dict = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while len(answers) < len(socks):
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"{len(socks) - len(answers)} of {len(socks)} requests not answered in {timeout}s"
            )
            for key, _ in selector.select(remaining):
                sock = key.fileobj
                try:
                    data = sock.recv(RECV_SIZE)
                except ConnectionResetError:
                    data = b""
                buf = buffers[sock]
                assert data, f"connection closed before an answer; got {bytes(buf)!r}"
                buf += data
                end = response_end(buf)
                if end >= 0:
                    answers[sock] = (bytes(buf[:end]), time.monotonic() - sent_at[sock])
                    selector.unregister(sock)
    return [answers[sock] for sock in socks]


def report(what: str, **figures) -> None:
    """Print measured figures (shown with `pytest -s`; the README quotes them)."""
    print(f"\n[flood] {what}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))
