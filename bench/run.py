#!/usr/bin/env python3
"""fastserve vs uvicorn (and granian), end to end, with wrk; WSGI apps vs Gunicorn.

    python bench/run.py [--duration 10] [--connections 64] [--repeat 1]
                        [--only NAME ...] [--workload NAME ...] [--json out.json]

Each server runs alone, pinned to one core (`taskset -c 0`); wrk runs pinned to
another (`taskset -c 1 wrk -t1 -cN -dDs --latency`). For every workload the runs go
in rounds: each round starts every server in turn fresh, warms it up, measures one
wrk run, checks its peak RSS (VmHWM) and stops it; the median over `--repeat` rounds
is reported. The server's CPU time (/proc/PID/stat) around the measured run gives CPU
µs per request. Ratios are to uvicorn measured in the same run; `ceiling`, a raw
uvloop protocol (bench/ceiling.py), gives the event loop's limit on hello workloads.

The WSGI workloads (bench/apps_wsgi.py) run on the WSGI servers alone (WSGI_SERVERS:
fastserve --interface wsgi, Gunicorn's sync and gthread workers, granian, uvicorn),
the others on the ASGI servers; their table's ratios are to Gunicorn's gthread worker.

The idle-5000 workload measures memory, not speed: RSS idle, then with 5,000 idle
keep-alive connections opened by this process itself (no wrk).

Plain Python, stdlib only. Never part of the test run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import apps  # bench/apps.py, beside this script: the bodies the checks expect

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
COMMON_FLAGS = ["--host", HOST, "--no-access-log", "--log-level", "warning"]
# The hello-log workload's instead: every server spells these alike. Access lines are
# logged at info level and go to the server's stdout/stderr, a temporary file.
ACCESS_LOG_FLAGS = ["--host", HOST, "--access-log", "--log-level", "info"]

# name → (module run with `python -m`, or a script's path from the repo root; its flags).
# A script gets only its flags, --host and --port: no app, no COMMON_FLAGS; gunicorn
# gets its own spelling of them (GUNICORN_FLAGS).
ASGI_SERVERS = {
    "fastserve-c": ("fastserve", ["--http", "c", "--loop", "uvloop"]),
    "fastserve-python": ("fastserve", ["--http", "python", "--loop", "uvloop"]),
    # The cost of --metrics-port (not scraped during the run): compare with fastserve-c.
    "fastserve-c-metrics": (
        "fastserve",
        ["--http", "c", "--loop", "uvloop", "--metrics-port", "0"],
    ),
    "uvicorn-httptools": ("uvicorn", ["--http", "httptools", "--loop", "uvloop"]),
    "uvicorn-h11": ("uvicorn", ["--http", "h11", "--loop", "uvloop"]),
    # One worker on one core: a single-threaded Rust runtime, HTTP/1 only (as the
    # others, no h2 detection), Python side on uvloop.
    "granian": (
        "granian",
        ["--interface", "asgi", "--http", "1", "--runtime-mode", "st", "--loop", "uvloop"],
    ),
    # The event loop's limit: a raw uvloop protocol that answers every request head
    # with a fixed hello answer, no ASGI, no HTTP parsing.
    "ceiling": ("bench/ceiling.py", []),
}
# The servers of the WSGI workloads (Workload.wsgi), each on one core as the others.
WSGI_SERVERS = {
    # --threads at its default
    "fastserve-c-wsgi": ("fastserve", ["--http", "c", "--loop", "uvloop", "--interface", "wsgi"]),
    "fastserve-python-wsgi": (
        "fastserve",
        ["--http", "python", "--loop", "uvloop", "--interface", "wsgi"],
    ),
    # One worker process; 8 threads, its best count here (bench/threads.py, 2026-12-07:
    # best on wsgi-hello, within 5% of the best on flask-json, 6% under 32's on flask-file)
    "gunicorn-gthread": (
        "gunicorn",
        ["--worker-class", "gthread", "--workers", "1", "--threads", "8"],
    ),
    "gunicorn-sync": ("gunicorn", ["--worker-class", "sync", "--workers", "1"]),
    "granian-wsgi": ("granian", ["--interface", "wsgi", "--http", "1", "--runtime-mode", "st"]),
    "uvicorn-wsgi": ("uvicorn", ["--interface", "wsgi", "--http", "httptools", "--loop", "uvloop"]),
}
SERVERS = {**ASGI_SERVERS, **WSGI_SERVERS}
# Gunicorn's spelling of COMMON_FLAGS (its access log is off unless asked); the
# address goes in --bind.
GUNICORN_FLAGS = ["--log-level", "warning"]
CEILING = "ceiling"  # the "% ceiling" column
# Servers that answer only some workloads: name → (those workloads, why).
SERVES_ONLY = {
    CEILING: (
        ("hello", "hello-1conn", "pipeline", "idle-5000"),
        "a raw protocol with one fixed hello answer, no app",
    ),
}
BASELINE = "uvicorn-httptools"  # the "× uvicorn" column
BASELINE_H11 = "uvicorn-h11"  # the "× uv-h11" column (the pure mode's natural rival)
# The ratio columns of a table: (heading, server); the WSGI table's are to gthread.
ASGI_BASELINES = (("× uvicorn", BASELINE), ("× uv-h11", BASELINE_H11))
WSGI_BASELINES = (("× gthread", "gunicorn-gthread"),)

WRK_MEDIANS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")  # each row's median over its runs
VERSIONED_PACKAGES = (  # in --json
    "fastserve",
    "uvicorn",
    "httptools",
    "uvloop",
    "h11",
    "granian",
    "fastapi",
    "starlette",
    "pydantic",
    "gunicorn",
    "flask",
)

PIPELINE_DEPTH = 16
POST_BODY = b"x" * 4096  # must match bench/post.lua
HELLO_BODY = apps.HELLO_BODY
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")  # the unit of utime and stime in /proc/PID/stat
US_PER_S = 1_000_000


class Workload(NamedTuple):
    app: str  # the ASGI app (the WSGI app when `wsgi`), "module:attribute"
    script: Optional[str]  # wrk lua script in bench/, or None for a plain GET
    description: str
    path: str = "/"
    connections: Optional[int] = None  # None: --connections
    access_log: bool = False  # the servers log every request (ACCESS_LOG_FLAGS)
    # A memory workload: no wrk, RSS idle and then with this many idle connections.
    idle_connections: Optional[int] = None
    wsgi: bool = False  # a WSGI app: run on WSGI_SERVERS (the others on ASGI_SERVERS)


WORKLOADS = {
    "hello": Workload("bench.apps:hello", None, "GET, 13-byte text answer"),
    "hello-1conn": Workload(
        "bench.apps:hello", None, "GET, 13-byte text answer, 1 connection", connections=1
    ),
    "hello-log": Workload(
        "bench.apps:hello", None, "GET, 13-byte text answer, access log on", access_log=True
    ),
    "json": Workload(
        "bench.apps:json_app", None, "GET, ~1 KiB JSON answer (json.dumps per request)"
    ),
    "post": Workload("bench.apps:echo", "post.lua", "POST 4 KiB body, echoed back"),
    "pipeline": Workload(
        "bench.apps:hello", "pipeline.lua", f"GET, {PIPELINE_DEPTH} pipelined per write"
    ),
    "64k": Workload("bench.apps:bytes_64k", None, "GET, 64 KiB answer"),
    "1m": Workload("bench.apps:bytes_1m", None, "GET, 1 MiB answer"),
    "stream": Workload(
        "bench.apps:stream",
        None,
        f"GET, chunked answer of {apps.STREAM_CHUNKS} × {len(apps.STREAM_CHUNK)} bytes",
    ),
    "fastapi": Workload(
        "bench.apps:fastapi_app",
        None,
        "FastAPI: GET with a path parameter, Pydantic model as JSON",
        path=apps.FASTAPI_PATH,
    ),
    "file": Workload(
        "bench.apps:file_app",
        None,
        "Starlette FileResponse, 1 MiB file (http.response.pathsend where offered)",
        path=apps.FILE_PATH,
    ),
    "idle-5000": Workload(
        "bench.apps:hello",
        None,
        "memory: RSS idle, then with 5,000 idle keep-alive connections (one GET each)",
        idle_connections=5000,
    ),
    "wsgi-hello": Workload(
        "bench.apps_wsgi:hello", None, "WSGI: GET, 13-byte text answer (a list)", wsgi=True
    ),
    "wsgi-64k": Workload("bench.apps_wsgi:bytes_64k", None, "WSGI: GET, 64 KiB answer", wsgi=True),
    "wsgi-post": Workload(
        "bench.apps_wsgi:echo", "post.lua", "WSGI: POST 4 KiB body, echoed back", wsgi=True
    ),
    "flask-json": Workload(
        "bench.apps_wsgi:flask_app",
        None,
        "Flask: GET, ~1 KiB JSON answer (jsonify per request)",
        path=apps.FLASK_JSON_PATH,
        wsgi=True,
    ),
    "flask-file": Workload(
        "bench.apps_wsgi:flask_app",
        None,
        "Flask send_file, 1 MiB file (wsgi.file_wrapper where offered)",
        path=apps.FILE_PATH,
        wsgi=True,
    ),
}

IDLE_WARMUP_REQUESTS = 20  # on one connection, before the idle RSS is read
IDLE_BATCH = 100  # connections opened at once: well under every server's listen backlog
IDLE_BATCH_TIMEOUT_S = 10.0  # for one batch to connect and get its answers (loopback: ms)
IDLE_SETTLE_S = 0.5  # before each RSS reading: let the server finish what it started
IDLE_KEEP_ALIVE_S = 600  # keep-alive timeout for the idle workload: longer than any run
FD_MARGIN = 256  # file descriptors beyond the idle connections (server sockets, pipes, ...)


# -- small helpers ------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def python_check(code: str) -> Optional[str]:
    """Run `code` in a fresh interpreter from the repo root; None if it worked, else the error."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def skip_reason(name: str) -> Optional[str]:
    module, flags = SERVERS[name]
    if module.endswith(".py"):
        err = python_check("import uvloop")
        if err:
            return f"uvloop missing ({err})"
    elif module == "fastserve":
        err = python_check("import fastserve")
        if err:
            return f"fastserve does not import ({err})"
        if "c" in flags:
            err = python_check("from fastserve._parser import HttpProtocol")
            if err:
                return f"fastserve C extension does not import: {err}"
        if "--metrics-port" in flags:
            err = python_check("import prometheus_client")
            if err:
                return f"prometheus_client missing ({err}); pip install 'fastserve[metrics]'"
    elif module == "granian":
        err = python_check("import granian, uvloop")
        if err:
            return f"granian/uvloop missing ({err}); pip install granian"
    elif module == "gunicorn":
        err = python_check("import gunicorn")
        if err:
            return f"gunicorn missing ({err}); pip install gunicorn"
    else:
        err = python_check(
            "import uvicorn, uvloop" + (", httptools" if "httptools" in flags else "")
        )
        if err:
            return f"uvicorn/uvloop/httptools missing ({err})"
    return None


