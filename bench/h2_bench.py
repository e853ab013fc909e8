#!/usr/bin/env python3
"""HTTP/2 (h2c, prior knowledge) with h2load: fastserve vs hypercorn, granian, uvicorn.

    python bench/h2_bench.py [--duration 10] [--repeat 1] [--warmup 2]
                             [--only NAME ...] [--workload NAME ...] [--no-h1]
                             [--json out.json]

Every server runs alone, pinned to one core (`taskset -c 0`); h2load runs pinned to
another (`taskset -c 1 h2load -t1 -cN -mM -Ds http://...`, h2c with prior knowledge).
Each run starts the server fresh, checks one answer byte for byte over HTTP/2 (the
`h2` package as client), warms up with h2load, measures one h2load run with the
server's CPU time around it, reads its peak RSS and stops it; rounds go round-robin
and the median over `--repeat` is reported (run.py's `measure`). Ratios are to
hypercorn (the `h2`-based peer) and, for fastserve, to its own HTTP/1.1 figure on the
twin workload, measured with wrk by run.py in the same run.

Stdlib, `h2` (the check) and run.py's machinery. Never part of the test run. See
bench/README.md ("HTTP/2").
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

import run
from run import (
    HOST,
    POST_BODY,
    US_PER_S,
    Server,
    ServerError,
    add_common_arguments,
    cpu_model,
    failure_reason,
    fmt_mib,
    fmt_ratio,
    fmt_us,
    log,
    log_plan,
    measure,
    python_check,
    select,
    write_json,
)

# name → (module run with `python -m`, its flags). Each on uvloop, one process, one
# core; fastserve, granian and uvicorn also get run.COMMON_FLAGS, hypercorn its own
# spelling of them (HYPERCORN_FLAGS; its access log is off unless asked).
SERVERS = {
    "fastserve-c": ("fastserve", ["--http", "c", "--http2", "--loop", "uvloop"]),
    "fastserve-python": ("fastserve", ["--http", "python", "--http2", "--loop", "uvloop"]),
    # h2c prior knowledge: its HTTP/1.1 protocol hands the preface over to its h2 one
    "hypercorn": ("hypercorn", ["--worker-class", "uvloop", "--workers", "1"]),
    # --http 2: HTTP/2 only (prior knowledge on a plain port); single-threaded runtime
    "granian": (
        "granian",
        ["--interface", "asgi", "--http", "2", "--runtime-mode", "st", "--loop", "uvloop"],
    ),
    # uvicorn's HTTP/2 needs its zttp protocol (pip install zttp)
    "uvicorn-zttp": ("uvicorn", ["--http", "zttp", "--http2", "--loop", "uvloop"]),
}
# --config: keep_alive_max_requests raised past any run (its default, 1000, ends a
# connection after 1,000 streams, and h2load does not reconnect)
HYPERCORN_FLAGS = ["--log-level", "warning", "--config", "bench/hypercorn_h2.toml"]
BASELINE = "hypercorn"  # the "× hypercorn" column
# The "× h1" column: the server of run.py measured over HTTP/1.1 with wrk.
H1_TWINS = {"fastserve-c": "fastserve-c", "fastserve-python": "fastserve-python"}

# Imports each server needs beyond run.skip_reason's (which checks fastserve, its C
# extension, granian and uvloop).
IMPORT_CHECKS = {
    "fastserve": "import h2",
    "hypercorn": "import hypercorn, h2, uvloop",
    "uvicorn": (
        "import inspect, uvicorn, uvloop\n"
        "assert 'http2' in inspect.signature(uvicorn.Config).parameters, "
        "'uvicorn '+uvicorn.__version__+' has no --http2'\n"
        "import uvicorn.protocols.http.auto_zttp_impl\n"
    ),
}


class H2Workload(NamedTuple):
    app: str
    clients: int  # h2load -c: connections
    streams: int  # h2load -m: concurrent streams per connection
    h1: str  # the twin run.py workload (wrk, HTTP/1.1) of the "× h1" column
    description: str
    post: bool = False  # POST run.POST_BODY (h2load -d FILE), the echo app answers it


WORKLOADS = {
    "h2-hello": H2Workload(
        "bench.apps:hello", 64, 10, "hello", "GET, 13-byte answer; 64 connections × 10 streams"
    ),
    "h2-1conn-100": H2Workload(
        "bench.apps:hello",
        1,
        100,
        "hello",
        "GET, 13-byte answer; 1 connection × 100 streams (every server's stream limit)",
    ),
    "h2-post": H2Workload(
        "bench.apps:echo",
        64,
        10,
        "post",
        "POST 4 KiB body, echoed back; 64 connections × 10 streams",
        post=True,
    ),
    "h2-1m": H2Workload(
        "bench.apps:bytes_1m", 64, 1, "1m", "GET, 1 MiB answer; 64 connections × 1 stream"
    ),
}
EXPECTED_BODIES = {
    "h2-hello": run.HELLO_BODY,
    "h2-1conn-100": run.HELLO_BODY,
    "h2-post": POST_BODY,
    "h2-1m": b"x" * run.apps.BYTES_1M_SIZE,
}
MEDIANS = ("rps", "cpu_us_per_req", "mean_ms")  # each row's median over its runs
COUNTS = ("succeeded", "failed", "errored")  # summed over a row's measured runs
VERSIONED_PACKAGES = ("fastserve", "h2", "hypercorn", "granian", "uvicorn", "zttp", "uvloop")
H2LOAD_SLACK = 60  # seconds past --duration before h2load is given up on


def skip_reason(name: str) -> Optional[str]:
    module, _ = SERVERS[name]
    if name in run.SERVERS:  # fastserve-c, fastserve-python, granian
        reason = run.skip_reason(name)
        if reason:
            return reason
    err = python_check(IMPORT_CHECKS[module]) if module in IMPORT_CHECKS else None
    return f"{module}'s HTTP/2 does not import ({err})" if err else None


def h2_server(name: str, app: str, pin: list[str]) -> Server:
    module, flags = SERVERS[name]
    if module != "hypercorn":
        return Server(name, (module, flags), app, pin)
    server = Server(name, (module, []), app, pin, common_flags=())
    server.cmd = pin + [sys.executable, "-m", module, *flags, *HYPERCORN_FLAGS]
    server.cmd += ["--bind", f"{HOST}:{server.port}", app]
    return server


def command_line(name: str) -> str:
    server = h2_server(name, "APP", [])
    return " ".join(server.cmd).replace(str(server.port), "PORT").replace(sys.executable, "python")


# -- the check: one request over h2c, its answer byte for byte -------------------------------


def check_answer(workload: str, port: int, timeout: float = 10.0) -> None:
    """One request over HTTP/2 with prior knowledge (the `h2` package as client): status
    200 and the exact body, so a broken server cannot post a fast number."""
    import h2.config
    import h2.connection
    import h2.events

    w = WORKLOADS[workload]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [
        (":method", "POST" if w.post else "GET"),
        (":scheme", "http"),
        (":authority", f"{HOST}:{port}"),
        (":path", "/"),
    ]
    if w.post:
        headers.append(("content-type", "application/octet-stream"))
    conn.send_headers(1, headers, end_stream=not w.post)
    if w.post:
        conn.send_data(1, POST_BODY, end_stream=True)
    status, body, ended = None, bytearray(), False
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(conn.data_to_send())
        while not ended:
            data = s.recv(65536)
            if not data:
                raise ServerError(f"h2 check: connection closed, status {status}")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status")
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise ServerError(f"h2 check: {event}")
            s.sendall(conn.data_to_send())
    expected = EXPECTED_BODIES[workload]
    if status != b"200" or body != expected:
        raise ServerError(
            f"h2 check: status {status!r}, {len(body)} bytes (expected 200, {len(expected)}): "
            f"{bytes(body[:100])!r}"
        )


# -- h2load -------------------------------------------------------------------------------------

_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_h2load(out: str) -> dict:
    """h2load's summary: req/s, the request counts (succeeded, failed, errored,
    timeout; h2load counts errored and timeout within failed), the status classes, the
    DATA bytes received and the mean time per request."""
    m = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", out, re.M)
    if not m:
        raise ValueError(f"no 'finished in' line in h2load output:\n{out[-2000:]}")
    result = {"seconds": float(m.group(1)), "rps": float(m.group(2))}
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        out,
        re.M,
    )
    if not m:
        raise ValueError(f"no 'requests:' line in h2load output:\n{out[-2000:]}")
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    result.update(zip(keys, map(int, m.groups())))
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        result.update(zip(("s2xx", "s3xx", "s4xx", "s5xx"), map(int, m.groups())))
    m = re.search(r"^traffic: .*, [\d.]+\w+ \((\d+)\) data", out, re.M)
    result["data_bytes"] = int(m.group(1)) if m else None
    m = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", out, re.M)
    result["mean_ms"] = run._ms(*m.groups()) if m else None
    m = re.search(r"^Application protocol: (\S+)", out, re.M)
    result["protocol"] = m.group(1) if m else None
    result["errors"] = result["failed"]  # run.measure sums this one
    return result


def run_h2load(pin: list[str], port: int, workload: str, duration: int, body: Path) -> dict:
    w = WORKLOADS[workload]
    cmd = pin + ["h2load", "-t1", f"-c{w.clients}", f"-m{w.streams}", f"-D{duration}"]
    if w.post:
        cmd += ["-d", str(body), "-H", "content-type: application/octet-stream"]
    cmd.append(f"http://{HOST}:{port}/")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + H2LOAD_SLACK)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise ServerError(f"h2load failed ({proc.returncode}): {msg}\n      | {' '.join(cmd)}")
    r = parse_h2load(proc.stdout)
    if r["protocol"] != "h2c":
        raise ServerError(f"h2load: application protocol {r['protocol']}, not h2c")
    if not r["succeeded"]:
        raise ServerError(f"h2load: no request succeeded ({r['failed']} failed)")
    # Every succeeded stream carried the whole body (streams cut at the end add more).
    least = r["succeeded"] * len(EXPECTED_BODIES[workload])
    if r["data_bytes"] is not None and r["data_bytes"] < least:
        raise ServerError(f"h2load: {r['data_bytes']} DATA bytes for {r['succeeded']} answers")
    return r


def measure_once(name: str, workload: str, rep: int, args, server_pin, client_pin) -> dict:
    """Start the server, check one answer over h2c, warm up with h2load, one measured
    h2load run (the server's CPU time around it), peak RSS, stop."""
    server = h2_server(name, WORKLOADS[workload].app, server_pin)
    try:
        server.start()
        check_answer(workload, server.port)
        if args.warmup > 0:
            warm = run_h2load(client_pin, server.port, workload, args.warmup, args.body_file)
            if warm["failed"]:
                log(f"  {name:18} {workload:13} warm-up: {warm['failed']} failed")
        cpu_before = server.cpu_seconds()
        r = run_h2load(client_pin, server.port, workload, args.duration, args.body_file)
        cpu = server.cpu_seconds() - cpu_before
        if server.proc.poll() is not None:
            raise ServerError(f"died during the run:\n{server.output()}")
        r["cpu_us_per_req"] = cpu * US_PER_S / r["succeeded"]
        r["peak_rss_kib"] = server.peak_rss()
        log(
            f"  {name:18} {workload:13} run {rep + 1}/{args.repeat}: {r['rps']:>9.0f} req/s"
            f"  {fmt_us(r['cpu_us_per_req'])} CPU µs/req  mean {run.fmt_ms(r['mean_ms'])}"
            + (f"  FAILED {r['failed']} (errored {r['errored']})" if r["failed"] else "")
        )
        return r
    finally:
        server.stop()


# -- output -------------------------------------------------------------------------------------


def table(rows: list[dict], h1_rows: list[dict]) -> str:
    lines = [
        "| workload | server | req/s | × hypercorn | × h1 | CPU µs/req | mean | peak RSS "
        "| succeeded | failed | errored |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    by_key = {(r["workload"], r["server"]): r for r in rows}
    h1 = {(r["workload"], r["server"]): r.get("rps") for r in h1_rows}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        base = by_key.get((workload, BASELINE), {}).get("rps")
        for r in (r for r in rows if r["workload"] == workload):
            if "error" in r:
                reason = failure_reason(r["error"])
                lines.append(f"| {workload} | {r['server']} | failed: {reason} |" + " |" * 8)
                continue
            twin = H1_TWINS.get(r["server"])
            h1_rps = h1.get((WORKLOADS[workload].h1, twin)) if twin else None
            failed = f"**{r['failed']:,}**" if r["failed"] else "0"
            lines.append(
                f"| {workload} | {r['server']} | {r['rps']:,.0f} | {fmt_ratio(r['rps'], base)} | "
                f"{fmt_ratio(r['rps'], h1_rps)} | {fmt_us(r['cpu_us_per_req'])} | "
                f"{run.fmt_ms(r['mean_ms'])} | {fmt_mib(r.get('peak_rss_kib'))} | "
                f"{r['succeeded']:,} | {failed} | {r['errored']:,} |"
            )
    return "\n".join(lines)


def fmt_load(load: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def measure_h1(h2_workloads: list[str], servers: list[str], args, sel) -> list:
    """run.py's wrk measurement of the HTTP/1.1 twins of fastserve, for the "× h1" column."""
    twins = [H1_TWINS[s] for s in servers if s in H1_TWINS]
    if not twins or not shutil.which("wrk"):
        if twins:
            log("wrk not found: no HTTP/1.1 figures (the × h1 column)")
        return []
    args.connections = 64  # run.measure_once's wrk -c, as run.py's default
    rows = []
    for h1 in dict.fromkeys(WORKLOADS[w].h1 for w in h2_workloads):
        rows += measure(h1, twins, {}, args, sel.server_pin, sel.client_pin)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(
        p,
        SERVERS,
        WORKLOADS,
        duration_help="whole seconds per measured h2load run (-D, default 10)",
        warmup_help="whole seconds of unmeasured h2load load after start-up (default 2, 0 = none)",
        client="h2load (and wrk)",
        extra=[
            (
                "--no-h1",
                dict(
                    action="store_true",
                    help="skip the HTTP/1.1 wrk runs of fastserve (the × h1 column)",
                ),
            )
        ],
    )
    args = p.parse_args(argv)
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--repeat and --duration must be positive, --warmup not negative")
    if not shutil.which("h2load"):
        log("h2load not found: install it with `apt-get install -y nghttp2-client`")
        return 2

    sel = select(args, SERVERS, WORKLOADS, skip_reason)
    if not sel.servers:
        return 1
    log_plan(sel, args, client="h2load")
    with tempfile.NamedTemporaryFile(prefix="fastserve-bench-h2-", suffix=".bin") as body:
        body.write(POST_BODY)
        body.flush()
        args.body_file = Path(body.name)
        args.load_before = os.getloadavg()
        rows = []
        for workload in sel.workloads:
            rows += measure(
                workload,
                sel.servers,
                sel.skipped,
                args,
                sel.server_pin,
                sel.client_pin,
                once=measure_once,
                medians=MEDIANS,
            )
        h1_rows = [] if args.no_h1 else measure_h1(sel.workloads, sel.servers, args, sel)
        args.load_after = os.getloadavg()
    for row in rows:
        for key in COUNTS:
            row[key] = sum(r[key] for r in row["runs"])

    print()
    print(
        f"Python {platform.python_version()}, {cpu_model() or platform.machine()}, "
        f"h2load -t1 -D{args.duration}, h2c prior knowledge, median of {args.repeat}; "
        f"load average (1 / 5 / 15 min) {fmt_load(args.load_before)} before, "
        f"{fmt_load(args.load_after)} after"
    )
    print("× hypercorn = req/s ÷ hypercorn's; × h1 = req/s ÷ the same server's HTTP/1.1")
    print("req/s (wrk -t1 -c64) on the twin workload, both in this run")
    for workload in sel.workloads:
        w = WORKLOADS[workload]
        print(f"  {workload}: {w.description} (h1 twin: {w.h1})")
    print(table(rows, h1_rows))
    if h1_rows:
        print()
        print("HTTP/1.1 twins (run.py's measurement, wrk -t1 -c64):")
        print(run.table(h1_rows, baselines=()))
    for name, reason in sel.skipped.items():
        print(f"(skipped {name}: {reason})")
    failing = [f"{r['server']} on {r['workload']}" for r in rows if r.get("failed")]
    if failing:
        print(f"(requests FAILED in the measured runs: {', '.join(failing)})")

    if args.json:
        write_json(
            args,
            sel,
            rows + h1_rows,
            packages=VERSIONED_PACKAGES,
            settings=("duration", "repeat", "warmup", "load_before", "load_after"),
            servers={name: command_line(name) for name in sel.servers},
            workloads={w: WORKLOADS[w].description for w in sel.workloads},
        )
    return 1 if failing or any("error" in r for r in rows + h1_rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
