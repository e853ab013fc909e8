"""--proxy-protocol: the PROXY header (v1 text, v2 binary) of a trusted peer gives the
scope's client and server, in both HTTP modes and for WebSocket scopes; an untrusted
peer's header is plain (bad) HTTP; a bad header closes the connection. The end-to-end
tests put a real HAProxy (the Debian package) in front."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import ssl
import struct

import pytest
from websockets.sync.client import connect

from fastserve.config import Config, ConfigError
from fastserve.protocols.proxy_protocol import parse_proxy_header, safe_read_size
from process_util import free_port, start_listener
from raw_http import RawClient

APP = "tests.apps:app"
WS_APP = "tests.apps_websockets:app"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.timeout(60)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL, PROXY = 0x20, 0x21  # version 2 with each command
AF_UNSPEC, TCP4, TCP6, UNIX = 0x00, 0x11, 0x21, 0x31  # family and STREAM transport

CLIENT4, SERVER4 = ("203.0.113.7", 51234), ("198.51.100.1", 443)
CLIENT6, SERVER6 = ("2001:db8::7", 40000), ("2001:db8::1", 8443)


def v1(family: str, client=CLIENT4, server=SERVER4) -> bytes:
    if family == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return b"PROXY %s %s %s %d %d\r\n" % (
        family.encode(),
        client[0].encode(),
        server[0].encode(),
        client[1],
        server[1],
    )


def v2(command: int = PROXY, family: int = TCP4, client=CLIENT4, server=SERVER4, tlv=b""):
    if family in (TCP4, TCP6):
        pack = ipaddress.ip_address
        block = (
            pack(client[0]).packed
            + pack(server[0]).packed
            + struct.pack("!HH", client[1], server[1])
        )
    elif family == UNIX:
        block = b"/tmp/client".ljust(108, b"\0") + b"/tmp/server".ljust(108, b"\0")
    else:
        block = b""
    block += tlv
    return V2_SIGNATURE + struct.pack("!BBH", command, family, len(block)) + block


def scope_after(server, header: bytes, split: bool = False, headers=None) -> dict:
    """The scope the app saw for a GET sent after `header` (byte by byte when `split`)."""
    with server.client() as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if split:
            for index in range(len(header)):
                client.send(header[index : index + 1])
        else:
            client.send(header)
        response = client.request("GET", "/scope", headers=headers)
        assert response.status == 200, response
        scope = response.json()
        scope["socket"] = list(client.sock.getsockname())
        scope["peer"] = list(client.sock.getpeername())
        return scope


@pytest.fixture
def auto(servers, mode):
    return servers.get(APP, mode, "--proxy-protocol", "auto", "--log-level", "debug")


@pytest.mark.parametrize(
    "header, client, server",
    [
        (v1("TCP4"), CLIENT4, SERVER4),
        (v1("TCP6", CLIENT6, SERVER6), CLIENT6, SERVER6),
        (v2(), CLIENT4, SERVER4),
        (v2(family=TCP6, client=CLIENT6, server=SERVER6), CLIENT6, SERVER6),
        (v2(tlv=b"\x04\x00\x03abc" + b"\x05\x00\x00"), CLIENT4, SERVER4),  # TLVs skipped
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-inet", "v2-inet6", "v2-tlvs"],
)
def test_a_trusted_peer_s_header_gives_client_and_server(auto, header, client, server):
    scope = scope_after(auto, header)
    assert scope["client"] == list(client)
    assert scope["server"] == list(server)
    # The bytes may come in any pieces.
    assert scope_after(auto, header, split=True)["client"] == list(client)


@pytest.mark.parametrize(
    "header",
    [v1("UNKNOWN"), b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", v2(LOCAL), v2(LOCAL, TCP4)]
    + [V2_SIGNATURE + struct.pack("!BBH", LOCAL, UNIX, 0), v2(PROXY, AF_UNSPEC), v2(PROXY, UNIX)],
    ids=["v1-unknown", "v1-unknown-rest", "v2-local", "v2-local-inet", "v2-local-no-block"]
    + ["v2-unspec", "v2-unix"],
)
def test_unknown_and_local_keep_the_socket_s_addresses(auto, header):
    scope = scope_after(auto, header)
    assert scope["client"] == scope["socket"]
    assert scope["server"] == scope["peer"]


def test_forwarded_headers_apply_on_top_under_the_usual_trust(servers, mode):
    """The PROXY header's client is the peer that X-Forwarded-For trust is decided on."""
    server = servers.get(
        APP, mode, "--proxy-protocol", "v1", "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8"
    )
    forwarded = [("X-Forwarded-For", "192.0.2.50")]
    from_proxy = v1("TCP4", ("10.1.2.3", 1000), SERVER4)
    assert scope_after(server, from_proxy, headers=forwarded)["client"] == ["192.0.2.50", 0]
    from_client = v1("TCP4", CLIENT4, SERVER4)
    assert scope_after(server, from_client, headers=forwarded)["client"] == list(CLIENT4)