def cpu_pinning(server_cpu: int, client_cpu: int) -> tuple[list[str], list[str]]:
    """taskset prefixes for the server and the load client (wrk), or no pinning if the
    cores are not there."""
    if not shutil.which("taskset"):
        log("warning: taskset not found; server and load client are NOT pinned to cores")
        return [], []
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    if server_cpu not in allowed or client_cpu not in allowed or server_cpu == client_cpu:
        log(
            f"warning: cores {server_cpu} and {client_cpu} are not both available "
            f"(allowed: {sorted(allowed)}); server and load client are NOT pinned"
        )
        return [], []
    return ["taskset", "-c", str(server_cpu)], ["taskset", "-c", str(client_cpu)]


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a pre-forking server, or granian, has children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            pass
    return found


def status_kib(pid: int, field: str) -> Optional[int]:
    """A kB field of /proc/PID/status (VmHWM, VmRSS), summed over pid and its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", status, re.M)
        if m:
            total += int(m.group(1))
    return total or None


def peak_rss_kib(pid: int) -> Optional[int]:
    """VmHWM of pid plus its descendants."""
    return status_kib(pid, "VmHWM")


def open_files_limit(pid: int) -> Optional[int]:
    """The soft "Max open files" of a running process, None if unlimited or unknown."""
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    m = re.search(r"^Max open files\s+(\d+)", limits, re.M)
    return int(m.group(1)) if m else None


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's RLIMIT_NOFILE soft limit to `needed` (servers started later
    inherit it); SystemExit with the reason if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"the idle workload needs {needed} open files, the hard limit is {hard}: "
            f"raise it (`ulimit -Hn {needed}` as root) or leave out that workload"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of pid and its descendants (all their threads)."""
    ticks = 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        # After "pid (comm) " (comm may hold spaces and parentheses): state is field 3,
        # utime and stime are fields 14 and 15.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[14 - 3]) + int(fields[15 - 3])
    return ticks / CLOCK_TICKS_PER_S


