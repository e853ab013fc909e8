"""HTTP/2's advertised limits as options (hypercorn's names): --h2-max-concurrent-streams,
--h2-max-inbound-frame-size, --h2-initial-window-size, both modes, against a real
server; their bounds as one error line; Gunicorn's http2_* settings in a -c file."""

from __future__ import annotations

import pytest
from hyperframe.frame import DataFrame, RstStreamFrame

from h2_raw import CANCEL, FRAME_SIZE_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, RawH2
from test_config_file import print_config
from test_gunicorn_options import run_cli
from test_http2_frames import STREAM_OR_CONNECTION, WAITING_PATH, assert_alive, assert_error

APP = "tests.apps_http2:app"
STREAMS = 5
FRAME_SIZE = 32768
WINDOW = 131072
OPTIONS = (
    "--h2-max-concurrent-streams", str(STREAMS),
    "--h2-max-inbound-frame-size", str(FRAME_SIZE),
    "--h2-initial-window-size", str(WINDOW),
)  # fmt: skip
# RFC 9113 6.5.2: setting identifiers.
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5


@pytest.fixture
def client(servers, mode):
    with RawH2(servers.get(APP, mode, "--http2", *OPTIONS).port) as connection:
        yield connection


def test_the_settings_say_the_options(client):
    settings = client.server_settings
    assert settings[SETTINGS_MAX_CONCURRENT_STREAMS] == STREAMS
    assert settings[SETTINGS_MAX_FRAME_SIZE] == FRAME_SIZE
    assert settings[SETTINGS_INITIAL_WINDOW_SIZE] == WINDOW


def test_a_frame_up_to_the_frame_size_is_taken_one_over_is_refused(client):
    """A DATA frame past the protocol's default (16 KiB) and within the option is
    read whole; one past the option is FRAME_SIZE_ERROR."""
    client.send(client.headers(1, _post_fields(FRAME_SIZE), end_stream=False))
    client.send(DataFrame(1, data=b"x" * FRAME_SIZE, flags=["END_STREAM"]))
    status, body = client.response(1)
    assert status == 200 and b'"body_length": %d' % FRAME_SIZE in body, body
    client.send(client.headers(3, _post_fields(FRAME_SIZE + 1), end_stream=False))
    client.send(DataFrame(3, data=b"x" * (FRAME_SIZE + 1)))
    assert_error(client, 3, FRAME_SIZE_ERROR)


def test_the_stream_over_the_option_is_refused(client):
    ids = range(1, 2 * STREAMS + 2, 2)
    client.send(*(client.headers(i, _get_fields(WAITING_PATH)) for i in ids))
    scope, code = client.error_of(ids[-1])
    assert scope in STREAM_OR_CONNECTION
    if scope == "connection":  # nghttp2, its SETTINGS acknowledged (test_http2_frames.py)
        assert code == PROTOCOL_ERROR, client.seen[-3:]
        return
    assert code == REFUSED_STREAM
    client.send(RstStreamFrame(1, error_code=CANCEL))
    assert_alive(client, 2 * STREAMS + 3)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--h2-max-inbound-frame-size", "16383", "between 16384 and 16777215"),
        ("--h2-max-inbound-frame-size", "16777216", "between 16384 and 16777215"),
        ("--h2-max-concurrent-streams", "0", "must be a positive number"),
        ("--h2-initial-window-size", "2147483648", "must be at most 2147483647"),
    ],
)
def test_a_value_out_of_bounds_is_one_error_line(option, value, message):
    result = run_cli("tests.apps:app", "--http2", option, value, "--check-config")
    assert result.returncode != 0
    assert option in result.stderr and message in result.stderr, result.stderr


def test_gunicorn_http2_settings_in_a_config_file(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        'http_protocols = "h2"\nhttp2_max_concurrent_streams = 50\n'
        "http2_max_frame_size = 65536\nhttp2_initial_window_size = 262144\n"
    )
    settings = print_config("-c", str(conf))
    assert settings["h2-max-concurrent-streams"] == ("50", str(conf))
    assert settings["h2-max-inbound-frame-size"] == ("65536", str(conf))
    assert settings["h2-initial-window-size"] == ("262144", str(conf))


def _get_fields(path: str) -> list:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h2.test"),
            (b":path", path.encode())]  # fmt: skip


def _post_fields(length: int) -> list:
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"h2.test"),
            (b":path", b"/"), (b"content-length", b"%d" % length)]  # fmt: skip
