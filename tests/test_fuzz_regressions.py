"""What the fuzz harnesses (tests/fuzz/) found, kept as tests, and every seed of their
corpus replayed through every harness's `check` (no atheris needed): the normal suite
holds every invariant the fuzzers check, on every input they start from.

Each regression runs both HTTP modes over the harness's client transport
(`fuzz_http.exchange`: the input fed in the given reads, then the client goes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_http  # noqa: E402

from fastserve.protocols.http.errors import error_response  # noqa: E402

MODES = list(fuzz_http.MODES)
BAD_REQUEST = error_response(400)


def exchange(mode: str, reads: list[bytes]) -> tuple[bytes, bool, list]:
    return fuzz_http.exchange(fuzz_http.MODES[mode], reads)


@pytest.mark.parametrize("mode", MODES)
def test_bytes_that_cannot_start_a_request_are_refused_however_they_arrive(mode):
    # The pure mode refused "GZET " at once only when it came in one read: in pieces
    # it waited for the whole head (or the header timeout).
    for reads in ([b"GZET / HTTP/1.1\r\n"], [b"G", b"Z", b"E", b"T", b" / HTTP/1.1\r\n"]):
        written, closed, calls = exchange(mode, reads)
        assert (written, closed, calls) == (BAD_REQUEST, True, []), reads


@pytest.mark.parametrize(
    "target",
    [b"x", b"x:y", b"host:80", b"?q", b"1a://b", b"a:/b"],
)
@pytest.mark.parametrize("mode", MODES)
def test_request_target_forms_llhttp_refuses_are_refused_in_both_modes(mode, target):
    # h11 takes any target bytes: the pure mode served `GET x HTTP/1.1` (path "x").
    written, closed, calls = exchange(mode, [b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target])
    assert (written, closed, calls) == (BAD_REQUEST, True, [])


@pytest.mark.parametrize("target", [b"/a", b"*", b"http://a/b?c", b"//a"])
@pytest.mark.parametrize("mode", MODES)
def test_request_target_forms_both_modes_serve(mode, target):
    written, closed, calls = exchange(mode, [b"OPTIONS %s HTTP/1.1\r\nHost: a\r\n\r\n" % target])
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and not closed
    assert [method for method, _, _ in calls] == ["OPTIONS"]