# -- servers ------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


class StartError(ServerError):
    """The server never came up: it is skipped for the remaining workloads."""


class Server:
    """One server process: `command` is (module run with `python -m`, its flags), or
    (a script's path from the repo root, its flags): a script gets no app and no
    `common_flags`, only --host and --port; gunicorn gets GUNICORN_FLAGS instead."""

    def __init__(
        self,
        name: str,
        command: tuple[str, list[str]],
        app: str,
        pin: list[str],
        common_flags: Sequence[str] = COMMON_FLAGS,
    ):
        module, flags = command
        self.name = name
        self.port = free_port()
        if module.endswith(".py"):
            self.cmd = pin + [sys.executable, str(REPO / module), *flags]
            self.cmd += ["--host", HOST, "--port", str(self.port)]
        elif module == "gunicorn":
            self.cmd = pin + [sys.executable, "-m", module, *flags, *GUNICORN_FLAGS]
            self.cmd += ["--bind", f"{HOST}:{self.port}", app]
        else:
            self.cmd = pin + [sys.executable, "-m", module, app, *flags, "--port", str(self.port)]
            self.cmd += common_flags
        self.proc: Optional[subprocess.Popen] = None
        self.stderr = tempfile.TemporaryFile()

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server ourselves
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"exited with code {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartError(f"did not accept connections within {timeout:.0f}s:\n{self.output()}")

    def output(self, lines: int = 12) -> str:
        """The server's last output lines (its stdout and stderr), indented."""
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace").rstrip()
        tail = text.splitlines()[-lines:] or ["(no output)"]
        return "\n".join("      | " + line for line in tail)

    def peak_rss(self) -> Optional[int]:
        return peak_rss_kib(self.proc.pid) if self.proc and self.proc.poll() is None else None

    def rss(self) -> Optional[int]:
        """VmRSS now, KiB, summed over the server's process tree."""
        return status_kib(self.proc.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            log(f"  {self.name}: no exit 5s after SIGTERM, sending SIGKILL")
            try:
                os.killpg(
                    self.proc.pid, signal.SIGKILL
                )  # its own session: the server and any children
            except OSError:
                self.proc.kill()
            self.proc.wait(5)


# -- correctness check before measuring -----------------------------------------------


# The exact body each workload must answer with; the JSON ones are checked apart.
EXPECTED_BODIES = {
    "hello": HELLO_BODY,
    "hello-1conn": HELLO_BODY,
    "hello-log": HELLO_BODY,
    "post": POST_BODY,
    "64k": b"x" * apps.BYTES_64K_SIZE,
    "1m": b"x" * apps.BYTES_1M_SIZE,
    "stream": apps.STREAM_CHUNK * apps.STREAM_CHUNKS,
    "file": apps.FILE_CONTENT,
    "idle-5000": HELLO_BODY,
    "wsgi-hello": HELLO_BODY,
    "wsgi-64k": b"x" * apps.BYTES_64K_SIZE,
    "wsgi-post": POST_BODY,
    "flask-file": apps.FILE_CONTENT,
}
# The JSON workloads: a key their document must have.
JSON_KEYS = {"json": "items", "fastapi": "id", "flask-json": "items"}


def check_pipeline(port: int) -> None:
    req = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode() * PIPELINE_DEPTH
    data = b""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(req)
        deadline = time.monotonic() + 5
        while data.count(HELLO_BODY) < PIPELINE_DEPTH and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    got = data.count(b"HTTP/1.1 200 ")
    if got != PIPELINE_DEPTH or data.count(HELLO_BODY) != PIPELINE_DEPTH:
        raise ServerError(f"pipelined check: {got}/{PIPELINE_DEPTH} answers: {data[:300]!r}")


def check_answer(workload: str, port: int) -> None:
    """One request (or one pipelined batch) checked by hand, so a broken server cannot
    post a fast number."""
    if workload == "pipeline":
        return check_pipeline(port)
    w = WORKLOADS[workload]
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        if w.script == "post.lua":
            conn.request(
                "POST", w.path, body=POST_BODY, headers={"Content-Type": "application/octet-stream"}
            )
        else:
            conn.request("GET", w.path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ServerError(f"check: status {resp.status}, body {body[:200]!r}")
    expected = EXPECTED_BODIES.get(workload)
    if expected is not None and body != expected:
        raise ServerError(f"check: {len(body)} bytes, expected {len(expected)}: {body[:100]!r}")
    if workload == "stream" and resp.getheader("transfer-encoding") != "chunked":
        raise ServerError(f"check: stream answer not chunked: {resp.getheaders()}")
    if workload in JSON_KEYS:
        doc = json.loads(body)
        if resp.getheader("content-type") != "application/json" or JSON_KEYS[workload] not in doc:
            raise ServerError(f"check: json answer {resp.getheaders()} {body[:200]!r}")


# -- wrk --------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict:
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    result = {"rps": float(m.group(1))}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", out, re.M)
    result["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
        # wrk prints 0.00us for a percentile it has no sample for
        result[f"p{pct}_ms"] = (_ms(*m.groups()) or None) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    result["errors"] = errors
    return result


def run_wrk(
    pin: list[str],
    port: int,
    script: Optional[str],
    duration: int,
    connections: int,
    path: str = "/",
) -> dict:
    cmd = pin + [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script:
        cmd += ["-s", str(BENCH / script)]
    cmd.append(f"http://{HOST}:{port}{path}")
    env = dict(os.environ, BENCH_PIPELINE_DEPTH=str(PIPELINE_DEPTH))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[0]
        raise ServerError(f"wrk failed ({proc.returncode}): {msg}\n      | {' '.join(cmd)}")
    return parse_wrk(proc.stdout)


# -- one measurement ------------------------------------------------------------------------


def measure_once(name: str, workload: str, rep: int, args, server_pin, client_pin) -> dict:
    """Start the server, check it, warm it up, one measured wrk run (with the server's
    CPU time around it), peak RSS, stop."""
    w = WORKLOADS[workload]
    flags = ACCESS_LOG_FLAGS if w.access_log else COMMON_FLAGS
    server = Server(name, SERVERS[name], w.app, server_pin, flags)
    connections = w.connections or args.connections
    try:
        server.start()
        check_answer(workload, server.port)
        if args.warmup > 0:
            run_wrk(client_pin, server.port, w.script, args.warmup, connections, w.path)
        cpu_before = server.cpu_seconds()
        r = run_wrk(client_pin, server.port, w.script, args.duration, connections, w.path)
        cpu = server.cpu_seconds() - cpu_before
        if server.proc.poll() is not None:
            raise ServerError(f"died during the run:\n{server.output()}")
        r["cpu_us_per_req"] = cpu * US_PER_S / r["requests"] if r["requests"] else None
        r["peak_rss_kib"] = server.peak_rss()
        if workload == "pipeline":
            # wrk times a pipelined batch, not a request, and its percentiles are
            # broken with pipelining (0.00us rows): no latency for this workload.
            r.update(p50_ms=None, p75_ms=None, p90_ms=None, p99_ms=None)
        log(
            f"  {name:18} {workload:11} run {rep + 1}/{args.repeat}: {r['rps']:>10.0f} req/s"
            f"  {fmt_us(r['cpu_us_per_req'])} CPU µs/req"
            f"  p50 {fmt_ms(r['p50_ms'])}  p99 {fmt_ms(r['p99_ms'])}"
            + (f"  ERRORS {r['errors']}" if r["errors"] else "")
        )
        return r
    finally:
        server.stop()


# -- the idle (memory) workload ----------------------------------------------------------

IDLE_MEDIANS = ("idle_rss_kib", "loaded_rss_kib", "kib_per_conn")


def idle_flags(module: str, connections: int) -> list[str]:
    """Server flags that keep `connections` idle keep-alive connections open for the
    whole measurement (the default keep-alive timeouts are a few seconds)."""
    if module in ("fastserve", "uvicorn"):
        return ["--timeout-keep-alive", str(IDLE_KEEP_ALIVE_S)]
    if module == "granian":  # at most --backpressure connections served at once
        return ["--backpressure", str(connections)]
    return []


def warm_up(port: int, requests: int) -> None:
    """`requests` GETs on one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        for _ in range(requests):
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or body != HELLO_BODY:
                raise ServerError(f"warm-up: status {resp.status}, body {body[:100]!r}")
    finally:
        conn.close()


def answered(received: bytes) -> bool:
    """Whether `received` holds the whole hello answer; ServerError if it is another."""
    if not (b"\r\n\r\n" in received and received.endswith(HELLO_BODY)):
        return False
    if not received.startswith(b"HTTP/1.1 200 "):
        raise ServerError(f"idle connection: answer {received[:200]!r}")
    return True


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    """`count` connections that each completed one GET and stay open, opened
    IDLE_BATCH at a time with non-blocking sockets. ServerError if one fails."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    opened: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        while len(opened) < count:
            first = len(opened) + 1  # of this batch, counting from 1
            pending = min(IDLE_BATCH, count - len(opened))
            for _ in range(pending):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                opened.append(sock)
                sock.setblocking(False)
                sock.connect_ex((HOST, port))  # EINPROGRESS: writable once connected
                selector.register(sock, selectors.EVENT_WRITE, bytearray())
            deadline = time.monotonic() + IDLE_BATCH_TIMEOUT_S
            while pending:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise ServerError(
                        f"{pending} of connections {first}–{len(opened)} "
                        f"not answered within {IDLE_BATCH_TIMEOUT_S:.0f}s"
                    )
                for key, _ in selector.select(timeout):
                    sock, received = key.fileobj, key.data
                    if key.events == selectors.EVENT_WRITE:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise ServerError(f"connection {len(opened)}: {os.strerror(err)}")
                        sock.send(request)  # a few bytes into an empty send buffer
                        selector.modify(sock, selectors.EVENT_READ, received)
                        continue
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ServerError(f"idle connection closed before its answer: {received!r}")
                    received += chunk
                    if answered(bytes(received)):
                        selector.unregister(sock)
                        pending -= 1
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    finally:
        selector.close()
    return opened


def closed_connections(socks: list[socket.socket]) -> int:
    """How many of the idle connections the server closed (or sent anything on)."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        return len(selector.select(0))


def measure_idle_once(name: str, workload: str, rep: int, args, server_pin, client_pin) -> dict:
    """Start the server, check it, warm it up with a few requests, read its RSS, open
    the idle connections, read its RSS again, check they are all still open, stop."""
    w = WORKLOADS[workload]
    count = w.idle_connections
    module = SERVERS[name][0]
    server = Server(
        name, SERVERS[name], w.app, server_pin, [*COMMON_FLAGS, *idle_flags(module, count)]
    )
    socks: list[socket.socket] = []
    try:
        server.start()
        limit = open_files_limit(server.proc.pid)
        if limit is not None and limit < count:
            raise ServerError(f"the server may open {limit} files, fewer than {count}")
        check_answer(workload, server.port)
        warm_up(server.port, IDLE_WARMUP_REQUESTS)
        time.sleep(IDLE_SETTLE_S)
        idle = server.rss()
        started = time.monotonic()
        socks = open_idle_connections(server.port, count)
        open_s = time.monotonic() - started
        time.sleep(IDLE_SETTLE_S)
        loaded = server.rss()
        errors = closed_connections(socks)
        if server.proc.poll() is not None:
            raise ServerError(f"died during the run:\n{server.output()}")
        r = {
            "idle_rss_kib": idle,
            "loaded_rss_kib": loaded,
            "kib_per_conn": (loaded - idle) / count if idle and loaded else None,
            "connections": count,
            "open_s": open_s,
            "peak_rss_kib": server.peak_rss(),
            "errors": errors,
        }
        log(
            f"  {name:18} {workload:11} run {rep + 1}/{args.repeat}: idle {fmt_mib(idle)}, "
            f"{count} connections {fmt_mib(loaded)} (opened in {open_s:.1f}s), "
            f"{fmt_kib(r['kib_per_conn'])} KiB/conn" + (f"  CLOSED {errors}" if errors else "")
        )
        return r
    finally:
        for sock in socks:
            sock.close()
        server.stop()


# -- rounds -------------------------------------------------------------------------------


def measure(
    workload: str,
    servers: list[str],
    skipped: dict,
    args,
    server_pin,
    client_pin,
    *,
    once: Callable[..., dict] = measure_once,
    medians: tuple[str, ...] = WRK_MEDIANS,
) -> list[dict]:
    """All servers on one workload. Repeats go round-robin over the servers (each run
    on a freshly started server, the order rotated each round), so a machine that
    slows down or speeds up during the benchmark shifts every server alike. `once`
    makes one measured run (a dict with `medians`, "peak_rss_kib" and "errors")."""
    rows = {name: {"server": name, "workload": workload, "runs": []} for name in servers}
    for rep in range(args.repeat):
        k = rep % len(servers)
        for name in servers[k:] + servers[:k]:
            row = rows[name]
            if name in skipped or "error" in row:
                continue
            try:
                row["runs"].append(once(name, workload, rep, args, server_pin, client_pin))
            except (ServerError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                row["error"] = str(exc)
                log(f"  {name:18} {workload:11} FAILED: {exc}")
                if isinstance(exc, StartError):
                    skipped[name] = "did not start (see the first failure above)"
    out = []
    for name in servers:
        row = rows[name]
        if name in skipped and not row["runs"] and "error" not in row:
            continue  # skipped before this workload
        runs = row["runs"]
        if "error" not in row:
            for key in medians:
                values = [r[key] for r in runs if r[key] is not None]
                row[key] = statistics.median(values) if values else None
            rss = [r["peak_rss_kib"] for r in runs if r.get("peak_rss_kib")]
            row["peak_rss_kib"] = max(rss) if rss else None
            row["errors"] = sum(r["errors"] for r in runs)
        out.append(row)
    return out


# -- output -----------------------------------------------------------------------------------


def fmt_ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}µs" if v < 1 else f"{v:.2f}ms"


def fmt_us(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}×" if a and b else "-"


def fmt_percent(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.0%}" if a and b else "-"


def fmt_mib(kib: Optional[float]) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt_kib(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def failure_reason(error: str) -> str:
    """One table cell for a failed row: the last line of the server's output says most
    (an exception), else the first."""
    err_lines = [ln.strip(" |") for ln in error.splitlines() if ln.strip(" |")]
    reason = err_lines[-1] if len(err_lines) > 1 else (err_lines or ["error"])[0]
    return reason[:80].replace("|", "/")


def table(rows: list[dict], baselines: Sequence[tuple[str, str]] = ASGI_BASELINES) -> str:
    """The wrk workloads' table: a ratio column per (heading, server) of `baselines`; a
    "% ceiling" column when the ceiling was measured."""
    by_key = {(r["workload"], r["server"]): r for r in rows}
    ceilings = {w: r.get("rps") for (w, name), r in by_key.items() if name == CEILING}
    with_ceiling = any(ceilings.values())
    head = (
        "| workload | server | req/s |"
        + "".join(f" {heading} |" for heading, _ in baselines)
        + (" % ceiling |" if with_ceiling else "")
        + " CPU µs/req | p50 | p99 | peak RSS | errors |"
    )
    columns = 8 + len(baselines) + with_ceiling
    lines = [head, "|---|---|" + "--:|" * (columns - 2)]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        bases = [by_key.get((workload, name), {}).get("rps") for _, name in baselines]
        for r in (r for r in rows if r["workload"] == workload):
            if "error" in r:
                reason = failure_reason(r["error"])
                lines.append(
                    f"| {workload} | {r['server']} | failed: {reason} |" + " |" * (columns - 3)
                )
                continue
            ratios = "".join(f" {fmt_ratio(r['rps'], base)} |" for base in bases)
            ceiling = f" {fmt_percent(r['rps'], ceilings.get(workload))} |" if with_ceiling else ""
            lines.append(
                f"| {workload} | {r['server']} | {r['rps']:,.0f} |{ratios}{ceiling} "
                f"{fmt_us(r['cpu_us_per_req'])} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | "
                f"{fmt_mib(r.get('peak_rss_kib'))} | {r['errors']} |"
            )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    """The idle workloads' table: RSS idle and with the connections, KiB per connection."""
    counts = {WORKLOADS[r["workload"]].idle_connections for r in rows}
    loaded = f"RSS with {counts.pop():,}" if len(counts) == 1 else "RSS with connections"
    lines = [
        f"| workload | server | idle RSS | {loaded} | KiB/conn | × uvicorn | closed |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    by_key = {(r["workload"], r["server"]): r for r in rows}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        base = by_key.get((workload, BASELINE), {}).get("kib_per_conn")
        for r in (r for r in rows if r["workload"] == workload):
            if "error" in r:
                reason = failure_reason(r["error"])
                lines.append(f"| {workload} | {r['server']} | failed: {reason} | | | | |")
                continue
            lines.append(
                f"| {workload} | {r['server']} | {fmt_mib(r['idle_rss_kib'])} | "
                f"{fmt_mib(r['loaded_rss_kib'])} | {fmt_kib(r['kib_per_conn'])} | "
                f"{fmt_ratio(r['kib_per_conn'], base)} | {r['errors']} |"
            )
    return "\n".join(lines)


def notes(skipped: dict, not_served: dict) -> str:
    """The lines under the tables: servers skipped, and servers left out of workloads."""
    out = [f"(skipped {name}: {reason})" for name, reason in skipped.items()]
    out += [
        f"(not measured: {name} on {', '.join(workloads)}: {SERVES_ONLY[name][1]})"
        for name, workloads in not_served.items()
    ]
    return "\n".join(out)


def versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict:
    code = (
        "import json, importlib.metadata as m\n"
        "v = {}\n"
        f"for p in {packages!r}:\n"
        "    try: v[p] = m.version(p)\n"
        "    except Exception: v[p] = None\n"
        "print(json.dumps(v))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        v = json.loads(out.stdout)
    except Exception:
        v = {}
    try:
        v["fastserve_git"] = (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or None
        )
    except OSError:
        pass
    if shutil.which("wrk"):
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        output = wrk.stdout or wrk.stderr
        v["wrk"] = output.splitlines()[0] if output else None
    return v


def cpu_model() -> Optional[str]:
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        return m.group(1).strip() if m else None
    except OSError:
        return None


# -- the command line, shared with ws_bench.py ----------------------------------------------


def split_names(values: Optional[list[str]], known: dict, what: str) -> list[str]:
    if not values:
        return list(known)
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(known)})")
    return list(dict.fromkeys(names))


def add_common_arguments(
    p: argparse.ArgumentParser,
    servers: dict,
    workloads: dict,
    *,
    duration_help: str,
    warmup_help: str,
    client: str,
    extra: Sequence[tuple[str, dict]] = (),
) -> None:
    """The options both benchmarks take, in this order: --duration, the `extra` ones
    ((flag, add_argument keywords) pairs), --repeat, --warmup, --only, --workload,
    --json, --server-cpu, --client-cpu. `client` names the load client in the help."""
    p.add_argument("--duration", type=int, default=10, help=duration_help)
    for flag, kwargs in extra:
        p.add_argument(flag, **kwargs)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured runs per server and workload; the median is reported",
    )
    p.add_argument("--warmup", type=int, default=2, help=warmup_help)
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"servers (repeat or comma-separate): {', '.join(servers)}",
    )
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME",
        help=f"workloads (repeat or comma-separate): {', '.join(workloads)}",
    )
    p.add_argument(
        "--json", metavar="PATH", help="also write every number (and each run) to this JSON file"
    )
    p.add_argument(
        "--server-cpu", type=int, default=0, help="core the server is pinned to (default 0)"
    )
    p.add_argument(
        "--client-cpu", type=int, default=1, help=f"core {client} is pinned to (default 1)"
    )


class Selection(NamedTuple):
    """What one benchmark run measures, and where."""

    servers: list[str]  # the servers to measure, in order (none skipped)
    workloads: list[str]
    skipped: dict[str, str]  # server → why it is not measured
    server_pin: list[str]  # taskset prefixes, or [] when not pinned
    client_pin: list[str]


def select(
    args, servers: dict, workloads: dict, skip_reason: Callable[[str], Optional[str]]
) -> Selection:
    """The servers and workloads --only and --workload ask for, the cpu pinning, and the
    servers `skip_reason` rules out (each logged). No servers left is logged too."""
    names = split_names(args.only, servers, "server")
    chosen_workloads = split_names(args.workload, workloads, "workload")
    server_pin, client_pin = cpu_pinning(args.server_cpu, args.client_cpu)
    skipped = {}
    for name in names:
        reason = skip_reason(name)
        if reason:
            skipped[name] = reason
            log(f"skipping {name}: {reason}")
    names = [s for s in names if s not in skipped]
    if not names:
        log("no server to benchmark")
    return Selection(names, chosen_workloads, skipped, server_pin, client_pin)


def log_plan(sel: Selection, args, *, client: str, load: str = "") -> None:
    """The "N servers × M workloads, ..." line; `load` describes the load (or is empty)."""
    log(
        f"{len(sel.servers)} servers × {len(sel.workloads)} workloads, "
        f"{args.duration}s × {args.repeat} (+{args.warmup}s warm-up) each, {load}"
        f"server on core {args.server_cpu if sel.server_pin else 'any'}, "
        f"{client} on core {args.client_cpu if sel.client_pin else 'any'}"
    )


def measure_all(sel: Selection, args, **kwargs) -> list[dict]:
    """Every selected workload on every selected server: `measure` in turn."""
    rows = []
    for workload in sel.workloads:
        rows += measure(
            workload, sel.servers, sel.skipped, args, sel.server_pin, sel.client_pin, **kwargs
        )
    return rows


def write_json(
    args,
    sel: Selection,
    rows: list[dict],
    *,
    packages: tuple[str, ...],
    settings: tuple[str, ...],
    workloads: dict[str, str],
    servers: Optional[dict[str, str]] = None,
) -> None:
    """The --json document: the machine, the package versions, the `settings` (names
    of options, recorded with their values), the pinning, the `servers` (if given) and
    `workloads` descriptions, the skipped servers, and every row."""
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "versions": versions(packages),
        **{name: getattr(args, name) for name in settings},
        "pinned": bool(sel.server_pin),
    }
    if servers is not None:
        meta["servers"] = servers
    meta["workloads"] = workloads
    doc = {"meta": meta, "skipped": sel.skipped, "results": rows}
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.json}")


