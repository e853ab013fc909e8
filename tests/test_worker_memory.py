"""--max-worker-memory: the master replaces a worker whose RSS passes the limit."""

from __future__ import annotations

import httpx

from process_util import free_port, get, wait_until

APP = "tests.apps_metrics:app"
LIMIT_MIB = 120
ALLOCATE_MIB = 150


def test_worker_over_memory_is_replaced(start_server):
    port = free_port()
    server = start_server(
        APP,
        "c",
        "--workers",
        "2",
        "--max-worker-memory",
        str(LIMIT_MIB),
        "--metrics-port",
        str(port),
    )
    ready = r"Worker \[(\d+)\] is ready"
    # the supervisor's own lines name its workers (/proc may show other children, such
    # as a sanitizer's helper process)
    before = {int(pid) for pid in server.wait_for_log(ready, count=2)}
    response = get(server.url(f"/allocate?mib={ALLOCATE_MIB}"))
    assert response.status_code == 200
    lines = server.wait_for_log(
        rf"Stopping worker \[(\d+)\] gracefully \(its memory \(RSS\) is [\d.]+ MiB, "
        rf"over --max-worker-memory {LIMIT_MIB} MiB; replacing it\)"
    )
    fat = int(lines[0])
    assert fat in before
    started = {int(pid) for pid in server.wait_for_log(ready, count=3)}
    assert len(started - before) == 1

    def counted():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return 'fastserve_worker_restarts_total{reason="memory"} 1.0' in text

    wait_until(counted, 30, message="a memory restart counted")
    assert server.stop() == 0


def test_one_worker_is_supervised(spawn):
    server = spawn(APP, "--port", "0", "--max-worker-memory", str(LIMIT_MIB))
    assert "Started supervisor process" in server.log()
    (first,) = server.wait_workers(1)
    server.wait_for_log(r"is ready")
    assert get(server.url(f"/allocate?mib={ALLOCATE_MIB}")).status_code == 200
    server.wait_for_log(rf"Stopping worker \[{first}\] gracefully \(its memory")
    server.wait_workers(1, exclude=frozenset({first}))
    assert get(server.url("/status/200")).status_code == 200
    assert server.running
    assert server.stop() == 0
