"""`fastserve --reload`: a restart on each file change, with watchfiles or by polling."""

from __future__ import annotations

import os
import re
import sys

import pytest

from process_util import ServerProcess, get, inotify_watched_inodes, wait_until

pytestmark = pytest.mark.timeout(60)

APP_SOURCE = """
VERSION = {version}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"version=%d" % VERSION
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""

POLLING_LAUNCHER = (
    "import sys; sys.modules['watchfiles'] = None; "  # as if watchfiles were not installed
    "from fastserve.cli import main; main(sys.argv[1:])"
)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "reload_app.py").write_text(APP_SOURCE.format(version=1))
    return tmp_path


@pytest.fixture
def spawn():
    started: list[ServerProcess] = []

    def start(args: list, cwd) -> ServerProcess:
        server = ServerProcess(args, cwd=cwd)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.cleanup()


def version(url: str) -> str:
    try:
        return get(url + "/", timeout=5).text
    except Exception as exc:  # noqa: BLE001 - the server may be restarting
        return repr(exc)


def write_version(project, number: int) -> None:
    """Version `number` of the app, atomically: a reloader that scans between the
    truncation and the write of an in-place write would see two changes. (The
    temporary file is a dotfile: not watched.)"""
    new = project / ".reload_app.py.new"
    new.write_text(APP_SOURCE.format(version=number))
    os.replace(new, project / "reload_app.py")


def wait_watching(server: ServerProcess, project, engine: str = "watchfiles") -> None:
    """Wait until the reloader watches `project`: a change from now on is seen.
    With watchfiles, that is when its inotify watch on the directory exists. The
    polling engine records the mtimes right after it started the server process, long
    before that process answers: the first answer is the event to wait for."""
    if engine == "watchfiles":
        inode = os.stat(project).st_ino
        wait_until(
            lambda: inode in inotify_watched_inodes(server.pid),
            15,
            message=f"the reloader to watch {project}",
        )
    assert version(server.url()) == "version=1"


def reload_flags(project) -> list:
    return [
        "reload_app:app",
        "--port",
        "0",
        "--reload",
        "--reload-dir",
        str(project),
        "--reload-delay",
        "0.1",
    ]


@pytest.mark.parametrize("engine", ["watchfiles", "polling"])
def test_reload_restarts_on_every_change(spawn, project, engine):
    if engine == "watchfiles":
        pytest.importorskip("watchfiles")
        args = [sys.executable, "-m", "fastserve", *reload_flags(project)]
    else:
        args = [sys.executable, "-c", POLLING_LAUNCHER, *reload_flags(project)]
    server = spawn(args, cwd=project)
    assert ("using WatchFiles" if engine == "watchfiles" else "using polling") in server.log()
    wait_watching(server, project, engine)
    for number in (2, 3):
        write_version(project, number)
        wait_until(lambda: version(server.url()) == f"version={number}", 15, interval=0.2)
    assert server.log().count("Detected changes in 'reload_app.py'. Reloading...") == 2
    assert server.log().count("Started server process") == 3
    assert server.stop() == 0


def test_reload_include_and_exclude(spawn, project):
    pytest.importorskip("watchfiles")
    (project / "ignored_helper.py").write_text("X = 1\n")
    (project / "settings.toml").write_text("a = 1\n")
    args = [
        sys.executable,
        "-m",
        "fastserve",
        *reload_flags(project),
        "--reload-exclude",
        "ignored_*.py",
        "--reload-include",
        "*.toml",
    ]
    server = spawn(args, cwd=project)
    wait_watching(server, project)
    (project / "ignored_helper.py").write_text("X = 2\n")
    (project / "notes.txt").write_text("not watched\n")
    (project / "settings.toml").write_text("a = 2\n")
    server.wait_for_log(r"Detected changes in .*settings\.toml")
    # The changes of the ignored files came first: had they counted, they would be in
    # this line or in one before it.
    assert re.findall(r"Detected changes in .*", server.log()) == [
        "Detected changes in 'settings.toml'. Reloading..."
    ]
    server.wait_for_log("Started server process", count=2)
    assert server.stop() == 0


def test_reload_survives_a_broken_edit(spawn, project):
    args = [sys.executable, "-m", "fastserve", *reload_flags(project)]
    server = spawn(args, cwd=project)
    wait_watching(server, project)
    (project / "reload_app.py").write_text("this is not python\n")
    server.wait_for_log("Error loading ASGI app")
    write_version(project, 4)
    wait_until(lambda: version(server.url()) == "version=4", 15, interval=0.2)
    assert server.stop() == 0


@pytest.mark.parametrize(
    "args, env, said",
    [
        (["--workers", "2"], {}, "--workers 2 is ignored with --reload"),
        ([], {"WEB_CONCURRENCY": "3"}, "WEB_CONCURRENCY=3 is ignored with --reload"),
    ],
)
def test_reload_wins_over_workers(project, args, env, said):
    """As uvicorn: --reload runs one server process, and says which setting it ignored."""
    server = ServerProcess(
        [sys.executable, "-m", "fastserve", "reload_app:app", "--port", "0", "--reload", *args],
        cwd=project,
        env=env,
    )
    try:
        server.wait_ready()
        assert version(server.url()) == "version=1"
        assert said in server.output()
        assert "(c mode, reload" in server.output() or "(python mode, reload" in server.output()
        assert server.stop() == 0
    finally:
        server.cleanup()