# -- main -------------------------------------------------------------------------------------


def servers_for(workload: str, names: list[str], not_served: dict[str, list[str]]) -> list[str]:
    """The servers of `names` that run `workload`: those of its interface (WSGI_SERVERS
    or ASGI_SERVERS); a server SERVES_ONLY leaves out of it is added to `not_served`."""
    interface = WSGI_SERVERS if WORKLOADS[workload].wsgi else ASGI_SERVERS
    servers = []
    for name in (name for name in names if name in interface):
        if name in SERVES_ONLY and workload not in SERVES_ONLY[name][0]:
            not_served.setdefault(name, []).append(workload)
        else:
            servers.append(name)
    return servers


def print_wrk_tables(rows: list[dict], args) -> None:
    """The ASGI workloads' table (ratios to uvicorn), then the WSGI workloads' (ratios to
    Gunicorn's gthread worker); the machine and the load above them."""
    machine = f"Python {platform.python_version()}, {cpu_model() or platform.machine()}"
    if not rows:
        print(f"{machine}, median of {args.repeat}")
        return
    print(f"{machine}, wrk -t1 -c{args.connections} -d{args.duration:g}s, median of {args.repeat}")
    asgi_rows = [r for r in rows if not WORKLOADS[r["workload"]].wsgi]
    wsgi_rows = [r for r in rows if WORKLOADS[r["workload"]].wsgi]
    if asgi_rows:
        print("ASGI: × = req/s ratio to uvicorn (httptools / h11, uvloop) in this run")
        print(table(asgi_rows))
    if wsgi_rows:
        if asgi_rows:
            print()
        print("WSGI: × = req/s ratio to Gunicorn's gthread worker (8 threads) in this run")
        print(table(wsgi_rows, WSGI_BASELINES))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(
        p,
        SERVERS,
        WORKLOADS,
        duration_help="whole seconds per measured wrk run (default 10)",
        warmup_help="whole seconds of unmeasured wrk load after start-up (default 2, 0 = none)",
        client="wrk",
        extra=[("--connections", dict(type=int, default=64, help="wrk connections (default 64)"))],
    )
    args = p.parse_args(argv)
    if args.repeat < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--repeat, --duration and --connections must be positive")

    sel = select(args, SERVERS, WORKLOADS, skip_reason)
    idle = [w for w in sel.workloads if WORKLOADS[w].idle_connections]
    if len(idle) < len(sel.workloads) and not shutil.which("wrk"):
        print(
            "wrk not found: install it with `apt-get install -y wrk` (or your OS's package)",
            file=sys.stderr,
        )
        return 2
    if idle:
        raise_open_files_limit(max(WORKLOADS[w].idle_connections for w in idle) + FD_MARGIN)
    if not sel.servers:
        return 1
    log_plan(sel, args, client="wrk", load=f"{args.connections} connections, ")
    rows = []
    not_served: dict[str, list[str]] = {}
    for workload in sel.workloads:
        servers = servers_for(workload, sel.servers, not_served)
        measured = dict(once=measure_idle_once, medians=IDLE_MEDIANS) if workload in idle else {}
        rows += measure(
            workload, servers, sel.skipped, args, sel.server_pin, sel.client_pin, **measured
        )
    idle_rows = [r for r in rows if r["workload"] in idle]

    print()
    print_wrk_tables([r for r in rows if r["workload"] not in idle], args)
    if idle_rows:
        print()
        print(
            "Memory: VmRSS of the server's process tree, idle after a few requests, then "
            "with the idle keep-alive connections open; KiB/conn = the difference ÷ the "
            "connections; × = ratio to uvicorn's KiB/conn (lower is better)"
        )
        print(memory_table(idle_rows))
    footer = notes(sel.skipped, not_served)
    if footer:
        print(footer)

    if args.json:
        write_json(
            args,
            sel,
            rows,
            packages=VERSIONED_PACKAGES,
            settings=("duration", "connections", "repeat", "warmup"),
            workloads={w: WORKLOADS[w].description for w in sel.workloads},
        )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
