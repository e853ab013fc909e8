"""--access-log-format: Gunicorn's atoms, in both HTTP modes and under real Gunicorn;
a bad format is one error line at start-up."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from process_util import get, start_gunicorn

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
# Every atom, each behind a name, so that a test reads them back from the line.
FORMAT = (
    'ATOMS h=%(h)s l=%(l)s u=%(u)s t=%(t)s r="%(r)s" m=%(m)s U=%(U)s q=%(q)s H=%(H)s '
    's=%(s)s B=%(B)s b=%(b)s f="%(f)s" a="%(a)s" T=%(T)s M=%(M)s D=%(D)s L=%(L)s p=%(p)s '
    'ua="%({user-agent}i)s" ct="%({Content-Type}o)s" none=%({x-absent}i)s '
    "env=%({FASTSERVE_TEST_ATOM}e)s END"
)
ATOM = re.compile(r'(\w+)=("[^"]*"|\[[^\]]*\]|\S+)')
# the stream route sleeps 10 ms after each of its parts; a sleep may end up to 1 ms
# early by the wall clock (uvloop's timers count whole milliseconds from the loop
# pass's cached time)
PARTS = ("first", "second", "third")
SLEEP_US = 10_000
TIMER_SLACK_US = 1_000
MIN_DURATION_US = (SLEEP_US - TIMER_SLACK_US) * len(PARTS)


def atoms_of(line: str) -> dict:
    return {name: value.strip('"') for name, value in ATOM.findall(line)}


def test_every_atom(start_server, mode, token):
    server = start_server(
        APP, mode, "--access-log-format", FORMAT, env={"FASTSERVE_TEST_ATOM": token}
    )
    response = get(
        server.url(f"/_/stream?parts={','.join(PARTS)}&token={token}"),
        headers={"user-agent": f"probe/{token}", "referer": "http://example.test/from"},
        auth=("alice", "secret"),
    )
    assert response.status_code == 200
    [line] = server.wait_for_log(r"ATOMS .* END")
    atoms = atoms_of(line)
    assert atoms["h"] == "127.0.0.1"
    assert (atoms["l"], atoms["u"]) == ("-", "alice")
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", atoms["t"])
    target = response.request.url.raw_path.decode()
    assert atoms["r"] == f"GET {target} HTTP/1.1"
    assert (atoms["m"], atoms["U"], atoms["H"]) == ("GET", "/_/stream", "HTTP/1.1")
    assert atoms["q"] == target.split("?", 1)[1]
    assert atoms["s"] == "200"
    # body bytes: the parts, not the chunk framing nor the head
    assert int(atoms["B"]) == len(response.content) == len("".join(PARTS))
    assert atoms["b"] == atoms["B"]
    assert atoms["f"] == "http://example.test/from"
    assert atoms["a"] == atoms["ua"] == f"probe/{token}"
    assert atoms["ct"] == "text/plain"
    assert atoms["none"] == "-"
    assert atoms["env"] == token
    assert atoms["p"] == f"<{server.pid}>"
    micros = int(atoms["D"])
    assert micros >= MIN_DURATION_US
    assert int(atoms["M"]) == micros // 1000
    assert int(atoms["T"]) == micros // 1_000_000
    assert atoms["L"] == "%d.%06d" % (micros // 1_000_000, micros % 1_000_000)
    assert server.stop() == 0


def test_body_bytes_of_a_file_and_of_head(start_server, mode, token, tmp_path):
    server = start_server(APP, mode, "--access-log-format", f"{token} %(m)s %(B)s %(b)s")
    assert get(server.url("/_/hello")).status_code == 200
    assert httpx.head(server.url("/_/hello"), timeout=10).status_code == 200
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 100_000)
    assert len(get(server.url(f"/_/pathsend?path={data}")).content) == 100_000
    # the format is the whole line: no level prefix
    lines = server.wait_for_log(rf"(?m)^{token} \w+ \d+ \S+$", count=3)
    assert lines[0] == f"{token} GET 13 13"
    assert lines[1] == f"{token} HEAD 0 -"  # no body bytes: "-", as Apache's %b
    assert lines[2] == f"{token} GET 100000 100000"
    assert server.stop() == 0


def test_default_line_is_unchanged(start_server, mode):
    server = start_server(APP, mode)
    get(server.url("/_/hello?x=1"))
    server.wait_for_log(r'INFO: +127\.0\.0\.1:\d+ - "GET /_/hello\?x=1 HTTP/1\.1" 200 OK\n')
    assert server.stop() == 0


def test_the_servers_own_answer_to_a_failed_app_is_logged(start_server, mode, token):
    """An app that raises before its response gets the server's 500: one access line,
    its bytes the 500's body (as uvicorn, which logs the 500 it sends)."""
    server = start_server(APP, mode, "--access-log-format", "FAILED %(U)s %(q)s %(s)s %(B)s")
    assert get(server.url(f"/_/raise-before?token={token}")).status_code == 500
    body = b"500 Internal Server Error\n"
    server.wait_for_log(rf"FAILED /_/raise-before token={token} 500 {len(body)}\n")
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("fmt", "reason"),
    [
        ("%(nope)s", "unknown atom %(nope)"),
        ("%(h)d", "real number is required"),
        ("%(h)", "incomplete format"),
        ("%s", "every % starts an atom"),
    ],
)
def test_a_bad_format_is_one_error_line(spawn, fmt, reason):
    server = spawn(APP, "--access-log-format", fmt, ready=False)
    assert server.wait() != 0
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"fastserve: error: --access-log-format {fmt!r} is not a valid")
    assert reason in lines[0]


