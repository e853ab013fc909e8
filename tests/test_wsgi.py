"""WSGI apps under fastserve (protocols/wsgi/), in both HTTP modes: plain apps under
`wsgiref.validate.validator` (tests/apps_wsgi.py), Flask (tests/apps_flask.py),
Django (tests/apps_django.py), and under Gunicorn with fastserve's worker."""

from __future__ import annotations

import hashlib
import os
import re
import signal

import httpx
import pytest

from conftest import IncompleteResponse
from fastserve.protocols.wsgi.response import FILE_BLOCK_SIZE
from process_util import (
    GUNICORN_READY,
    ServerProcess,
    gunicorn_command,
    start_thread,
    wait_until,
    write_syscalls,
)

pytestmark = pytest.mark.timeout(60)

WSGI_APP = "tests.apps_wsgi:app"
# the validator's wrapper takes *args: --interface auto would take it for ASGI 2
WSGI = ("--interface", "wsgi")
UNVALIDATED_APP = "tests.apps_wsgi:unvalidated"
FLASK_APP = "tests.apps_flask:app"
DJANGO_APP = "tests.apps_django:app"
# beyond input.MEMORY_BODY_MAX: the body is spooled to a temporary file
LARGE_BODY = os.urandom(3 * 1024 * 1024 + 17)
FILE_SIZE = 300 * 1024 + 5
SENDFILE_SIZE = 4 * 1024 * 1024


@pytest.fixture
def wsgi_server(servers, mode) -> ServerProcess:
    return servers.get(WSGI_APP, mode, *WSGI)


@pytest.fixture
def unvalidated(servers, mode) -> ServerProcess:
    return servers.get(UNVALIDATED_APP, mode)


@pytest.fixture
def data_file(tmp_path) -> tuple[str, bytes]:
    content = os.urandom(FILE_SIZE)
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    return str(path), content


def environ_of(server: ServerProcess, target: str = "/environ", headers=(), **kw) -> dict:
    with server.client() as client:
        response = client.request("GET", target, [("Host", "example.org"), *headers], **kw)
    assert response.status == 200, response.body
    return response.json()


def one_line_naming(server: ServerProcess, text: str) -> str:
    """The one log line naming `text`, which no traceback follows."""
    server.wait_for_log(re.escape(text))
    lines = server.output().splitlines()
    found = [index for index, line in enumerate(lines) if text in line]
    assert len(found) == 1, lines
    following = lines[found[0] + 1 : found[0] + 2]
    assert not any(line.startswith("Traceback") for line in following), lines[found[0] :]
    return lines[found[0]]


# -- the environ ------------------------------------------------------------------------


