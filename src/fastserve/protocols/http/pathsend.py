"""The ASGI `http.response.pathsend` extension, once for both HTTP modes: after
`http.response.start` an app may send `{"type": "http.response.pathsend", "path":
"/abs/path"}` instead of body messages, and the server sends that file's bytes
without copying them through the app.

The protocol's cycle checks the message (`asgi.response_pathsend`), opens the file
here, frames the response for the file's size (its own `_framing`, as for a body
of that size in one message), writes the head, and calls `send_file`:

- asyncio's own loop, plain TCP or unix socket: `loop.sendfile`, which waits for
  the write buffer to be empty and then calls `os.sendfile` on the socket (if that
  syscall fails before the first byte, asyncio reads and writes instead);
- uvloop (it has no `sendfile`) or another loop, plain TCP or unix socket: the
  same here: once the transport's write buffer is empty, `os.sendfile` on a
  duplicate of the socket's fd (the transport may close its own meanwhile),
  waiting for the socket to be writable in between; a failure before the first
  byte falls back to the read loop. The kernel reads the file on the loop's
  thread, as asyncio's `loop.sendfile` does;
- TLS, or no socket: a read loop, reads in the default executor (a slow disk never
  blocks the loop), writes with the protocol's flow control.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from typing import Optional

from fastserve.protocols.asgi import DISCONNECTED, PATHSEND, ASGIMessageError, ClientDisconnected
from fastserve.protocols.http import framing as fr
from fastserve.protocols.http.errors import CONTENT_LONGER, CONTENT_SHORTER
from fastserve.protocols.http.flow import FlowControl
from fastserve.protocols.utils import is_ssl

# Bytes read from the file per write in the read loop.
FILE_READ_SIZE = 262144


class OpenFile:
    """A file opened for a pathsend, and its size at opening. `close()` may come
    while a read of the file runs in the executor (the app's task was cancelled):
    the file is closed when that read is done, so its descriptor is never closed
    (and perhaps reused) under a running read."""

    __slots__ = ("file", "size", "reading")

    def __init__(self, file, size: int) -> None:
        self.file = file
        self.size = size
        self.reading: Optional[asyncio.Future] = None

    def close(self) -> None:
        reading = self.reading
        if reading is not None and not reading.done():
            reading.add_done_callback(self._close_now)
        else:
            self.file.close()

    def _close_now(self, _reading) -> None:
        self.file.close()


def open_path(path: str) -> OpenFile:
    """Open the regular file at `path` (the app's, already checked to be absolute).
    A path that cannot be opened is the app's message error: the response head is
    not written yet, so the client gets a 500."""
    try:
        # O_NONBLOCK: a FIFO at `path` must not block the loop in open() (it is
        # refused below); regular files ignore the flag.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ASGIMessageError(
            f"ASGI message {PATHSEND!r} names a file that cannot be opened: {exc}"
        ) from exc
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ASGIMessageError(
            f"ASGI message {PATHSEND!r} names a file that cannot be read: {exc}"
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ASGIMessageError(f"ASGI message {PATHSEND!r} names {path!r}, not a regular file")
    file = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by OpenFile.close()
    return OpenFile(file, info.st_size)


def length_error(content_length: int, size: int) -> Optional[str]:
    """The error when the app's Content-Length is not the file's size."""
    if size > content_length:
        return CONTENT_LONGER
    if size < content_length:
        return CONTENT_SHORTER
    return None


def chunk_frame(size: int, last: bool = True) -> tuple[bytes, bytes]:
    """The bytes before and after the file in a chunked response (the app said
    transfer-encoding: chunked, or trailers follow): the file is one chunk, then the
    last chunk (unless not `last`: a trailer section ends the body)."""
    end = fr.LAST_CHUNK if last else b""
    if not size:
        return end, b""
    return b"%x\r\n" % size, fr.CHUNK_END + end


async def send_file(transport, flow: FlowControl, opened: OpenFile) -> int:
    """Write the file's bytes (after the head, already written); return how many
    were written: fewer than its size when the file shrank meanwhile. Raises
    ClientDisconnected when the connection is gone (or closed) before the end."""
    loop = flow.loop
    if transport.is_closing():
        raise ClientDisconnected(DISCONNECTED)
    sock = transport.get_extra_info("socket")
    if sock is not None and not is_ssl(transport):
        if isinstance(loop, asyncio.BaseEventLoop):
            try:
                return await loop.sendfile(transport, opened.file, 0, opened.size)
            except ConnectionError as exc:
                raise ClientDisconnected(DISCONNECTED) from exc
        if hasattr(os, "sendfile"):
            sent = await _send_by_syscall(transport, flow, opened, sock.fileno())
            if sent is not None:
                return sent
    return await _read_loop(transport, flow, opened)


async def _send_by_syscall(
    transport, flow: FlowControl, opened: OpenFile, sock_fd: int
) -> Optional[int]:
    """`os.sendfile` to the socket; None when it cannot send this file on this
    socket (it failed before the first byte)."""
    size = opened.size
    file_fd = opened.file.fileno()
    try:
        # A duplicate: should the transport close its socket meanwhile, the fd
        # number written to is never another file's.
        out_fd = os.dup(sock_fd)
    except OSError:
        return None
    try:
        # the head, and responses held back before it, leave through the transport first
        while transport.get_write_buffer_size():
            await _writable(transport, flow, out_fd)
        sent = 0
        while sent < size:
            try:
                sent_now = os.sendfile(out_fd, file_fd, sent, size - sent)
            except BlockingIOError:
                await _writable(transport, flow, out_fd)
                continue
            except ConnectionError as exc:
                raise ClientDisconnected(DISCONNECTED) from exc
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    raise ClientDisconnected(DISCONNECTED) from exc
                if sent:
                    raise
                return None
            if not sent_now:  # the file shrank since it was opened
                break
            sent += sent_now
            if sent < size:
                # the socket is full: other connections' turn until it is not
                await _writable(transport, flow, out_fd)
        return sent
    finally:
        os.close(out_fd)


async def _writable(transport, flow: FlowControl, fd: int) -> None:
    """Wait until the socket takes more bytes; ClientDisconnected when the
    connection is gone (or closing) before or meanwhile."""
    if not transport.is_closing():
        await flow.writable(fd)
    if transport.is_closing():
        raise ClientDisconnected(DISCONNECTED)


async def _read_loop(transport, flow: FlowControl, opened: OpenFile) -> int:
    """Read the file in the executor, write it through the transport."""
    loop = flow.loop
    size = opened.size
    sent = 0
    while sent < size:
        if flow.write_paused and not transport.is_closing():
            await flow.drain()
        if transport.is_closing():
            raise ClientDisconnected(DISCONNECTED)
        data = await read_block(loop, opened, size - sent)
        if not data:
            break
        if transport.is_closing():
            raise ClientDisconnected(DISCONNECTED)
        transport.write(data)
        sent += len(data)
    return sent


async def read_block(loop, opened: OpenFile, left: int) -> bytes:
    """The file's next block (at most FILE_READ_SIZE of the `left` bytes to send),
    read in the executor; b"": the file ended."""
    reading = opened.reading = loop.run_in_executor(
        None, opened.file.read, min(FILE_READ_SIZE, left)
    )
    # shield: a cancelled app task leaves the read running; close() waits for it
    data = await asyncio.shield(reading)
    opened.reading = None
    return data