def test_gunicorn_access_logformat(token):
    pytest.importorskip("gunicorn")

    gunicorn_format = f'{token} %(h)s "%(r)s" %(s)s %(B)s %(M)s "%({{user-agent}}i)s" %(p)s'
    server = start_gunicorn(APP, "--access-logfile", "-", "--access-logformat", gunicorn_format)
    try:
        response = get(server.url("/_/hello?q=1"), headers={"user-agent": "probe/1"})
        [line] = server.wait_for_log(rf"{token} .*")
        worker = server.workers().pop()
        assert line == (
            f'{token} 127.0.0.1 "GET /_/hello?q=1 HTTP/1.1" 200 {len(response.content)} '
            f'{line.split()[-3]} "probe/1" <{worker}>'
        )
        assert line.split()[-3].isdigit()  # %(M)s
        assert server.stop() == 0
    finally:
        server.cleanup()


def test_websocket_atoms(start_server, mode, token):
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    server = start_server(
        "tests.apps_websockets:app",
        mode,
        "--access-log-format",
        f'{token} r="%(r)s" s=%(s)s B=%(B)s D=%(D)s U=%(U)s q="%(q)s" '
        'teapot="%({x-teapot}o)s" END',
    )
    base = f"ws://{server.host}:{server.port}"

    async def client():
        async with connect(f"{base}/echo?token={token}") as websocket:
            await websocket.send("hi")
            assert await websocket.recv() == "hi"
        with pytest.raises(InvalidStatus):
            async with connect(f"{base}/http-response"):
                pass

    asyncio.run(asyncio.wait_for(client(), 30))
    accepted, refused = map(atoms_of, server.wait_for_log(rf"{token} .* END", count=2))
    assert accepted["r"] == f"GET /echo?token={token} HTTP/1.1"
    assert (accepted["s"], accepted["B"], accepted["U"]) == ("101", "0", "/echo")
    assert (accepted["q"], accepted["teapot"]) == (f"token={token}", "-")
    assert int(accepted["D"]) >= 0
    # refused by the websocket.http.response extension: its status and headers
    assert (refused["s"], refused["U"], refused["q"]) == ("418", "/http-response", "")
    assert refused["teapot"] == "short and stout"
    assert server.stop() == 0
