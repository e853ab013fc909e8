#!/usr/bin/env python3
"""The server's own CPU per request, without the network: a protocol driven in-process.

    python bench/inprocess.py [--http c|python] [--workload hello|pipeline|post]
                              [--requests N] [--rounds R] [--connections C]

Each round feeds every one of C connections a request (`data_received`), lets the
loop run the request Tasks, and repeats until N requests were answered; it prints
the process CPU time per request of each round and the best. The transport is a
stand-in that drops what is written, so what is measured is the protocol, the
ASGI call and the app (bench/apps.py) on uvloop -- no system calls, no client.
`bench/run.py` gives the whole picture (kernel included); this gives a stable figure
for one change, and a process to profile:

    perf record -g --call-graph dwarf python bench/inprocess.py --requests 50000

Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # apps.py and run.py, as run.py imports them

import apps  # noqa: E402
from fastserve.config import Config  # noqa: E402
from fastserve.server import ServerState  # noqa: E402
from run import PIPELINE_DEPTH  # noqa: E402

POST_BODY = b"x" * 4096
HELLO_GET = b"GET / HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
# workload → (app, the bytes of one read: one request, or a pipelined batch)
REQUESTS = {
    "hello": (apps.hello, HELLO_GET),
    "pipeline": (apps.hello, HELLO_GET * PIPELINE_DEPTH),
    "post": (
        apps.echo,
        b"POST / HTTP/1.1\r\nHost: localhost:8000\r\nContent-Type: application/octet-stream"
        b"\r\nContent-Length: %d\r\n\r\n" % len(POST_BODY) + POST_BODY,
    ),
}
# Loop passes after each read, per request in it: enough for every request Task to
# finish (a pipelined request starts when the one before it is answered).
PASSES_PER_REQUEST = 2


class DroppingTransport(asyncio.Transport):
    """Takes every write and forgets it."""

    def write(self, data) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocol_class(mode: str):
    if mode == "c":
        from fastserve._parser import HttpProtocol

        return HttpProtocol
    from fastserve.protocols.http.h11_impl import H11Protocol

    return H11Protocol


async def measure(args) -> list[float]:
    app, request = REQUESTS[args.workload]
    per_read = request.count(b" HTTP/1.1\r\n")
    passes = PASSES_PER_REQUEST * per_read
    config = Config(app, log_config=None, access_log=False)
    config.load()
    loop = asyncio.get_running_loop()
    state = ServerState()
    cls = protocol_class(args.http)
    connections = []
    for _ in range(args.connections):
        protocol = cls(config.protocol_settings, state, {}, _loop=loop)
        protocol.connection_made(DroppingTransport())
        connections.append(protocol)
    reads = max(1, args.requests // (args.connections * per_read))
    results = []
    for _ in range(args.rounds):
        before = state.total_requests
        start = time.process_time()
        for _ in range(reads):
            for protocol in connections:
                protocol.data_received(request)
            for _ in range(passes):
                await asyncio.sleep(0)
        elapsed = time.process_time() - start
        served = state.total_requests - before
        if state.tasks or served != reads * args.connections * per_read:
            raise SystemExit("requests left unanswered: raise PASSES_PER_REQUEST")
        results.append(elapsed / served * 1e6)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", choices=("c", "python"), default="c")
    parser.add_argument("--workload", choices=sorted(REQUESTS), default="hello")
    parser.add_argument("--requests", type=int, default=200_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    import uvloop

    results = uvloop.run(measure(args))
    for index, value in enumerate(results, 1):
        print(f"round {index}: {value:.2f} µs CPU per request")
    print(f"{args.http} {args.workload}: best {min(results):.2f} µs CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
