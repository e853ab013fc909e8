"""Soak: wrk against one server in each mode, keep-alive and `Connection: close`, in
two rounds; afterwards RSS has stopped growing (the second round adds at most
SOAK_RSS_GROWTH) and open descriptors are back at the idle count.

In CI each round is short (FASTSERVE_SOAK_SECONDS, default 20: 5 s of each kind of
load per round). The long form: `FASTSERVE_SOAK_SECONDS=600 pytest tests/test_soak.py`.
wrk is installed by scripts/test. Deselect with `-m "not flood"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from flood_util import fd_count, report, rss_kib
from process_util import wait_until

SOAK_SECONDS = float(os.environ.get("FASTSERVE_SOAK_SECONDS", "20"))
ROUNDS = 2
LOADS = {"keep-alive": (), "close": ("-H", "Connection: close")}
PHASE_SECONDS = max(1, round(SOAK_SECONDS / (ROUNDS * len(LOADS))))
WRK_THREADS = 2
WRK_CONNECTIONS = 32
# What the second round may add to the RSS of the first (allocator noise): a leak per
# request or connection would show as megabytes after some 100,000 requests.
SOAK_RSS_GROWTH = 2 * 1024  # KiB

pytestmark = [pytest.mark.flood, pytest.mark.serial, pytest.mark.timeout(120 + 2 * SOAK_SECONDS)]


def wrk(url: str, *args: str) -> dict:
    """Run wrk for PHASE_SECONDS; its request count and error counts."""
    result = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{PHASE_SECONDS}s",
            "--timeout",
            "10s",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=PHASE_SECONDS + 60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    requests = re.search(r"(\d+) requests in", out)
    assert requests, out
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(requests.group(1)),
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "output": out,
    }


def test_soak_keep_alive_and_close(start_server, mode):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/test installs it)")
    server = start_server("tests.apps_floods:app", mode, "--no-access-log")
    idle_fds = fd_count(server.pid)
    rss_after_round = []
    for round_ in range(ROUNDS):
        for name, args in LOADS.items():
            result = wrk(server.url("/soak"), *args)
            report(
                f"{mode}: wrk {name}, round {round_ + 1}",
                seconds=PHASE_SECONDS,
                requests=result["requests"],
                socket_errors=result["socket_errors"],
                rss_kib=rss_kib(server.pid),
            )
            assert result["requests"] > 0 and result["non_2xx"] == 0, result["output"]
            # wrk's last connections may be reset as it stops; nothing else may fail
            assert result["socket_errors"] <= WRK_CONNECTIONS, result["output"]
        wait_until(
            lambda: fd_count(server.pid) <= idle_fds,
            30,
            message=f"descriptors back at {idle_fds} (have {fd_count(server.pid)})",
        )
        rss_after_round.append(rss_kib(server.pid))
    growth = rss_after_round[-1] - rss_after_round[0]
    report(f"{mode}: soak", rss_after_each_round_kib=rss_after_round)
    assert growth <= SOAK_RSS_GROWTH, (
        f"{mode}: RSS still growing: {rss_after_round} KiB after each round"
    )
    output = server.output()
    assert "Traceback" not in output and "ERROR" not in output, server.describe()