def test_environ_has_pep_3333_types_and_values(wsgi_server):
    environ = environ_of(wsgi_server, "/environ?a=1&b=%20")
    wsgi = environ.pop("wsgi")
    assert environ.pop("thread").startswith("fastserve.wsgi_")  # one of --threads
    cgi = {key: value for key, (value, _) in environ.items()}
    assert {kind for _, kind in environ.values()} == {"str"}
    assert cgi["REQUEST_METHOD"] == "GET"
    assert (cgi["SCRIPT_NAME"], cgi["PATH_INFO"]) == ("", "/environ")
    assert cgi["QUERY_STRING"] == "a=1&b=%20"
    assert cgi["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (cgi["SERVER_NAME"], cgi["SERVER_PORT"]) == ("127.0.0.1", str(wsgi_server.port))
    assert cgi["REMOTE_ADDR"] == "127.0.0.1" and cgi["REMOTE_PORT"].isdigit()
    assert cgi["HTTP_HOST"] == "example.org"
    assert wsgi == {
        "version": [1, 0],
        "url_scheme": "http",
        "multithread": True,
        "multiprocess": False,
        "run_once": False,
        "input_terminated": True,
        "file_wrapper": True,
    }
    # wsgi.errors writes into the fastserve.error logger
    wsgi_server.wait_for_log(r"ERROR: +environ seen")


def test_header_variables(wsgi_server):
    environ = environ_of(
        wsgi_server,
        headers=[
            ("X-Auth_User", "forged"),
            ("X-Auth-User", "vouched"),
            ("X-Repeated", "a"),
            ("X-Repeated", "b"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("Content-Type", "text/plain"),
        ],
    )
    # CVE-2015-0219: the underscore spelling is dropped, not folded into the dash one
    assert environ["HTTP_X_AUTH_USER"][0] == "vouched"
    assert environ["HTTP_X_REPEATED"][0] == "a, b"
    assert environ["HTTP_COOKIE"][0] == "a=1; b=2"
    assert environ["CONTENT_TYPE"][0] == "text/plain" and "HTTP_CONTENT_TYPE" not in environ


def test_multiprocess_and_multithread_say_workers_and_threads(start_server, mode):
    server = start_server(WSGI_APP, mode, *WSGI, "--workers", "2", "--threads", "1")
    assert f"({mode} mode, WSGI, 1 thread, 2 workers" in server.output()
    environ = environ_of(server)
    assert (environ["wsgi"]["multiprocess"], environ["wsgi"]["multithread"]) == (True, False)
    assert server.stop() == 0


def test_root_path_and_percent_decoding(servers, mode):
    server = servers.get(WSGI_APP, mode, *WSGI, "--root-path", "/api")
    environ = environ_of(server, "/items/caf%C3%A9%2Fx?q=%C3%A9")
    assert environ["SCRIPT_NAME"][0] == "/api"
    # the path's bytes, percent-decoded, as latin-1 (PEP 3333's bytes-as-str)
    assert environ["PATH_INFO"][0] == "/items/caf\xc3\xa9/x"
    assert environ["QUERY_STRING"][0] == "q=%C3%A9"


def test_scheme_and_client_from_a_trusted_proxy(wsgi_server):
    environ = environ_of(
        wsgi_server, headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "203.0.113.7")]
    )
    assert environ["wsgi"]["url_scheme"] == "https"
    assert environ["REMOTE_ADDR"][0] == "203.0.113.7"


# -- the request body ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["read", "readline", "readlines", "iter"])
def test_input_stream(wsgi_server, how):
    body = b"first line\nsecond\n\nlast, no newline"
    with wsgi_server.client() as client:
        response = client.request("POST", f"/echo?how={how}", [("Host", "x")], body)
    assert (response.status, response.body) == (200, body)
    assert response.header("x-lines") == "3"


