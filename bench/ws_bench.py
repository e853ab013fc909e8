#!/usr/bin/env python3
"""fastserve vs uvicorn, WebSocket echo, with a raw-socket load client.

    python bench/ws_bench.py [--duration 10] [--repeat 1] [--warmup 2]
                             [--only NAME ...] [--workload NAME ...] [--json out.json]

Every server runs `bench.apps:ws_echo` alone, pinned to one core (`taskset -c 0`); the
load client, bench/ws_client.py, runs pinned to another (`taskset -c 1`). For every
workload each server is started fresh; the client checks one echo, warms up, measures
`--duration` seconds, and closes; peak RSS is read and the server stopped. Repeats
go round-robin and the median is reported. Ratios are to uvicorn in the same run.

Plain Python plus uvloop (for the client). Never part of the test run. See
bench/README.md ("WebSocket echo").
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from typing import Optional

from run import (
    BENCH,
    HOST,
    Server,
    ServerError,
    add_common_arguments,
    cpu_model,
    failure_reason,
    fmt_ratio,
    log,
    log_plan,
    measure_all,
    python_check,
    select,
    write_json,
)

APP = "bench.apps:ws_echo"
MIB = 1024 * 1024

# name → (module run with `python -m`, --http, --ws); every one on uvloop
SERVERS = {
    "fastserve-c": ("fastserve", "c", "websockets"),
    "fastserve-python": ("fastserve", "python", "websockets"),
    "fastserve-c-wsproto": ("fastserve", "c", "wsproto"),
    "uvicorn-sansio": ("uvicorn", "httptools", "websockets-sansio"),
    "uvicorn-wsproto": ("uvicorn", "httptools", "wsproto"),
}
BASELINE = "uvicorn-sansio"  # the "× uvicorn" column: uvicorn's default (--ws auto)
BASELINE_WSPROTO = "uvicorn-wsproto"  # the "× uv-wsproto" column

# name → (payload bytes, connections, window: messages per write, description)
WORKLOADS = {
    "small": (32, 64, 16, "32-byte binary messages, 64 connections, windows of 16"),
    "large": (MIB, 8, 1, "1 MiB binary messages, 8 connections, one message at a time"),
}
CLIENT_SLACK = 60  # seconds past warm-up + duration before the client is given up on
MEDIANS = ("messages_per_s", "mib_per_s", "client_cpu")  # each row's median over its runs
VERSIONED_PACKAGES = ("fastserve", "uvicorn", "websockets", "wsproto", "uvloop", "httptools")

# Imports that must work for a server to run: its HTTP and WebSocket protocol classes.
IMPORT_CHECK = (
    "from {module}.config import HTTP_PROTOCOLS, WS_PROTOCOLS\n"
    "from {module}.importer import import_from_string\n"
    "import uvloop\n"
    "import_from_string(HTTP_PROTOCOLS[{http!r}])\n"
    "import_from_string(WS_PROTOCOLS[{ws!r}])\n"
)


def command(name: str) -> tuple[str, list[str]]:
    module, http, ws = SERVERS[name]
    return module, ["--http", http, "--ws", ws, "--loop", "uvloop"]


def command_line(name: str) -> str:
    module, flags = command(name)
    return " ".join(["python", "-m", module, APP, *flags])


def skip_reason(name: str) -> Optional[str]:
    module, http, ws = SERVERS[name]
    err = python_check(IMPORT_CHECK.format(module=module, http=http, ws=ws))
    return f"--http {http} --ws {ws} does not import ({err})" if err else None


def run_client(pin: list[str], port: int, workload: str, args) -> dict:
    size, connections, window, _ = WORKLOADS[workload]
    cmd = pin + [
        sys.executable, str(BENCH / "ws_client.py"), "--host", HOST, "--port", str(port),
        "--size", str(size), "--connections", str(connections), "--window", str(window),
        "--warmup", str(args.warmup), "--duration", str(args.duration),
    ]  # fmt: skip
    timeout = args.warmup + args.duration + CLIENT_SLACK
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not proc.stdout.strip():
        msg = (proc.stderr.strip() or "no output").splitlines()[-1]
        raise ServerError(f"ws_client failed ({proc.returncode}): {msg}\n      | {' '.join(cmd)}")
    result = json.loads(proc.stdout)
    for error in result["errors"][:3]:
        log(f"    client: {error}")
    result["errors"] = len(result["errors"])
    return result


def measure_once(name: str, workload: str, rep: int, args, server_pin, client_pin) -> dict:
    """Start the server; the client checks an echo, warms up, measures; peak RSS; stop."""
    server = Server(name, command(name), APP, server_pin)
    try:
        server.start()
        r = run_client(client_pin, server.port, workload, args)
        if server.proc.poll() is not None:
            raise ServerError(f"died during the run:\n{server.output()}")
        r["peak_rss_kib"] = server.peak_rss()
        log(
            f"  {name:20} {workload:6} run {rep + 1}/{args.repeat}: "
            f"{r['messages_per_s']:>9.0f} msg/s {r['mib_per_s']:>8.1f} MiB/s"
            f"  client CPU {r['client_cpu']:.0%}"
            + (f"  ERRORS {r['errors']}" if r["errors"] else "")
        )
        return r
    finally:
        server.stop()


def table(rows: list[dict], skipped: dict) -> str:
    lines = [
        "| workload | server | msg/s | MiB/s | × uvicorn | × uv-wsproto | client CPU | peak RSS | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    by_key = {(r["workload"], r["server"]): r for r in rows}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        base = by_key.get((workload, BASELINE), {}).get("messages_per_s")
        base_wsproto = by_key.get((workload, BASELINE_WSPROTO), {}).get("messages_per_s")
        for r in (r for r in rows if r["workload"] == workload):
            if "error" in r:
                reason = failure_reason(r["error"])
                lines.append(f"| {workload} | {r['server']} | failed: {reason} | | | | | | |")
                continue
            rate = r["messages_per_s"]
            rss = f"{r['peak_rss_kib'] / 1024:.1f} MiB" if r.get("peak_rss_kib") else "-"
            lines.append(
                f"| {workload} | {r['server']} | {rate:,.0f} | {r['mib_per_s']:,.1f} | "
                f"{fmt_ratio(rate, base)} | {fmt_ratio(rate, base_wsproto)} | "
                f"{r['client_cpu']:.0%} | {rss} | {r['errors']} |"
            )
    out = "\n".join(lines)
    for name, reason in skipped.items():
        out += f"\n(skipped {name}: {reason})"
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(
        p,
        SERVERS,
        WORKLOADS,
        duration_help="whole seconds measured per run (default 10)",
        warmup_help="whole seconds of unmeasured load first (default 2, 0 = none)",
        client="the load client",
    )
    args = p.parse_args(argv)
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--repeat and --duration must be positive, --warmup not negative")

    err = python_check("import uvloop")
    if err:
        print(f"the load client needs uvloop: pip install uvloop ({err})", file=sys.stderr)
        return 2

    sel = select(args, SERVERS, WORKLOADS, skip_reason)
    if not sel.servers:
        return 1
    log_plan(sel, args, client="client")
    rows = measure_all(sel, args, once=measure_once, medians=MEDIANS)

    print()
    print(
        f"Python {platform.python_version()}, {cpu_model() or platform.machine()}, "
        f"{args.duration}s measured, median of {args.repeat}; "
        f"× = msg/s ratio to uvicorn (websockets-sansio / wsproto, httptools, uvloop) in this run"
    )
    for workload in sel.workloads:
        print(f"  {workload}: {WORKLOADS[workload][3]}")
    print(table(rows, sel.skipped))

    if args.json:
        write_json(
            args,
            sel,
            rows,
            packages=VERSIONED_PACKAGES,
            settings=("duration", "repeat", "warmup"),
            servers={name: command_line(name) for name in sel.servers},
            workloads={w: WORKLOADS[w][3] for w in sel.workloads},
        )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
