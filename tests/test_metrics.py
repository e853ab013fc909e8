"""--metrics-port: the Prometheus endpoint of a single server and of the master
with --workers (the workers' counts summed, dead workers' totals kept), the
`protocol` label (HTTP/1.0, HTTP/1.1, HTTP/2), and the process titles."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from fastserve.metrics import ScrapeReader
from process_util import ROOT, free_port, get, wait_until

APP = "tests.apps_metrics:app"
# (path, expected status) served in this order; counted per code below.
REQUESTS = [("/status/200", 200)] * 5 + [("/missing", 404)] * 3 + [("/fail", 500)] * 2
RESPONSE_BODY = b"ok"
HTTP11 = ("protocol", "HTTP/1.1")
HTTP2 = ("protocol", "HTTP/2")


def scrape(port: int) -> dict:
    """{sample name: {labels as a sorted tuple: value}} of the whole endpoint."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def requests_by_code(samples: dict) -> dict:
    totals: dict = {}
    for labels, value in samples.get("fastserve_requests_total", {}).items():
        code = dict(labels)["code"]
        totals[code] = totals.get(code, 0) + value
    return totals


def serve(url: str, requests) -> None:
    for path, status in requests:
        assert get(url + path).status_code == status


def wait_counted(port: int, total: int) -> dict:
    """Wait until the endpoint shows `total` requests (workers report each second)."""

    def counted():
        samples = scrape(port)
        return samples if sum(requests_by_code(samples).values()) == total else None

    return wait_until(counted, 30, message=f"{total} requests counted")


def test_single_process(start_server, mode):
    port = free_port()
    server = start_server(APP, mode, "--metrics-port", str(port))
    server.wait_for_log(rf"Metrics on http://127\.0\.0\.1:{port}/metrics")
    serve(server.url(), REQUESTS)
    assert get(server.url("/status/204")).status_code == 204
    head = httpx.head(server.url("/status/200"), headers={"connection": "close"})
    assert head.status_code == 200
    samples = scrape(port)  # counted at once in a single process
    labels = samples["fastserve_requests_total"]
    assert labels[(("code", "200"), ("method", "GET"), HTTP11)] == 5
    assert labels[(("code", "404"), ("method", "GET"), HTTP11)] == 3
    assert labels[(("code", "500"), ("method", "GET"), HTTP11)] == 2
    assert labels[(("code", "204"), ("method", "GET"), HTTP11)] == 1
    assert labels[(("code", "200"), ("method", "HEAD"), HTTP11)] == 1
    served = len(REQUESTS) + 2
    assert samples["fastserve_request_duration_seconds_count"] == {(HTTP11,): served}
    assert samples["fastserve_request_duration_seconds_bucket"][(("le", "+Inf"), HTTP11)] == served
    assert 0 < samples["fastserve_request_duration_seconds_sum"][(HTTP11,)] < served * 10
    # "ok" for 5 /status/200, "not found" for 3 misses; no body for 500 (the
    # server's own answer), 204 and HEAD
    # the app's bodies, and the server's own 500s to the apps that raised
    server_500 = len(b"500 Internal Server Error\n")
    assert samples["fastserve_response_bytes_total"][()] == (
        5 * 2 + 3 * len(b"not found") + 2 * server_500
    )
    assert samples["fastserve_workers"][()] == 1
    assert samples["fastserve_requests_in_flight"][()] == 0
    assert samples["fastserve_websocket_connections_open"][()] == 0
    assert samples["fastserve_event_loop_lag_seconds"][()] >= 0
    restarts = samples["fastserve_worker_restarts_total"]
    assert set(restarts) == {
        (("reason", reason),)
        for reason in ("exit", "healthcheck", "max_requests", "memory", "reload")
    }
    assert not any(restarts.values())
    # a kept-alive connection is open while it is
    with httpx.Client() as client:
        assert client.get(server.url("/status/200")).status_code == 200
        assert scrape(port)["fastserve_connections_open"][()] == 1
    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=10).status_code == 404
    assert server.stop() == 0


