"""What the fuzz harnesses (tests/fuzz/) found, kept as tests, and every seed of their
corpus replayed through every harness's `check` (no atheris needed): the normal suite
holds every invariant the fuzzers check, on every input they start from.

Each regression runs both HTTP modes over the harness's client transport
(`fuzz_http.exchange`: the input fed in the given reads, then the client goes), with
the harness's ASGI echo and its WSGI twin (fuzz_wsgi: the app served as
`--interface wsgi` serves one).
"""

from __future__ import annotations

import importlib
import sys
import threading
import zlib
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_common  # noqa: E402
import fuzz_http  # noqa: E402
import fuzz_http2  # noqa: E402
import fuzz_runner  # noqa: E402
import fuzz_websocket  # noqa: E402
import fuzz_wsgi  # noqa: E402
import seeds  # noqa: E402

from fastserve.protocols.http.errors import error_response  # noqa: E402

BAD_REQUEST = error_response(400)
CONTINUATION, TEXT, PING, PONG = 0x0, 0x1, 0x9, 0xA
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # what permessage-deflate strips from a message


@pytest.mark.parametrize("harness", list(fuzz_runner.HARNESSES))
@pytest.mark.parametrize(
    "path",
    fuzz_runner.corpus_files(),
    ids=lambda path: "%s/%s" % (path.parent.name, path.name),
)
def test_corpus_holds_every_invariant(harness, path):
    importlib.import_module(fuzz_runner.HARNESSES[harness]).check(path.read_bytes())


def test_corpus_is_the_seeds():
    on_disk = {
        (path.parent.name, path.name): path.read_bytes() for path in fuzz_runner.corpus_files()
    }
    expected = {
        (harness, name): data
        for harness, named in seeds.SEEDS.items()
        for name, data in named.items()
    }
    assert on_disk == expected, "run 'python tests/fuzz/seeds.py' and commit the corpus"


SERVED = {"asgi": fuzz_http.ASGI, "wsgi": fuzz_wsgi.WSGI}


@pytest.fixture(params=list(SERVED))
def interface(request) -> str:
    """The echo app the regressions are served to: ASGI, or its WSGI twin."""
    return request.param


@pytest.fixture
def exchange(mode, interface):
    """fuzz_http.exchange in `mode`, with the `interface` echo."""

    def run(reads: list[bytes]) -> tuple[bytes, bool, list]:
        return fuzz_http.exchange(fuzz_http.MODES[mode], reads, SERVED[interface])

    return run


def test_a_wsgi_run_ends_with_no_call_in_flight_and_no_thread_more(mode):
    # The harness waits for the app's thread calls (an event) and reuses one set of
    # threads (fuzz_common.WatchedThreads, the app's `app_threads`): a run cannot
    # spill into the next one, nor leave threads behind.
    pipelined = seeds.WSGI["pipelined-bodies"]
    protocol_class = fuzz_http.MODES[mode]
    fuzz_http.exchange(protocol_class, [pipelined], fuzz_wsgi.WSGI)
    app_threads = list(fuzz_wsgi.WSGI.threads.threads)
    assert fuzz_wsgi.WSGI.settings.app.app_threads is fuzz_wsgi.WSGI.threads
    threads = threading.active_count()
    for reads in fuzz_common.reads_of(pipelined, bytewise_max=len(pipelined)):
        written, closed, calls = fuzz_http.exchange(protocol_class, reads, fuzz_wsgi.WSGI)
        assert [target for _, target, _ in calls] == [b"/1", b"/2", b"/3", b"/4"]
        assert not fuzz_wsgi.WSGI.threads.busy()
    assert threading.active_count() == threads
    assert fuzz_wsgi.WSGI.threads.threads == app_threads
    assert len(app_threads) == fuzz_wsgi.WSGI.threads.size


def test_bytes_that_cannot_start_a_request_are_refused_however_they_arrive(exchange):
    # The pure mode refused "GZET " at once only when it came in one read: in pieces
    # it waited for the whole head (or the header timeout).
    for reads in ([b"GZET / HTTP/1.1\r\n"], [b"G", b"Z", b"E", b"T", b" / HTTP/1.1\r\n"]):
        written, closed, calls = exchange(reads)
        assert (written, closed, calls) == (BAD_REQUEST, True, []), reads


@pytest.mark.parametrize(
    "target",
    [b"x", b"x:y", b"host:80", b"?q", b"1a://b", b"a:/b", b"http://exa#mple.com/p"],
)
def test_request_target_forms_llhttp_refuses_are_refused_in_both_modes(exchange, target):
    # h11 takes any target bytes: the pure mode served `GET x HTTP/1.1` (path "x").
    written, closed, calls = exchange([b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target])
    assert (written, closed, calls) == (BAD_REQUEST, True, [])