@pytest.mark.parametrize(
    "header, reason",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "no PROXY protocol header"),
        (b"PROXY TCP4 203.0.113.7 198.51.100.1 51234\r\n", "malformed v1 header"),
        (b"PROXY TCP4 203.0.113.999 198.51.100.1 1 2\r\n", "malformed v1 address"),
        (b"PROXY TCP6 203.0.113.7 198.51.100.1 1 2\r\n", "malformed v1 address"),
        (b"PROXY TCP4 203.0.113.7 198.51.100.1 1 65536\r\n", "malformed v1 port"),
        (b"PROXY UNKNOWN " + b"x" * 100, "v1 header longer than 107 bytes"),
        (v2()[:12] + b"\x31" + v2()[13:], "unsupported v2 version or command"),
        (v2()[:13] + b"\x41" + v2()[14:], "unsupported v2 address family or transport"),
        (v2(family=TCP6)[:14] + b"\x00\x0c" + v2()[16:28], "v2 address block too short"),
    ],
    ids=["missing", "v1-fields", "v1-address", "v1-family", "v1-port", "oversized", "v2-version"]
    + ["v2-family", "v2-short"],
)
def test_a_bad_header_from_a_trusted_peer_closes_with_one_debug_line(auto, header, reason):
    with auto.client() as client:
        client.send(header)
        assert client.wait_closed() == b""
    auto.wait_for_log(f"PROXY protocol: {reason} from 127.0.0.1; closing")


def test_a_connection_closed_before_its_header_is_logged(auto):
    with auto.client() as client:
        client.send(b"PROXY TCP4")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.wait_closed() == b""
    auto.wait_for_log("PROXY protocol: connection closed before its PROXY header from 127.0.0.1")


