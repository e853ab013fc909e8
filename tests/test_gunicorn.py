"""`gunicorn -k fastserve.workers.FastserveWorker`: gunicorn's arbiter, fastserve's server."""

from __future__ import annotations

import os
import signal
import ssl
import time

import httpx
import pytest

from process_util import (
    Load,
    ServerProcess,
    get,
    open_paths,
    pid_alive,
    start_gunicorn,
    start_thread,
    wait_until,
    worker_pid,
)

gunicorn = pytest.importorskip("gunicorn")

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"


@pytest.fixture
def spawn():
    started: list[ServerProcess] = []

    def start(*args: str, workers: int = 2, app: str = APP, **kwargs) -> ServerProcess:
        server = start_gunicorn(app, "--graceful-timeout", "10", *args, workers=workers, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


def test_serves_and_stops_gracefully_with_a_slow_request(spawn):
    server = spawn()
    assert worker_pid(server.url()) in server.workers()
    thread = start_thread(get, server.url("/slow?s=2"), timeout=15)
    server.wait_for_log("slow request started")
    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0
    response = thread.join(15)
    assert response.status_code == 200 and response.text.startswith("slow done")


def test_asyncio_worker(spawn):
    server = spawn(worker_class="fastserve.workers.FastserveAsyncioWorker", workers=1)
    assert worker_pid(server.url()) in server.workers()
    assert server.stop() == 0


def test_kill_9_worker_under_load_is_replaced(spawn):
    server = spawn()
    before = server.workers()
    with Load(server.url()) as load:
        load.wait_requests(50)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(2, exclude=frozenset({victim}), timeout=15)
        load.wait_requests(200)
    assert len(load.failures) <= len(load.threads), load.failures
    assert server.stop() == 0


@pytest.mark.serial  # bounds a duration
def test_blocked_worker_is_killed_by_the_gunicorn_timeout(spawn):
    server = spawn("--timeout", "2")
    before = server.workers()
    started = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        get(server.url("/block?s=60"), timeout=30)
    assert time.monotonic() - started < 15
    (killed,) = server.wait_for_log(r"WORKER TIMEOUT \(pid:(\d+)\)", timeout=10)
    assert int(killed) in before
    after = server.wait_workers(2, exclude=frozenset({int(killed)}), timeout=15)
    assert len(before & after) == 1
    log = server.log()
    assert "WORKER TIMEOUT" in log
    assert "event loop was blocked here" in log and "time.sleep(seconds)" in log
    # A healthy worker heartbeats via notify() and is never killed for it. The
    # stimulus: time passing, longer than the --timeout of 2 s.
    time.sleep(3)
    assert after <= server.workers()
    assert server.stop() == 0


def test_sighup_under_load_replaces_every_worker_without_failures(spawn):
    server = spawn()
    before = server.workers()
    with Load(server.url()) as load:
        load.wait_requests(50)
        server.send_signal(signal.SIGHUP)
        after = server.wait_workers(2, exclude=before, timeout=30)
        load.wait_requests(100)
    assert not (after & before)
    assert load.failures == [], load.failures[:5]
    assert server.stop() == 0


def test_sigquit_and_sigint_stop_a_worker_at_once(spawn):
    server = spawn(workers=1)
    for sig in (signal.SIGQUIT, signal.SIGINT):
        (victim,) = server.workers()
        thread = start_thread(
            pytest.raises, httpx.HTTPError, get, server.url("/slow?s=30"), timeout=20
        )
        server.wait_for_log(f"slow request started pid={victim}")
        os.kill(victim, sig)
        wait_until(lambda: not pid_alive(victim), 10)  # at once, not after the request's 30 s
        thread.join(15)  # the request failed (pytest.raises in the thread)
        server.wait_workers(1, exclude=frozenset({victim}), timeout=15)
    assert server.stop() == 0


def test_gunicorn_settings_are_honoured(spawn):
    server = spawn(
        "--limit-request-line",
        "200",
        "--limit-request-fields",
        "10",
        "--limit-request-field_size",
        "300",
        "--forwarded-allow-ips",
        "*",
        "--max-requests",
        "20",
        "--max-requests-jitter",
        "5",
        "--keep-alive",
        "1",
        workers=1,
    )
    url = server.url()
    assert get(url + "/" + "a" * 400).status_code == 414
    assert get(url + "/", headers={f"x-h{i}": "v" for i in range(20)}).status_code == 431
    assert get(url + "/", headers={"x-big": "v" * 500}).status_code == 431
    scope = get(
        url + "/scope", headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    ).json()
    assert scope["client"][0] == "203.0.113.7" and scope["scheme"] == "https"
    # keepalive: an idle keep-alive connection is closed after about a second.
    assert idle_keep_alive_lifetime(server) < 4
    # max_requests: the worker is recycled after 20 (+ up to 5) requests.
    pids = {worker_pid(url) for _ in range(40)}
    assert len(pids) >= 2
    assert server.stop() == 0


def idle_keep_alive_lifetime(server) -> float:
    """Seconds until the server closes a keep-alive connection left idle after a
    response (it must close it: fastserve's own default is 5 s)."""
    with server.client(timeout=15) as client:
        response = client.request("GET", "/")
        assert response.status == 200 and response.header("connection") != "close"
        started = time.monotonic()
        assert client.wait_closed(timeout=15) == b""
        return time.monotonic() - started


@pytest.mark.serial  # bounds a duration
def test_keep_alive_connection_closed_after_gunicorn_keepalive(spawn):
    server = spawn("--keep-alive", "1", workers=1)
    assert 0.5 < idle_keep_alive_lifetime(server) < 4
    assert server.stop() == 0


def test_usr1_reopens_the_access_log(spawn, tmp_path):
    access = tmp_path / "access.log"
    server = spawn("--access-logfile", str(access), workers=1)
    get(server.url("/"))
    wait_until(lambda: access.exists() and "GET /" in access.read_text(), 5)
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    server.send_signal(signal.SIGUSR1)
    # the worker has reopened the log: it holds the new file open, no more the old one
    wait_until(
        lambda: all(
            str(access) in open_paths(pid) and str(rotated) not in open_paths(pid)
            for pid in server.workers()
        ),
        15,
        message="the worker to reopen the access log",
    )
    for _ in range(3):
        get(server.url("/scope"))
    wait_until(lambda: access.read_text().count("GET /scope") == 3, 5)
    assert "GET /scope" not in rotated.read_text()
    assert server.stop() == 0


def test_tls_via_gunicorn_settings(spawn, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    server = spawn("--certfile", str(cert_file), "--keyfile", str(key_file), workers=1)
    url = server.url().replace("http://", "https://")
    response = httpx.get(
        url + "/scope", verify=ssl.create_default_context(cafile=str(ca_file)), timeout=10
    )
    assert response.status_code == 200
    assert response.json()["scheme"] == "https"
    assert server.stop() == 0


def test_gunicorn_reload_restarts_the_worker_every_time(spawn, tmp_path):
    source = (
        "import os\nVERSION = {v}\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    body = b'%d %d' % (VERSION, os.getpid())\n"
        "    await send({{'type': 'http.response.start', 'status': 200, 'headers': []}})\n"
        "    await send({{'type': 'http.response.body', 'body': body}})\n"
    )
    module = tmp_path / "gunicorn_reload_app.py"
    module.write_text(source.format(v=1))
    server = spawn(
        "--reload", "--chdir", str(tmp_path), app="gunicorn_reload_app:app", workers=1, cwd=tmp_path
    )

    def answer():
        try:
            version, pid = get(server.url("/"), timeout=5).text.split()
            return int(version), int(pid)
        except Exception:  # noqa: BLE001 - restarting
            return None, None

    def deploy(number):
        """Version `number`, atomically (a worker never imports half a file); then
        only a new mtime now and then: gunicorn's polling reloader (once a second)
        sees a change only after it recorded the file's mtime, which may be later
        than the new worker answers."""
        new = module.with_suffix(".new")
        new.write_text(source.format(v=number))
        os.replace(new, module)

        def served():
            if answer()[0] == number:
                return True
            os.utime(module)
            return False

        wait_until(served, 30, interval=1.5, message=f"version {number}")

    _, first_pid = answer()
    pids = {first_pid}
    for number in (2, 3):
        deploy(number)
        pids.add(answer()[1])
    assert len(pids) == 3, pids
    assert server.stop() == 0


def test_gunicorn_proxy_protocol_setting(spawn):
    """gunicorn's --proxy-protocol (a flag: auto, or v1 before gunicorn 27) and
    --proxy-allow-from: a trusted peer's PROXY header gives the scope's client."""
    server = spawn("--proxy-protocol", "--proxy-allow-from", "127.0.0.1", workers=1)
    with server.client() as client:
        client.send(b"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n")
        response = client.request("GET", "/scope")
        assert response.status == 200, response
        assert response.json()["client"] == ["203.0.113.7", 51234]
    # without the header, the connection from a peer that must send one is closed
    with server.client() as client:
        client.send(b"GET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
        assert client.wait_closed(timeout=15) == b""
    assert server.stop() == 0
