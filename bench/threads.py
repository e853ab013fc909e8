#!/usr/bin/env python3
"""The WSGI thread count, by measurement: fastserve against Gunicorn's gthread worker.

    python bench/threads.py [--duration 10] [--threads-list 1,2,4,8,16,32]
                            [--app wsgi-hello,wsgi-io,wsgi-mixed] [--json out.json]

For every thread count N of --threads-list, every server (fastserve's C mode with
`--interface wsgi --threads N`, Gunicorn with `-k gthread -w 1 --threads N`) runs
every app, pinned to one core with wrk on another, as bench/run.py runs its WSGI
workloads: the apps are a CPU-only one (`wsgi-hello`), an I/O-bound one (`wsgi-io`,
a 10 ms `time.sleep` standing for a database call) and a mixed one (`wsgi-mixed`,
2 ms asleep then ~1 ms of JSON encoding); see bench/apps_wsgi.py. With 64
connections the threads, not the connections, are the limit. One table per app
(req/s, p99, CPU µs per request, peak RSS for each N and server), and the best N of
each server on each app.

Each (server, N) pair is an entry added to run.py's server table (run.SERVERS) at
start-up, and the two new apps entries of its workload table (run.WORKLOADS, with
their checks), so that run.py's own code starts, checks, warms up and measures them
(run.measure: rounds, a fresh server per run, the order rotated each round).

Plain Python, stdlib only. Never part of the test run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from typing import Optional

import run  # bench/run.py, beside this script
from run import (
    HELLO_BODY,
    VERSIONED_PACKAGES,
    WSGI_SERVERS,
    Selection,
    Workload,
    cpu_model,
    cpu_pinning,
    failure_reason,
    fmt_mib,
    fmt_ms,
    fmt_ratio,
    fmt_us,
    log,
    measure,
    skip_reason,
    write_json,
)

# The sweep's apps beside run.py's WSGI workloads (bench/apps_wsgi.py), added to
# run.WORKLOADS with their checks (a body expected byte for byte, or a JSON key).
SWEEP_WORKLOADS = {
    "wsgi-io": Workload(
        "bench.apps_wsgi:io_wait",
        None,
        "WSGI, I/O-bound: GET, 10 ms time.sleep (a database call), then a 13-byte answer",
        wsgi=True,
    ),
    "wsgi-mixed": Workload(
        "bench.apps_wsgi:mixed",
        None,
        "WSGI, mixed: GET, 2 ms time.sleep, then ~1 ms of json.dumps, a small JSON answer",
        wsgi=True,
    ),
}
SWEEP_BODIES = {"wsgi-io": HELLO_BODY}
SWEEP_JSON_KEYS = {"wsgi-mixed": "bytes"}
APPS = ("wsgi-hello", "wsgi-io", "wsgi-mixed")  # the default --app
# The WSGI servers that take a thread count (run.WSGI_SERVERS' names).
THREADED = ("fastserve-c-wsgi", "fastserve-python-wsgi", "gunicorn-gthread")
SERVERS = ("fastserve-c-wsgi", "gunicorn-gthread")  # the default --only
GTHREAD = "gunicorn-gthread"  # the ratio column's baseline
THREADS_LIST = (1, 2, 4, 8, 16, 32)
NEAR_BEST = 0.95  # a thread count within 5% of the best req/s is listed beside it


def config_name(server: str, threads: int) -> str:
    """The run.SERVERS key of `server` with `threads` threads."""
    return f"{server}/{threads}"


def parse_config(name: str) -> tuple[str, int]:
    server, threads = name.rsplit("/", 1)
    return server, int(threads)


def with_threads(flags: list[str], threads: int) -> list[str]:
    """`flags` with --threads set to `threads` (replaced if there, else added)."""
    if "--threads" in flags:
        i = flags.index("--threads")
        return [*flags[: i + 1], str(threads), *flags[i + 2 :]]
    return [*flags, "--threads", str(threads)]


def register(servers: list[str], threads_list: list[int]) -> list[str]:
    """Add the sweep's apps to run.py's workload tables and each (server, N) pair to
    its server table; the pairs' names, N by N (the servers interleaved, so a machine
    that drifts during a round shifts them alike)."""
    run.WORKLOADS.update(SWEEP_WORKLOADS)
    run.EXPECTED_BODIES.update(SWEEP_BODIES)
    run.JSON_KEYS.update(SWEEP_JSON_KEYS)
    names = []
    for n in threads_list:
        for server in servers:
            module, flags = WSGI_SERVERS[server]
            name = config_name(server, n)
            run.SERVERS[name] = (module, with_threads(flags, n))
            names.append(name)
    return names


def parse_list(value: str, what: str, known: Optional[tuple] = None) -> list:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if known is None:
        try:
            numbers = [int(v) for v in items]
        except ValueError:
            raise argparse.ArgumentTypeError("whole numbers, comma-separated") from None
        if not numbers or min(numbers) < 1:
            raise argparse.ArgumentTypeError("one or more numbers, each at least 1")
        return list(dict.fromkeys(numbers))
    bad = [v for v in items if v not in known]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(bad) or '(none)'} (choose from {', '.join(known)})"
        )
    return list(dict.fromkeys(items))


# -- output -----------------------------------------------------------------------------


def best_threads(rows: list[dict], workload: str, server: str) -> Optional[tuple[int, list[int]]]:
    """The thread count of `server`'s highest req/s on `workload`, and every count within
    NEAR_BEST of it (the best included), or None if none was measured."""
    measured = {
        r["threads"]: r["rps"]
        for r in rows
        if r["workload"] == workload and r["base_server"] == server and r.get("rps")
    }
    if not measured:
        return None
    best = max(measured, key=measured.get)
    near = sorted(n for n, rps in measured.items() if rps >= NEAR_BEST * measured[best])
    return best, near


def cells(r: Optional[dict]) -> str:
    """One server's cells of a table row: req/s, p99, CPU µs/req, peak RSS."""
    if r is None:
        return " - | - | - | - |"
    if "error" in r:
        return f" failed: {failure_reason(r['error'])} | | | |"
    errors = f" ({r['errors']} errors)" if r["errors"] else ""
    return (
        f" {r['rps']:,.0f}{errors} | {fmt_ms(r['p99_ms'])} | {fmt_us(r['cpu_us_per_req'])} |"
        f" {fmt_mib(r.get('peak_rss_kib'))} |"
    )


