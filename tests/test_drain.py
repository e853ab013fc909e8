"""SIGTERM under load, as Kubernetes sends it to a pod (docs/kubernetes.md): every
request in flight completes, new connections are refused at once, the process exits 0
-- with one process (both HTTP modes) and with --workers."""

from __future__ import annotations

import signal

import httpx
import pytest

from process_util import get, port_accepts, start_thread, wait_until

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"
IN_FLIGHT = 8
# Long enough that the requests are still running when the listener is seen closed.
SLOW_SECONDS = 6


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(("--http", "c"), id="c", marks=pytest.mark.c),
        pytest.param(("--http", "python"), id="python", marks=pytest.mark.python),
        pytest.param(("--workers", "2"), id="workers"),
    ],
)
def test_sigterm_completes_requests_in_flight_and_refuses_new_ones(spawn, flags):
    server = spawn(
        APP, "--port", "0", "--no-access-log", "--timeout-graceful-shutdown", "30", *flags
    )
    if "--workers" in flags:
        server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    responses: list[httpx.Response] = []

    def request() -> None:
        responses.append(get(server.url(f"/slow?s={SLOW_SECONDS}"), timeout=30))

    threads = [start_thread(request) for _ in range(IN_FLIGHT)]
    server.wait_for_log("slow request started", count=IN_FLIGHT)
    with httpx.Client() as idle:  # a keep-alive connection with nothing in flight
        assert idle.get(server.url("/")).status_code == 200
        server.send_signal(signal.SIGTERM)
        wait_until(lambda: not port_accepts(server.port), 15, message="new connections refused")
        assert responses == [], "the requests were not in flight any more"
        assert server.running
    for thread in threads:
        thread.join(30)
    assert [response.status_code for response in responses] == [200] * IN_FLIGHT
    assert all(response.text.startswith("slow done") for response in responses)
    assert server.wait(30) == 0, server.describe()