def test_chunked_upload(wsgi_server):
    with wsgi_server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        response = client.read_response()
        assert (response.status, response.body) == (200, b"hello world")
        # the de-chunked length is known once the body is in: CONTENT_LENGTH says it
        client.send(
            b"POST /environ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        assert client.read_response().json()["CONTENT_LENGTH"] == ["3", "str"]


def test_expect_100_continue(wsgi_server):
    with wsgi_server.client() as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert client.read_response().status == 100
        client.send(b"hello")
        response = client.read_response()
    assert (response.status, response.body) == (200, b"hello")


# -- the response -------------------------------------------------------------------------


def test_write_callable(wsgi_server):
    with wsgi_server.client() as client:
        response = client.request("GET", "/write", [("Host", "x")])
    assert (response.status, response.body) == (200, b"written twice")


def test_exc_info_before_the_head_replaces_it(wsgi_server):
    with wsgi_server.client() as client:
        response = client.request("GET", "/exc-info", [("Host", "x")])
    assert (response.status, response.body) == (503, b"recovered")


def test_exc_info_after_the_head_closes_the_connection(wsgi_server):
    with wsgi_server.client() as client:
        client.send(b"GET /exc-info-after-head HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(IncompleteResponse):
            client.read_response()
    wsgi_server.wait_for_log("ValueError: after the head")


def test_streamed_response_is_chunked(wsgi_server):
    with wsgi_server.client() as client:
        response = client.request("GET", "/stream?n=4", [("Host", "x")])
    assert response.chunked and response.header("content-length") is None
    assert response.body == b"".join(b"chunk %d\n" % index for index in range(4))


def test_close_runs_when_the_client_goes_away_mid_stream(wsgi_server, token):
    with wsgi_server.client() as client:
        client.send(b"GET /endless?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        assert client.read_head()[1] == 200
    events = wsgi_server.wait_event(token, bool, path_prefix="/events")
    assert events == ["closed"]


def test_list_body_has_content_length_and_head_none(unvalidated):
    with unvalidated.client() as client:
        response = client.request("GET", "/list", [("Host", "x")])
        assert response.header("content-length") == "13" and not response.chunked
        assert response.body == b"one two three"
        head = client.request("HEAD", "/list", [("Host", "x")])
        assert head.header("content-length") == "13"
        # no body followed the HEAD response: the next response parses from its start
        assert client.request("GET", "/list", [("Host", "x")]).body == b"one two three"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_with_204_and_304(unvalidated, status):
    with unvalidated.client() as client:
        target = f"/status?status={status.replace(' ', '+')}"
        response = client.request("GET", target, [("Host", "x")])
        assert response.status == int(status[:3])
        # nothing followed the head: the next response parses from its start
        assert client.request("GET", "/list", [("Host", "x")]).body == b"one two three"


@pytest.mark.parametrize("length", [None, 1000], ids=["whole", "content-length"])
def test_file_wrapper(unvalidated, data_file, length):
    path, content = data_file
    target = f"/file?path={path}" + (f"&length={length}" if length else "")
    with unvalidated.client() as client:
        response = client.request("GET", target, [("Host", "x")])
    expected = content[:length] if length else content
    assert response.status == 200 and response.body == expected
    assert response.header("content-length") == str(len(expected))


def test_file_wrapper_over_tls(servers, mode, tls_files, data_file):
    """Under TLS the file is read in blocks (no sendfile through TLS); url_scheme https."""
    key, cert, context = tls_files
    server = servers.get(UNVALIDATED_APP, mode, "--ssl-keyfile", key, "--ssl-certfile", cert)
    path, content = data_file
    with httpx.Client(verify=context, timeout=10) as client:
        assert client.get(server.url("/file"), params={"path": path}).content == content
        environ = client.get(server.url("/environ")).json()
    assert environ["wsgi"]["url_scheme"] == "https"


def test_hop_by_hop_headers_are_dropped(unvalidated):
    with unvalidated.client() as client:
        response = client.request("GET", "/hop-by-hop", [("Host", "x")])
        assert (response.status, response.body) == (200, b"hop")
        assert response.header("x-kept") == "yes" and response.header("keep-alive") is None
        assert response.header("connection") is None
        # the app's Connection: close was not the server's: the connection stays open
        assert client.request("GET", "/list", [("Host", "x")]).body == b"one two three"


def test_a_str_in_the_body_is_a_500_and_one_line(unvalidated, token):
    with unvalidated.client() as client:
        response = client.request("GET", f"/text-body?token={token}", [("Host", "x")])
    assert response.status == 500
    line = one_line_naming(unvalidated, f"'text {token}'")
    assert "must be bytes, not str" in line


def test_bad_status_is_a_500_and_one_line(unvalidated, token):
    with unvalidated.client() as client:
        response = client.request("GET", f"/bad-status?status=OK+{token}", [("Host", "x")])
    assert response.status == 500
    line = one_line_naming(unvalidated, f"'OK {token}'")
    assert "Invalid WSGI response" in line and "status" in line


def test_bad_header_is_a_500_and_one_line(unvalidated, token):
    with unvalidated.client() as client:
        response = client.request("GET", f"/bad-header?value={token}", [("Host", "x")])
    assert response.status == 500 and response.header("x-injected") is None
    line = one_line_naming(unvalidated, token)
    assert "CR, LF or NUL" in line


def test_app_exception_is_a_500_logged_once(wsgi_server, token):
    with wsgi_server.client() as client:
        response = client.request("GET", f"/fail?token={token}", [("Host", "x")])
    assert response.status == 500
    wsgi_server.wait_for_log(f"RuntimeError: app failure {token}")
    assert wsgi_server.output().count(f"RuntimeError: app failure {token}") == 1


# -- threads ------------------------------------------------------------------------------


def hold(server: ServerProcess, name: str, release_dir) -> object:
    """A request held in the app until `release_dir/name` exists, in a thread."""
    url = server.url(f"/hold?name={name}&file={release_dir / name}")
    return start_thread(httpx.get, url, timeout=30)


def test_requests_beyond_the_threads_wait_for_one(start_server, mode, tmp_path):
    server = start_server(WSGI_APP, mode, *WSGI, "--threads", "2")
    held = [hold(server, name, tmp_path) for name in ("a", "b")]
    server.wait_for_log("hold a started")
    server.wait_for_log("hold b started")
    (tmp_path / "c").touch()  # the third is released as soon as it runs
    with server.client() as client:
        client.send(
            b"POST /hold?name=c&file=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
            b"Expect: 100-continue\r\n\r\n" % str(tmp_path / "c").encode()
        )
        assert client.read_response().status == 100  # its request is in, its body next
        client.send(b"!")
        (tmp_path / "a").touch()
        assert client.read_response().body == b"c"
    (tmp_path / "b").touch()
    assert [thread.join().text for thread in held] == ["a", "b"]
    output = server.output()
    assert output.index("hold a done") < output.index("hold c started")
    assert server.stop() == 0


def test_limit_concurrency_answers_503_while_the_threads_are_held(start_server, mode, tmp_path):
    server = start_server(WSGI_APP, mode, *WSGI, "--threads", "2", "--limit-concurrency", "2")
    held = [hold(server, name, tmp_path) for name in ("a", "b")]
    server.wait_for_log("hold b started")
    server.wait_for_log("hold a started")
    assert httpx.get(server.url("/environ"), timeout=10).status_code == 503
    for name in ("a", "b"):
        (tmp_path / name).touch()
    assert [thread.join().status_code for thread in held] == [200, 200]
    assert server.stop() == 0


def test_timeout_request_answers_504(start_server, mode, tmp_path):
    server = start_server(WSGI_APP, mode, *WSGI, "--timeout-request", "0.5")
    timed_out = hold(server, "late", tmp_path)
    server.wait_for_log("hold late started")
    assert timed_out.join().status_code == 504
    (tmp_path / "late").touch()
    server.wait_for_log("hold late done")  # its thread is free again
    assert httpx.get(server.url("/environ"), timeout=10).status_code == 200
    assert server.stop() == 0


def test_graceful_shutdown_waits_for_a_wsgi_request(start_server, mode, tmp_path):
    server = start_server(WSGI_APP, mode, *WSGI)
    in_flight = hold(server, "last", tmp_path)
    server.wait_for_log("hold last started")
    server.send_signal(signal.SIGTERM)
    server.wait_for_log("Shutting down")
    (tmp_path / "last").touch()
    assert in_flight.join().text == "last"
    assert server.wait() == 0


def test_server_name_on_a_unix_socket_is_the_host_headers(start_server, mode, tmp_path):
    path = str(tmp_path / "wsgi.sock")
    server = start_server(WSGI_APP, mode, *WSGI, uds=path)
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, base_url="http://example.org:8080") as client:
        environ = client.get("/environ").json()
    assert (environ["SERVER_NAME"][0], environ["SERVER_PORT"][0]) == ("example.org", "8080")
    assert "REMOTE_ADDR" not in environ
    assert server.stop() == 0


# -- interfaces ---------------------------------------------------------------------------


def test_interface_wsgi_on_an_asgi_app_is_a_500(start_server, mode):
    server = start_server("tests.apps:hello", mode, *WSGI)
    assert httpx.get(server.url("/"), timeout=10).status_code == 500
    server.wait_for_log("TypeError")
    assert server.stop() == 0


def test_interface_and_threads_from_a_config_file(start_server, mode, tmp_path):
    config = tmp_path / "fastserve.toml"
    config.write_text('interface = "wsgi"\nthreads = 3\n')
    server = start_server(WSGI_APP, mode, "--config", str(config))
    assert f"({mode} mode, WSGI, 3 threads" in server.output()
    assert environ_of(server)["REQUEST_METHOD"][0] == "GET"
    assert server.stop() == 0


def test_threads_0_calls_the_app_on_the_event_loop(start_server, mode, data_file):
    """bjoern's model: no thread; a streamed body is gathered whole, then sent; a
    file_wrapper goes by pathsend after the call (its descriptor kept open for it)."""
    server = start_server(UNVALIDATED_APP, mode, *WSGI, "--threads", "0")
    assert f"({mode} mode, WSGI, on the event loop's thread" in server.output()
    path, content = data_file
    with server.client() as client:
        environ = client.request("GET", "/environ", [("Host", "x")]).json()
        assert (environ["wsgi"]["multithread"], environ["thread"]) == (False, "MainThread")
        streamed = client.request("GET", "/stream?n=3", [("Host", "x")])
        assert streamed.body == b"".join(b"chunk %d\n" % index for index in range(3))
        response = client.request("GET", f"/file?path={path}", [("Host", "x")])
        assert (response.status, response.body) == (200, content)
        assert client.request("HEAD", "/list", [("Host", "x")]).header("content-length") == "13"
    assert server.stop() == 0


def test_threads_from_the_environment(start_server, mode):
    server = start_server(WSGI_APP, mode, *WSGI, env={"FASTSERVE_THREADS": "5"})
    assert f"({mode} mode, WSGI, 5 threads" in server.output()
    assert server.stop() == 0


def test_lifespan_on_is_refused_for_a_wsgi_app(spawn):
    server = spawn(FLASK_APP, "--port", "0", "--lifespan", "on", ready=False)
    assert server.wait() == 1
    assert "--lifespan on: a WSGI app has no lifespan protocol" in server.output()


# -- Flask --------------------------------------------------------------------------------


@pytest.fixture
def flask(servers, mode):
    server = servers.get(FLASK_APP, mode)
    with httpx.Client(base_url=server.url(""), timeout=10) as client:
        yield client


def test_flask_is_found_by_auto_and_has_no_lifespan(servers, mode):
    output = servers.get(FLASK_APP, mode).output()
    assert f"({mode} mode, WSGI, 8 threads" in output
    assert "Waiting for application startup" not in output


def test_flask_json(flask):
    response = flask.post("/json", json={"a": [1, 2], "text": "é" * 1000})
    assert response.json() == {
        "received": {"a": [1, 2], "text": "é" * 1000},
        "path": "/json",
        "root": "",
    }


def test_flask_form_post(flask):
    response = flask.post("/form", data={"name": "ada", "lang": "py"}, files={"doc": b"x"})
    assert response.json() == {"form": {"name": "ada", "lang": "py"}, "files": ["doc"]}


def test_flask_chunked_upload_through_request_stream(flask):
    def chunks():
        for start in range(0, len(LARGE_BODY), 100000):
            yield LARGE_BODY[start : start + 100000]

    response = flask.post("/upload", content=chunks())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.json() == {
        "size": len(LARGE_BODY),
        "sha256": hashlib.sha256(LARGE_BODY).hexdigest(),
    }


def test_flask_stream_with_context(flask):
    with flask.stream("GET", "/stream?n=5") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        text = response.read().decode()
    assert text == "".join(f"/stream {index}\n" for index in range(5))


def test_flask_send_file(flask, data_file):
    path, content = data_file
    response = flask.get("/file", params={"path": path})
    assert response.content == content
    assert response.headers["content-length"] == str(len(content))


def test_flask_exception_is_a_500(servers, mode, flask, token):
    assert flask.get("/fail", params={"token": token}).status_code == 500
    servers.get(FLASK_APP, mode).wait_for_log(f"RuntimeError: flask failure {token}")


# -- Django -------------------------------------------------------------------------------


@pytest.fixture
def django(servers, mode):
    server = servers.get(DJANGO_APP, mode)
    with httpx.Client(base_url=server.url(""), timeout=10) as client:
        yield client


def test_django_request_body(django):
    response = django.post("/body", content=LARGE_BODY)
    assert response.json() == {
        "size": len(LARGE_BODY),
        "sha256": hashlib.sha256(LARGE_BODY).hexdigest(),
        "path": "/body",
    }


def test_django_chunked_request_body(django):
    response = django.post("/body", content=iter([b"chunked ", b"body"]))
    assert response.json()["size"] == len(b"chunked body")


def test_django_streaming_response(django):
    with django.stream("GET", "/stream?n=4") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        text = response.read().decode()
    assert text == "".join(f"part {index}\n" for index in range(4))


def test_django_file_response(django, data_file):
    path, content = data_file
    response = django.get("/file", params={"path": path})
    assert response.content == content


# -- Gunicorn -----------------------------------------------------------------------------


def test_gunicorn_worker_serves_flask():
    pytest.importorskip("gunicorn")
    command = gunicorn_command(FLASK_APP, "--threads", "3", workers=2)
    server = ServerProcess(command)
    try:
        server.wait_ready(pattern=GUNICORN_READY)
        server.wait_workers(2)
        response = httpx.post(server.url("/json"), json={"under": "gunicorn"}, timeout=10)
        assert response.json()["received"] == {"under": "gunicorn"}
        # Gunicorn's --threads and -w, as the environ tells them
        assert httpx.get(server.url("/wsgi"), timeout=10).json() == {
            "multithread": True,
            "multiprocess": True,
        }
        assert httpx.get(server.url("/stream?n=2"), timeout=10).text == "/stream 0\n/stream 1\n"
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_file_wrapper_goes_by_sendfile(unvalidated, tmp_path):
    """Around a real file, the body goes by pathsend (sendfile: a few system calls),
    not in the wrapper's 8 KiB blocks (one write each)."""
    content = os.urandom(SENDFILE_SIZE)
    path = tmp_path / "large.bin"
    path.write_bytes(content)
    with unvalidated.client() as client:
        before = write_syscalls(unvalidated.pid)
        response = client.request("GET", f"/file?path={path}", [("Host", "x")])
        writes = write_syscalls(unvalidated.pid) - before
    assert response.body == content
    assert writes < SENDFILE_SIZE // FILE_BLOCK_SIZE // 4, writes


@pytest.mark.parametrize("threads", ["8", "0"])
def test_file_wrapper_leaves_no_descriptor_open(start_server, mode, data_file, threads):
    """The duplicate descriptor kept for the pathsend after close() is closed with
    the request: once the responses are in, no descriptor of the server names the file."""
    server = start_server(UNVALIDATED_APP, mode, *WSGI, "--threads", threads)
    path, content = data_file
    with server.client() as client:
        for _ in range(5):
            assert client.request("GET", f"/file?path={path}", [("Host", "x")]).body == content
    wait_until(lambda: path not in open_files(server.pid), 10, message=f"{path} closed")
    assert server.stop() == 0


def open_files(pid: int) -> list[str]:
    """What the descriptors of process `pid` name."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed since the listing
    return names