def sweep_table(rows: list[dict], workload: str, servers: list[str], threads: list[int]) -> str:
    """One app's table: a row per thread count, four columns per server, and the ratio
    of the first other server's req/s to gthread's at the same count."""
    by_key = {(r["base_server"], r["threads"]): r for r in rows if r["workload"] == workload}
    other = next((s for s in servers if s != GTHREAD), None)
    ratio = GTHREAD in servers and other is not None
    head = "| threads |" + "".join(f" {s} req/s | p99 | CPU µs/req | peak RSS |" for s in servers)
    head += f" {other} ÷ gthread |" if ratio else ""
    lines = [head, "|--:|" + "--:|" * (4 * len(servers) + ratio)]
    for n in threads:
        line = f"| {n} |" + "".join(cells(by_key.get((s, n))) for s in servers)
        if ratio:
            a, b = by_key.get((other, n), {}), by_key.get((GTHREAD, n), {})
            line += f" {fmt_ratio(a.get('rps'), b.get('rps'))} |"
        lines.append(line)
    return "\n".join(lines)


def best_line(rows: list[dict], workload: str, servers: list[str]) -> str:
    parts = []
    for server in servers:
        found = best_threads(rows, workload, server)
        if found:
            best, near = found
            within = ", ".join(map(str, near))
            parts.append(f"{server} {best} (within {1 - NEAR_BEST:.0%} of its req/s: {within})")
    return "best thread count: " + ("; ".join(parts) if parts else "-")


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def print_tables(rows: list[dict], args, workloads: list[str], servers: list[str]) -> None:
    machine = f"Python {platform.python_version()}, {cpu_model() or platform.machine()}"
    print(
        f"{machine}, wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.repeat}; "
        f"load average (1, 5, 15 min) {fmt_load(args.load_before)} before, "
        f"{fmt_load(args.load_after)} after"
    )
    for workload in workloads:
        print()
        print(f"{workload}: {run.WORKLOADS[workload].description}")
        print(sweep_table(rows, workload, servers, args.threads_list))
        print(best_line(rows, workload, servers))


