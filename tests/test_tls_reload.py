"""Certificate rotation: a SIGHUP rolling restart of `--workers N` serves the
certificate and key found on disk at that moment, with and without --preload,
losing no request; a certificate that does not load leaves the old workers (and
the old certificate) serving. Real processes, a trustme CA, real TLS clients."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading

import httpx
import pytest

from process_util import ServerProcess, start_thread, wait_until

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps_process:app"
TLS_APP = "tests.apps_tls:app"  # answers with the `tls` extension
TIMEOUT = 10


class RotatingCert:
    """A CA, two server certificates it issued (different subjects and serials), and
    the certificate and key paths the server reads; `install()` puts one in place."""

    def __init__(self, directory) -> None:
        self.ca = trustme.CA()
        self.first = self.ca.issue_cert("127.0.0.1", common_name="fastserve first")
        self.second = self.ca.issue_cert("127.0.0.1", common_name="fastserve second")
        self.directory = directory
        self.cert = str(directory / "cert.pem")
        self.key = str(directory / "key.pem")
        self.install(self.first)

    def install(self, issued) -> None:
        """Replace both files, each in one step (written aside, then renamed), as
        certificate tools do."""
        for path, pem_bytes in (
            (self.key, issued.private_key_pem.bytes()),
            (self.cert, b"".join(pem.bytes() for pem in issued.cert_chain_pems)),
        ):
            staged = f"{path}.new"
            with open(staged, "wb") as file:
                file.write(pem_bytes)
            os.replace(staged, path)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    @staticmethod
    def der(issued) -> bytes:
        return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def certs(tmp_path) -> RotatingCert:
    return RotatingCert(tmp_path)


def supervised_tls(spawn, certs: RotatingCert, *flags: str, app: str = APP) -> ServerProcess:
    server = spawn(
        app,
        "--port",
        "0",
        "--workers",
        "2",
        "--no-access-log",
        "--ssl-certfile",
        certs.cert,
        "--ssl-keyfile",
        certs.key,
        *flags,
    )
    server.wait_workers(2)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    return server


def served_cert(server: ServerProcess, certs: RotatingCert) -> bytes:
    """The certificate a new connection gets (DER), verified against the CA."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.getpeercert(binary_form=True)


def request_until(
    stop: threading.Event, url: str, context: ssl.SSLContext, pids: list[int]
) -> None:
    """GET `url` on fresh connections until `stop` is set, asserting that each
    succeeds; appends the pid of the worker that answered to `pids`."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(verify=context, timeout=TIMEOUT, limits=limits) as client:
        while not stop.is_set():
            response = client.get(url, headers={"connection": "close"})
            assert response.status_code == 200, response.text
            pids.append(int(response.text.split("=")[1]))


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_sighup_serves_the_rotated_certificate_without_failed_requests(spawn, certs, preload):
    server = supervised_tls(spawn, certs, *(["--preload"] if preload else []))
    assert served_cert(server, certs) == certs.der(certs.first)
    before = server.workers()

    stop = threading.Event()
    pids: list[int] = []
    client = start_thread(request_until, stop, server.url("/"), certs.client_context(), pids)
    # A client that stopped on a failed request ends each wait: join() reports it.
    try:
        wait_until(
            lambda: len(pids) >= 20 or not client.is_alive(),
            30,
            message="requests before the SIGHUP",
        )
        certs.install(certs.second)
        server.send_signal(signal.SIGHUP)
        after = server.wait_workers(2, exclude=before)
        server.wait_for_log(r"Worker \[\d+\] is ready", count=4)
        wait_until(
            lambda: set(pids[-10:]) <= after or not client.is_alive(),
            30,
            message="requests to the new workers",
        )
    finally:
        stop.set()
    client.join()  # re-raises the first request that failed during the rollover
    assert not after & before
    assert all(served_cert(server, certs) == certs.der(certs.second) for _ in range(6))
    assert server.stop() == 0


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_sighup_with_a_broken_certificate_keeps_the_old_one(spawn, certs, preload):
    server = supervised_tls(spawn, certs, *(["--preload"] if preload else []))
    before = server.workers()
    with open(certs.cert, "w") as file:
        file.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    server.send_signal(signal.SIGHUP)
    server.wait_for_log(r"Received SIGHUP: Cannot load the TLS certificate or key")
    log = server.log()
    assert log.count("Cannot load the TLS certificate or key") == 1
    assert "rolling restart, starting" not in log
    assert server.workers() == before
    assert served_cert(server, certs) == certs.der(certs.first)
    # The fixed files: the next SIGHUP rotates.
    certs.install(certs.second)
    server.send_signal(signal.SIGHUP)
    server.wait_workers(2, exclude=before)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=4)
    assert served_cert(server, certs) == certs.der(certs.second)
    assert server.stop() == 0


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_the_tls_extension_names_the_rotated_certificate(spawn, certs, preload):
    server = supervised_tls(spawn, certs, *(["--preload"] if preload else []), app=TLS_APP)
    before = server.workers()
    certs.install(certs.second)
    server.send_signal(signal.SIGHUP)
    server.wait_workers(2, exclude=before)
    server.wait_for_log(r"Worker \[\d+\] is ready", count=4)
    response = httpx.get(server.url("/"), verify=certs.client_context(), timeout=TIMEOUT)
    server_cert = response.json()["tls"]["server_cert"]
    assert ssl.PEM_cert_to_DER_cert(server_cert) == certs.der(certs.second)
    assert server.stop() == 0