@pytest.mark.parametrize(
    "only, other", [("v1", v2()), ("v2", v1("TCP4"))], ids=["v1-only", "v2-only"]
)
def test_a_fixed_version_refuses_the_other(servers, mode, only, other):
    server = servers.get(APP, mode, "--proxy-protocol", only)
    with server.client() as client:
        client.send(other + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.wait_closed() == b""
    assert scope_after(server, v1("TCP4") if only == "v1" else v2())["client"] == list(CLIENT4)


def test_an_untrusted_peer_s_header_is_not_believed(servers, mode):
    server = servers.get(
        APP, mode, "--proxy-protocol", "auto", "--forwarded-allow-ips", "10.0.0.0/8"
    )
    with server.client() as client:
        client.send(v1("TCP4") + b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().status == 400
    with server.client() as client:
        response = client.request("GET", "/scope")
        assert response.json()["client"] == list(client.sock.getsockname())


def test_a_websocket_scope_takes_the_client_of_a_v2_header(servers, mode):
    server = servers.get(WS_APP, mode, "--proxy-protocol", "v2")
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(v2(family=TCP6, client=CLIENT6, server=SERVER6))
    with connect(f"ws://{server.host}:{server.port}/scope", sock=sock) as websocket:
        scope = json.loads(websocket.recv(timeout=10))
    assert scope["type"] == "websocket"
    assert scope["client"] == list(CLIENT6)
    assert scope["server"] == list(SERVER6)


def test_the_header_is_read_in_time_or_the_connection_closes(start_server, mode):
    server = start_server(
        APP,
        mode,
        "--proxy-protocol",
        "v1",
        "--timeout-request-header",
        "0.5",
        "--log-level",
        "debug",
    )
    with server.client() as client:
        client.send(b"PROXY TCP4 ")
        assert client.wait_closed(timeout=10) == b""
    server.wait_for_log("PROXY protocol: no PROXY header in time from 127.0.0.1; closing")
    server.stop()


SAMPLE_HEADERS = [v1("TCP4"), v1("TCP6", CLIENT6, SERVER6), v1("UNKNOWN"), v2(), v2(LOCAL)]
SAMPLE_HEADERS += [v2(PROXY, UNIX), v2(PROXY, TCP6, CLIENT6, SERVER6, tlv=b"\x04\x00\x03abc")]


@pytest.mark.parametrize(
    "header, versions",
    [
        (header, versions)
        for header in SAMPLE_HEADERS
        for versions in ((1, 2), (1,) if header.startswith(b"PROXY") else (2,))
    ],
)
def test_reads_of_safe_size_end_exactly_at_the_header(header, versions):
    """Over TLS the reader reads `safe_read_size` bytes at a time: never a byte of the
    handshake behind the header."""
    stream = header + b"\x16\x03\x01 the ClientHello"
    read = b""
    while True:
        size = safe_read_size(read, versions)
        assert size > 0
        read += stream[len(read) : len(read) + size]
        parsed = parse_proxy_header(read, versions)
        if parsed is not None:
            break
    assert read == header and parsed.length == len(header)


def test_an_unknown_mode_is_one_config_error():
    with pytest.raises(ConfigError, match=r"^--proxy-protocol must be one of off, v1, v2, auto"):
        Config("tests.apps:app", proxy_protocol="v3")


# -- TLS: the header comes before the handshake ------------------------------------------


class TlsOverSocket:
    """A TLS client on a plain socket (ssl.MemoryBIO), so that the PROXY header and
    the ClientHello go out in one send, as a load balancer may send them."""

    def __init__(self, server, header: bytes, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        first = True
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self.sock.sendall((header if first else b"") + self.outgoing.read())
            first = False
            self._receive()
        self.sock.sendall(self.outgoing.read())

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.incoming.write(data)

    def request_scope(self) -> dict:
        self.tls.write(b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.sock.sendall(self.outgoing.read())
        received = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    self._receive()
                except ConnectionError:
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), received
        return json.loads(body)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def tls_server(request, servers, mode, tls_files):
    """--proxy-protocol auto over TLS, on each event loop (their TLS layers differ)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    key, cert, _ = tls_files
    return servers.get(
        APP, mode, "--proxy-protocol", "auto", "--loop", request.param,
        "--ssl-keyfile", key, "--ssl-certfile", cert,
    )  # fmt: skip


@pytest.mark.parametrize("header", [v1("TCP4"), v2(), v1("UNKNOWN")], ids=["v1", "v2", "unknown"])
def test_over_tls_the_header_comes_before_the_handshake(tls_server, tls_files, header):
    client = TlsOverSocket(tls_server, header, tls_files[2])
    address = list(client.sock.getsockname())
    try:
        scope = client.request_scope()
    finally:
        client.close()
    assert scope["scheme"] == "https"
    if header != v1("UNKNOWN"):
        assert (scope["client"], scope["server"]) == (list(CLIENT4), list(SERVER4))
    else:
        assert scope["client"] == address


def test_over_tls_an_untrusted_peer_starts_tls_at_once(servers, mode, tls_files):
    key, cert, context = tls_files
    server = servers.get(
        APP, mode, "--proxy-protocol", "v2", "--forwarded-allow-ips", "10.0.0.0/8",
        "--ssl-keyfile", key, "--ssl-certfile", cert,
    )  # fmt: skip
    client = TlsOverSocket(server, b"", context)
    address = list(client.sock.getsockname())
    try:
        scope = client.request_scope()
    finally:
        client.close()
    assert scope["client"] == address


def test_over_tls_bytes_that_are_not_tls_after_the_header_close(tls_server):
    with tls_server.client() as client:
        client.send(v1("TCP4") + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.wait_closed() == b""
    with tls_server.client() as client:  # the same without a header
        client.send(b"PROXY TCP4")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.wait_closed() == b""


# -- HAProxy in front ------------------------------------------------------------------

HAPROXY_CONF = """
global
    maxconn 64
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend entry
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server s1 127.0.0.1:{upstream} {send_proxy}
"""


@pytest.fixture
def haproxy(tmp_path):
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    started = []

    def start(upstream: int, mode: str, send_proxy: str) -> int:
        port = free_port()
        conf = tmp_path / f"haproxy-{len(started)}.cfg"
        conf.write_text(
            HAPROXY_CONF.format(mode=mode, port=port, upstream=upstream, send_proxy=send_proxy)
        )
        started.append(start_listener([HAPROXY, "-db", "-f", str(conf)], port, "haproxy"))
        return port

    yield start
    for process in started:
        process.cleanup()


@pytest.mark.parametrize(
    "haproxy_mode, send_proxy, proxy_protocol",
    [("tcp", "send-proxy-v2", "v2"), ("http", "send-proxy", "auto")],
    ids=["tcp-v2", "http-v1"],
)
def test_haproxy_in_front(servers, mode, haproxy, haproxy_mode, send_proxy, proxy_protocol):
    server = servers.get(APP, mode, "--proxy-protocol", proxy_protocol)
    port = haproxy(server.port, haproxy_mode, send_proxy)
    with RawClient(port) as client:
        for _ in range(2):  # two requests on one connection
            response = client.request("GET", "/scope")
            assert response.status == 200, response
            scope = response.json()
            assert scope["client"] == list(client.sock.getsockname())
            assert scope["server"] == ["127.0.0.1", port]


def test_haproxy_passes_tls_through_after_a_v2_header(servers, mode, haproxy, tls_files):
    key, cert, context = tls_files
    server = servers.get(
        APP, mode, "--proxy-protocol", "v2", "--ssl-keyfile", key, "--ssl-certfile", cert
    )
    port = haproxy(server.port, "tcp", "send-proxy-v2")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    address = list(raw.getsockname())
    with RawClient(sock=context.wrap_socket(raw, server_hostname="127.0.0.1")) as client:
        response = client.request("GET", "/scope")
        assert response.status == 200, response
        scope = response.json()
    assert (scope["scheme"], scope["client"], scope["server"]) == (
        "https",
        address,
        ["127.0.0.1", port],
    )


def test_every_worker_reads_the_header(spawn):
    server = spawn(APP, "--port", "0", "--workers", "2", "--proxy-protocol", "auto")
    server.wait_for_log(r"Worker \[\d+\] is ready", count=2)
    for header in (v1("TCP4"), v2()) * 3:
        assert scope_after(server, header)["client"] == list(CLIENT4)