# -- main -------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    wsgi_workloads = tuple(w for w, spec in run.WORKLOADS.items() if spec.wsgi)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (10)")
    p.add_argument(
        "--threads-list",
        type=lambda v: parse_list(v, "--threads-list"),
        default=list(THREADS_LIST),
        metavar="N,N,...",
        help=f"thread counts (default {','.join(map(str, THREADS_LIST))})",
    )
    p.add_argument(
        "--app",
        type=lambda v: parse_list(v, "app", tuple(dict.fromkeys((*APPS, *wsgi_workloads)))),
        default=list(APPS),
        metavar="NAME,...",
        help=f"apps (default {','.join(APPS)}; also run.py's WSGI workloads: "
        f"{', '.join(w for w in wsgi_workloads if w not in APPS)})",
    )
    p.add_argument(
        "--only",
        type=lambda v: parse_list(v, "server", THREADED),
        default=list(SERVERS),
        metavar="NAME,...",
        help=f"servers (default {','.join(SERVERS)}; choose from {', '.join(THREADED)})",
    )
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median (1)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of wrk load before each run")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--server-cpu", type=int, default=0, help="the servers' core (0)")
    p.add_argument("--client-cpu", type=int, default=1, help="wrk's core (1)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.duration <= 0 or args.connections < 1 or args.warmup < 0:
        p.error("--repeat, --duration and --connections must be positive, --warmup not negative")
    if not shutil.which("wrk"):
        log("wrk not found: install it with `apt-get install -y wrk` (or your OS's package)")
        return 2

    server_pin, client_pin = cpu_pinning(args.server_cpu, args.client_cpu)
    skipped = {}
    for server in args.only:
        reason = skip_reason(server)
        if reason:
            skipped[server] = reason
            log(f"skipping {server}: {reason}")
    servers = [s for s in args.only if s not in skipped]
    if not servers:
        log("no server to benchmark")
        return 1
    names = register(servers, args.threads_list)
    log(
        f"{len(servers)} servers × {len(args.threads_list)} thread counts × {len(args.app)} apps, "
        f"{args.duration}s × {args.repeat} (+{args.warmup}s warm-up) each, "
        f"{args.connections} connections, server on core "
        f"{args.server_cpu if server_pin else 'any'}, wrk on core "
        f"{args.client_cpu if client_pin else 'any'}"
    )
    args.load_before = os.getloadavg()
    rows = []
    for workload in args.app:
        rows += measure(workload, names, skipped, args, server_pin, client_pin)
    args.load_after = os.getloadavg()
    for r in rows:
        r["base_server"], r["threads"] = parse_config(r["server"])

    print()
    print_tables(rows, args, args.app, servers)
    for server, reason in skipped.items():
        print(f"(skipped {server}: {reason})")

    if args.json:
        args.best_threads = {
            w: {s: (best_threads(rows, w, s) or (None,))[0] for s in servers} for w in args.app
        }
        write_json(
            args,
            Selection(names, args.app, skipped, server_pin, client_pin),
            rows,
            packages=VERSIONED_PACKAGES,
            settings=(
                "duration",
                "connections",
                "repeat",
                "warmup",
                "threads_list",
                "load_before",
                "load_after",
                "best_threads",
            ),
            workloads={w: run.WORKLOADS[w].description for w in args.app},
            servers={name: " ".join(run.SERVERS[name][1]) for name in names},
        )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
