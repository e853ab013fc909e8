"""`wsgi.input`: the request body, received in full before the app is called (so a
slow client never holds one of the app's threads), in memory up to
MEMORY_BODY_MAX and in a temporary file beyond (`tempfile.SpooledTemporaryFile`, as
waitress spools; the writes that go to disk run in the loop's default executor, never
on the loop). --limit-request-body is the protocols' (413), before any of this.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from typing import Optional

# A body up to this size stays in memory; a larger one goes to a temporary file.
MEMORY_BODY_MAX = 1024 * 1024


class WSGIInput:
    """The body as PEP 3333's input stream: read(n), read(), read(-1), readline(limit),
    readlines(hint), iteration by lines."""

    __slots__ = ("file", "length")

    def __init__(self, whole: Optional[bytes] = None) -> None:
        if whole is None:
            self.file = tempfile.SpooledTemporaryFile(max_size=MEMORY_BODY_MAX)
            self.length = 0
        else:  # a body that came in one message (most do): in memory as it is
            self.file = io.BytesIO(whole)
            self.length = len(whole)

    def append(self, data: bytes) -> None:
        self.file.write(data)
        self.length += len(data)

    def goes_to_disk(self, data: bytes) -> bool:
        """Whether appending `data` writes to the temporary file (the spooled file
        rolls over once its size passes MEMORY_BODY_MAX)."""
        return self.length + len(data) > MEMORY_BODY_MAX

    def rewind(self) -> None:
        self.file.seek(0)

    def read(self, size: Optional[int] = -1) -> bytes:
        return self.file.read(-1 if size is None else size)

    def readline(self, size: Optional[int] = -1) -> bytes:
        return self.file.readline(-1 if size is None else size)

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        return self.file.readlines(-1 if hint is None else hint)

    def __iter__(self) -> WSGIInput:
        return self

    def __next__(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self.file.close()


async def receive_body(receive) -> Optional[WSGIInput]:
    """The whole body of the request, or None when the client went away first. The
    first receive() is what answers `Expect: 100-continue` (the protocols do)."""
    received = await _body_message(receive)
    if received is None:
        return None
    data, more_body = received
    if not more_body and len(data) <= MEMORY_BODY_MAX:
        return WSGIInput(data)
    body = WSGIInput()
    loop = asyncio.get_running_loop()
    while True:
        if body.goes_to_disk(data):
            await loop.run_in_executor(None, body.append, data)
        else:
            body.append(data)
        if not more_body:
            body.rewind()
            return body
        received = await _body_message(receive)
        if received is None:
            body.close()
            return None
        data, more_body = received


async def _body_message(receive) -> Optional[tuple[bytes, bool]]:
    """The next body bytes and whether more follow; None: the client went away."""
    message = await receive()
    if message["type"] != "http.request":  # http.disconnect
        return None
    return message.get("body", b""), message.get("more_body", False)
