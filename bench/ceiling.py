#!/usr/bin/env python3
"""The event loop's ceiling: a raw uvloop protocol, no ASGI, no HTTP parsing.

    python bench/ceiling.py --host 127.0.0.1 --port 8000

Answers every complete request head (each b"\\r\\n\\r\\n") with one fixed hello answer,
keep-alive, the same headers fastserve sends. What a server on this loop could do if
HTTP and the app cost nothing: bench/run.py's `ceiling` server (hello workloads only).
"""

import argparse
import asyncio
import email.utils

import uvloop

HEAD_END = b"\r\n\r\n"
BACKLOG = 2048  # fastserve's and uvicorn's default
BODY = b"Hello, world!"
# The date is fixed at start-up: a real server's once-a-second update costs nothing here.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: %s\r\nserver: ceiling\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n\r\n%s"
) % (email.utils.formatdate(usegmt=True).encode(), len(BODY), BODY)


class Hello(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""  # bytes after the last head end: a head still arriving

    def data_received(self, data):
        if self.pending:
            data = self.pending + data
        heads = data.count(HEAD_END)
        if heads:
            self.pending = data[data.rindex(HEAD_END) + len(HEAD_END) :]
            self.transport.write(RESPONSE * heads)
        else:
            self.pending = data


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Hello, host, port, backlog=BACKLOG)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