def test_workers_sum_and_keep_dead_totals(start_server):
    port = free_port()
    server = start_server(APP, "c", "--workers", "2", "--metrics-port", str(port))
    server.wait_for_log(r"is ready", count=2)
    serve(server.url(), REQUESTS)
    wait_counted(port, len(REQUESTS))
    # kill whichever worker: what it reported stays in the totals
    victim = sorted(server.workers())[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(rf"Worker \[{victim}\] died unexpectedly \(killed by SIGKILL\)")
    server.wait_workers(2, exclude=frozenset({victim}))
    server.wait_for_log(r"is ready", count=3)
    serve(server.url(), REQUESTS)
    samples = wait_counted(port, 2 * len(REQUESTS))
    assert requests_by_code(samples) == {"200": 10, "404": 6, "500": 4}
    assert samples["fastserve_request_duration_seconds_count"] == {(HTTP11,): 2 * len(REQUESTS)}
    restarts = {dict(k)["reason"]: v for k, v in samples["fastserve_worker_restarts_total"].items()}
    assert restarts == {"exit": 1, "healthcheck": 0, "max_requests": 0, "memory": 0, "reload": 0}
    assert samples["fastserve_workers"][()] == 2
    # SIGHUP: a rolling restart replaces both workers, reason "reload"
    server.send_signal(signal.SIGHUP)
    server.wait_for_log(r"Stopping worker \[\d+\] gracefully \(rolling restart\)", count=2)
    server.wait_for_log(r"Worker \[\d+\] stopped", count=2)

    def reloaded():
        samples = scrape(port)
        counts = {
            dict(k)["reason"]: v for k, v in samples["fastserve_worker_restarts_total"].items()
        }
        return samples if counts["reload"] == 2 else None

    samples = wait_until(reloaded, 30, message="two reload restarts")
    assert sum(requests_by_code(samples).values()) == 2 * len(REQUESTS)
    assert server.stop() == 0


def http10_get(port: int, path: str) -> bytes:
    """The whole answer to an HTTP/1.0 GET (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def http2_gets(url: str, paths: list) -> list:
    """`paths` as concurrent streams of one HTTP/2 connection (h2c, prior knowledge)."""

    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            return await asyncio.gather(*(client.get(url + path) for path in paths))

    responses = asyncio.run(main())
    assert {response.http_version for response in responses} == {"HTTP/2"}
    return [response.status_code for response in responses]


def by_protocol(samples: dict, name: str) -> dict:
    """{protocol: value} of a sample labelled by protocol alone."""
    return {dict(labels)["protocol"]: value for labels, value in samples[name].items()}


def test_requests_and_durations_labelled_by_protocol(start_server, mode):
    """HTTP/1.0, HTTP/1.1 and HTTP/2 requests to one server: each counted under its
    `protocol`, in the request counter and the duration histogram."""
    port = free_port()
    server = start_server(APP, mode, "--http2", "--metrics-port", str(port))
    serve(server.url(), REQUESTS[:3])  # 3 times 200 over HTTP/1.1
    assert http10_get(server.port, "/missing").startswith(b"HTTP/1.1 404 ")
    assert http2_gets(server.url(), ["/status/200", "/status/201", "/missing", "/fail"]) == [
        200, 201, 404, 500,
    ]  # fmt: skip
    with httpx.Client(http1=False, http2=True) as client:
        assert client.head(server.url("/status/204")).status_code == 204
    samples = scrape(port)
    assert samples["fastserve_requests_total"] == {
        (("code", "200"), ("method", "GET"), HTTP11): 3,
        (("code", "404"), ("method", "GET"), ("protocol", "HTTP/1.0")): 1,
        (("code", "200"), ("method", "GET"), HTTP2): 1,
        (("code", "201"), ("method", "GET"), HTTP2): 1,
        (("code", "404"), ("method", "GET"), HTTP2): 1,
        (("code", "500"), ("method", "GET"), HTTP2): 1,
        (("code", "204"), ("method", "HEAD"), HTTP2): 1,
    }
    counts = {"HTTP/1.0": 1, "HTTP/1.1": 3, "HTTP/2": 5}
    assert by_protocol(samples, "fastserve_request_duration_seconds_count") == counts
    infinite = {
        dict(labels)["protocol"]: value
        for labels, value in samples["fastserve_request_duration_seconds_bucket"].items()
        if dict(labels)["le"] == "+Inf"
    }
    assert infinite == counts
    sums = by_protocol(samples, "fastserve_request_duration_seconds_sum")
    assert all(0 < sums[protocol] < count * 10 for protocol, count in counts.items())
    assert server.stop() == 0


def test_workers_sum_each_protocol(start_server):
    """With --workers the master's sums keep the protocols apart (the workers' reports)."""
    port = free_port()
    server = start_server(APP, "c", "--workers", "2", "--http2", "--metrics-port", str(port))
    server.wait_for_log(r"is ready", count=2)
    serve(server.url(), REQUESTS[:4])
    assert http2_gets(server.url(), ["/status/200"] * 6) == [200] * 6
    samples = wait_counted(port, 10)
    counted = {}
    for labels, value in samples["fastserve_requests_total"].items():
        counted[dict(labels)["protocol"]] = counted.get(dict(labels)["protocol"], 0) + value
    assert counted == {"HTTP/1.1": 4, "HTTP/2": 6}
    durations = by_protocol(samples, "fastserve_request_duration_seconds_count")
    assert durations == {"HTTP/1.1": 4, "HTTP/2": 6}
    assert server.stop() == 0


def test_max_requests_restart_reason(start_server):
    port = free_port()
    server = start_server(
        APP, "python", "--workers", "2", "--max-requests", "3", "--metrics-port", str(port)
    )
    server.wait_for_log(r"is ready", count=2)
    # enough requests for one worker at least to reach its limit
    serve(server.url(), [("/status/200", 200)] * 7)
    server.wait_for_log(r"Maximum request limit of 3 exceeded")

    def restarted():
        samples = scrape(port)
        counts = {
            dict(k)["reason"]: v for k, v in samples["fastserve_worker_restarts_total"].items()
        }
        return counts if counts["max_requests"] >= 1 else None

    counts = wait_until(restarted, 30, message="a max_requests restart")
    assert counts["exit"] == 0
    # every request counted, although workers exited: their last report came with them
    wait_counted(port, 7)
    assert server.stop() == 0


def test_healthcheck_restart_reason(start_server):
    port = free_port()
    server = start_server(
        APP,
        "python",
        "--workers",
        "2",
        "--timeout-worker-healthcheck",
        "1",
        "--metrics-port",
        str(port),
    )
    server.wait_for_log(r"is ready", count=2)
    with pytest.raises(httpx.HTTPError):
        get(server.url("/block"), timeout=30)
    server.wait_for_log(r"Worker \[\d+\] was killed after its heartbeat stopped")

    def restarted():
        samples = scrape(port)
        counts = {
            dict(k)["reason"]: v for k, v in samples["fastserve_worker_restarts_total"].items()
        }
        return counts if counts["healthcheck"] == 1 else None

    counts = wait_until(restarted, 30, message="a healthcheck restart")
    assert counts["exit"] == 0
    assert server.stop() == 0


def test_metrics_port_in_use(start_server):
    port = free_port()
    blocker = start_server(APP, "c", "--metrics-port", str(port))
    server = start_server(APP, "c", "--workers", "2", "--metrics-port", str(port), wait_ready=False)
    assert server.wait() == 1
    assert f"Cannot serve metrics on 127.0.0.1:{port}" in server.output()
    assert "Traceback" not in server.output()
    assert blocker.stop() == 0


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode().strip()


def test_process_titles(start_server):
    pytest.importorskip("setproctitle")
    server = start_server(APP, "c", "--workers", "2")
    server.wait_for_log(r"is ready", count=2)
    assert cmdline(server.pid) == f"fastserve: master [{APP}]"
    titles = sorted(cmdline(pid) for pid in server.workers())
    assert titles == [f"fastserve: worker 1 [{APP}]", f"fastserve: worker 2 [{APP}]"]
    assert server.stop() == 0


def test_websocket_gauges(start_server, mode):
    port = free_port()
    server = start_server(APP, mode, "--metrics-port", str(port))
    with connect(f"ws://127.0.0.1:{server.port}/") as websocket:
        websocket.send("hi")
        assert websocket.recv(timeout=10) == "hi"
        samples = scrape(port)
        assert samples["fastserve_websocket_connections_open"][()] == 1
        assert samples["fastserve_connections_open"][()] == 1
        assert samples["fastserve_requests_in_flight"][()] == 1

    def closed():
        samples = scrape(port)
        return samples["fastserve_websocket_connections_open"][()] == 0 and (
            samples["fastserve_requests_in_flight"][()] == 0
        )

    wait_until(closed, 30, message="the WebSocket gone from the gauges")
    assert server.stop() == 0


def run_cli(*args: str, block_prometheus: bool = False) -> subprocess.CompletedProcess:
    blocker = "sys.modules['prometheus_client'] = None; " if block_prometheus else ""
    code = f"import sys; {blocker}from fastserve.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, APP, *args],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_metrics_port_needs_prometheus_client():
    result = run_cli("--metrics-port", "9999", block_prometheus=True)
    assert result.returncode != 0
    assert "--metrics-port needs prometheus_client" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_port_range():
    result = run_cli("--metrics-port", "70000")
    assert result.returncode != 0
    assert "--metrics-port must be between 0 and 65535" in result.stderr


# -- the endpoint's request reader, in this process ----------------------------------

EXPOSITION = b"# the exposition\n"


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "body"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK", EXPOSITION),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK", EXPOSITION),
        (b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK", b""),
        (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 404 Not Found", b"Not Found\n"),
        (
            b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 405 Method Not Allowed",
            b"GET /metrics\n",
        ),
        (b"not http\r\n\r\n", b"HTTP/1.1 400 Bad Request", b"Bad Request\n"),
        (
            b"GET /metrics HTTP/1.1\r\n" + b"x-pad: 0123456789\r\n" * 1000,
            b"HTTP/1.1 431 Request Header Fields Too Large",
            b"Request Header Fields Too Large\n",
        ),
    ],
)
def test_scrape_reader_answers_once_the_head_is_complete(request_bytes, status_line, body):
    reader = ScrapeReader(lambda: EXPOSITION)
    answers = [reader.feed(request_bytes[at : at + 5]) for at in range(0, len(request_bytes), 5)]
    answer = next(answer for answer in answers if answer is not None)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == status_line
    assert b"connection: close" in head
    assert rest == body
