"""The ASGI `tls` extension and ALPN, end to end in both HTTP modes: a real
`python -m fastserve` process with a trustme CA's certificates, real TLS clients
(the ssl module, httpx, websockets). The app (tests/apps_tls.py) answers with the
extension it was given."""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest
from websockets.sync.client import connect

from fastserve.protocols.tls import IANA_CIPHER_MASK

trustme = pytest.importorskip("trustme")
x509 = pytest.importorskip("cryptography.x509")  # trustme's own dependency

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps_tls:app"
TIMEOUT = 10
CLIENT_COMMON_NAME = "fastserve test client"


class TlsFiles:
    """A CA, a server certificate and key, a client certificate, and the paths the
    server is started with."""

    def __init__(self, directory) -> None:
        self.ca = trustme.CA()
        server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.client_cert = self.ca.issue_cert("client@example.org", common_name=CLIENT_COMMON_NAME)
        self.server_cert_der = ssl.PEM_cert_to_DER_cert(
            server_cert.cert_chain_pems[0].bytes().decode()
        )
        self.key = str(directory / "key.pem")
        self.cert = str(directory / "cert.pem")
        self.ca_cert = str(directory / "ca.pem")
        server_cert.private_key_pem.write_to_path(self.key)
        with open(self.cert, "wb") as file:
            for pem in server_cert.cert_chain_pems:
                file.write(pem.bytes())
        self.ca.cert_pem.write_to_path(self.ca_cert)

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_client_cert:
            self.client_cert.configure_cert(context)
        return context

    def server_flags(self) -> tuple[str, ...]:
        return ("--ssl-keyfile", self.key, "--ssl-certfile", self.cert)

    def mtls_flags(self) -> tuple[str, ...]:
        return (
            *self.server_flags(),
            "--ssl-ca-certs",
            self.ca_cert,
            "--ssl-cert-reqs",
            str(int(ssl.CERT_REQUIRED)),
        )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> TlsFiles:
    return TlsFiles(tmp_path_factory.mktemp("tls"))


def tls_socket(server, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def cipher_id(context: ssl.SSLContext, name: str) -> int:
    """The IANA id of a cipher suite, as the client's OpenSSL numbers it."""
    (cipher,) = [cipher for cipher in context.get_ciphers() if cipher["name"] == name]
    return cipher["id"] & IANA_CIPHER_MASK


def test_https_without_client_cert(servers, mode, tls_files):
    server = servers.get(APP, mode, *tls_files.server_flags())
    context = tls_files.client_context()
    with tls_socket(server, context) as sock, server.client(sock=sock) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = client.read_response().json()
        served_der = sock.getpeercert(binary_form=True)
        negotiated_version = int(ssl.TLSVersion[sock.version().replace(".", "_")])
        negotiated_cipher = cipher_id(context, sock.cipher()[0])
    assert answer["keys"] == [
        "http.response.early_hint",
        "http.response.pathsend",
        "http.response.trailers",
        "tls",
    ]
    tls = answer["tls"]
    assert ssl.PEM_cert_to_DER_cert(tls["server_cert"]) == served_der == tls_files.server_cert_der
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == negotiated_version
    assert tls["cipher_suite"] == negotiated_cipher


def test_mtls_client_cert(servers, mode, tls_files):
    server = servers.get(APP, mode, *tls_files.mtls_flags())
    with httpx.Client(
        verify=tls_files.client_context(with_client_cert=True), timeout=TIMEOUT
    ) as client:
        tls = client.get(server.url("/")).json()["tls"]
    client_pem = tls_files.client_cert.cert_chain_pems[0].bytes().decode()
    assert len(tls["client_cert_chain"]) >= 1
    assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == ssl.PEM_cert_to_DER_cert(
        client_pem
    )
    subject = x509.load_pem_x509_certificate(client_pem.encode()).subject
    assert tls["client_cert_name"] == subject.rfc4514_string()
    assert tls["client_cert_name"].startswith(f"CN={CLIENT_COMMON_NAME},")
    assert tls["client_cert_error"] is None
    assert isinstance(tls["cipher_suite"], int)


def test_mtls_refuses_a_client_without_cert(servers, mode, tls_files):
    server = servers.get(APP, mode, *tls_files.mtls_flags())
    with pytest.raises(httpx.TransportError):
        with httpx.Client(verify=tls_files.client_context(), timeout=TIMEOUT) as client:
            client.get(server.url("/"))


def test_wss_gets_the_same_extension(servers, mode, tls_files):
    server = servers.get(APP, mode, *tls_files.mtls_flags())
    context = tls_files.client_context(with_client_cert=True)
    with httpx.Client(verify=context, timeout=TIMEOUT) as client:
        http_tls = client.get(server.url("/")).json()["tls"]
    url = f"wss://127.0.0.1:{server.port}/"
    with connect(url, ssl=context, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as websocket:
        answer = json.loads(websocket.recv(timeout=TIMEOUT))
    assert answer["keys"] == ["tls", "websocket.http.response"]
    assert answer["tls"] == http_tls


def test_plain_http_has_no_tls_extension(servers, mode):
    server = servers.get(APP, mode)
    with httpx.Client(timeout=TIMEOUT) as client:
        answer = client.get(server.url("/")).json()
    keys = ["http.response.early_hint", "http.response.pathsend", "http.response.trailers"]
    assert answer == {"keys": keys, "tls": None}
    url = f"ws://127.0.0.1:{server.port}/"
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as websocket:
        answer = json.loads(websocket.recv(timeout=TIMEOUT))
    assert answer == {"keys": ["websocket.http.response"], "tls": None}


def test_alpn_selects_http1(servers, mode, tls_files):
    server = servers.get(APP, mode, *tls_files.server_flags())
    context = tls_files.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls_socket(server, context) as sock, server.client(sock=sock) as client:
        assert sock.selected_alpn_protocol() == "http/1.1"
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().status == 200