@pytest.mark.parametrize(
    "target", [b"/a", b"*", b"http://a/b?c", b"//a", b"http://u:p@[::1]:80", b"http://a?q"]
)
def test_request_target_forms_both_modes_serve(exchange, target):
    written, closed, calls = exchange([b"OPTIONS %s HTTP/1.1\r\nHost: a\r\n\r\n" % target])
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and not closed
    assert [method for method, _, _ in calls] == ["OPTIONS"]


@pytest.mark.parametrize("library", fuzz_websocket.LIBRARIES)
def test_ping_between_fragments_of_a_compressed_message(library):
    # wsproto took the fragments after the ping as plain bytes: the app got "llo".
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = compressor.compress(b"hello") + compressor.flush(zlib.Z_SYNC_FLUSH)
    deflated = deflated[: -len(DEFLATE_TAIL)]
    frames = (
        fuzz_websocket.client_frame(TEXT, deflated[:2], fin=False, rsv=fuzz_websocket.RSV1)
        + fuzz_websocket.client_frame(PING, b"p")
        + fuzz_websocket.client_frame(CONTINUATION, deflated[2:])
    )
    written = fuzz_websocket.exchange(library, [frames])
    sent = fuzz_websocket.frames_of(written)
    assert [opcode for opcode, _ in sent] == [PONG, TEXT]
    inflated = zlib.decompressobj(wbits=-zlib.MAX_WBITS).decompress(sent[1][1] + DEFLATE_TAIL)
    assert inflated == b"hello"


def test_bytes_that_cannot_start_a_request_are_a_400_even_past_the_head_limit(exchange):
    # The pure mode answered 431 when the garbage came in one read longer than the
    # head limit, 400 when in smaller ones; the C mode always 400.
    garbage = b"\x82" * (fuzz_http.LIMITS["limit_request_head"] + 1)
    written, closed, calls = exchange([garbage])
    assert (written, closed, calls) == (BAD_REQUEST, True, [])


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked, chunked", b"identity"])
def test_transfer_codings_other_than_chunked_are_a_400(exchange, coding):
    # The C mode served "gzip, chunked" (llhttp takes it; the app got the body still
    # gzipped), the pure mode refused it (h11 takes only "chunked").
    request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n1\r\na\r\n0\r\n\r\n"
    written, closed, calls = exchange([request % coding])
    assert (written, closed, calls) == (BAD_REQUEST, True, [])


def test_a_target_over_both_limits_gets_the_same_answer_however_it_arrives(interface):
    # The C mode answered 431 (head limit) when the whole target came in one read,
    # 414 (line limit, crossed first) when in pieces.
    target = b"/" + b"a" * fuzz_http.LIMITS["limit_request_head"]
    request = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target
    pieces = [request[i : i + 100] for i in range(0, len(request), 100)]
    for reads in ([request], pieces):
        outcome = fuzz_http.exchange(fuzz_http.MODES["c"], reads, SERVED[interface])
        assert outcome == (error_response(414), True, []), len(reads)


def test_chunk_extension_value_of_a_token_then_a_quoted_string(exchange):
    # llhttp takes `a=b"c"`; the pure mode's chunk decoder refused it with a 400.
    request = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'1;a=b"c"\r\nx\r\n0\r\n\r\n'
    )
    written, closed, calls = exchange([request])
    assert written.endswith(b"\r\n\r\nPOST / 1") and not closed


@pytest.mark.parametrize("target", [b"example.com>443", b"a#b"])
def test_connect_targets_llhttp_refuses_are_refused_in_both_modes(exchange, target):
    # The pure mode took any CONNECT target.
    request = b"CONNECT %s HTTP/1.1\r\nHost: a\r\n\r\n" % target
    written, closed, calls = exchange([request])
    assert (written, closed, calls) == (BAD_REQUEST, True, [])


@pytest.mark.parametrize("mode", list(fuzz_http2.MODES))
def test_an_app_answering_on_a_connection_the_server_ended_is_no_app_error(mode):
    # DATA after END_STREAM in the read that opened the stream: nghttp2 ends the
    # session (GOAWAY STREAM_CLOSED) before connection_lost marks the streams, and the
    # app's send raised ClientDisconnected, logged as "Exception in ASGI application"
    # with its traceback (exchange fails on any error logged).
    sent = fuzz_http2.PREFACE + seeds.HTTP2["data-after-end-stream"]
    written, closed, calls = fuzz_http2.exchange(fuzz_http2.MODES[mode], [sent])
    assert [call[:2] for call in calls] == [["GET", b"/"]]
