"""Gunicorn's process options and a gunicorn.conf.py, as a user runs them: real
`python -m fastserve` processes, real sockets, the pid and uid the kernel reports."""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fastserve.process import Listener, parse_bind, parse_umask
from process_util import ServerProcess, wait_until

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
WHOAMI = "tests.apps_cli:whoami"
# One "running on" line per listener: the TCP URL, or the unix socket's path.
RUNNING = re.compile(r"Fastserve running on (?:(http://\S+)|unix socket (\S+)) \(")
NOBODY = "nobody"
# The umask of the tests below and the socket mode it leaves.
UMASK, UMASK_MODE = "027", 0o750
UVICORN_SOCKET_MODE = 0o666


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "fastserve", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def whoami(where: str) -> dict:
    """GET / of the whoami app at a URL or a unix socket path, on a fresh connection."""
    if where.startswith("http"):
        response = httpx.get(where + "/", timeout=10, headers={"connection": "close"})
    else:
        with httpx.Client(transport=httpx.HTTPTransport(uds=where), timeout=10) as client:
            response = client.get("http://localhost/", headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return response.json()


def listeners(server: ServerProcess, count: int) -> list[str]:
    """The URL or socket path of each "running on" line, once there are `count`."""
    matches = server.wait_for_log(RUNNING.pattern, count=count)
    return [url or path for url, path in matches]


@pytest.fixture
def short_dir(tmp_path_factory):
    """A directory short enough for unix socket paths (108 bytes)."""
    path = Path(f"/tmp/fs-gopts-{os.getpid()}-{os.urandom(3).hex()}")
    path.mkdir()
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- --bind ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bind_repeatable_tcp_v4_v6_and_unix(spawn, short_dir: Path, workers: str) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    unix_path = str(short_dir / "app.sock")
    server = spawn(
        WHOAMI, "-b", "127.0.0.1:0", "--bind", "[::1]:0", "-b", f"unix:{unix_path}",
        "--workers", workers, ready=False,
    )  # fmt: skip
    found = listeners(server, 3)
    assert found[0].startswith("http://127.0.0.1:")
    assert found[1].startswith("http://[::1]:")
    assert found[2] == unix_path
    servers = {whoami(where)["pid"] for where in found}
    if workers == "1":
        assert servers == {server.pid}
    else:
        assert servers <= server.wait_workers(2)
    assert server.stop() == 0
    assert not os.path.exists(unix_path)  # removed at exit


def test_bind_fd_serves_an_inherited_socket(spawn) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = spawn(
        WHOAMI, "-b", f"fd://{listener.fileno()}", pass_fds=(listener.fileno(),), ready=False
    )
    listener.close()
    assert listeners(server, 1) == [f"http://127.0.0.1:{port}"]
    assert whoami(f"http://127.0.0.1:{port}")["pid"] == server.pid
    assert server.stop() == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-b", "127.0.0.1:0", "--port", "9000"], "--bind replaces --host/--port/--uds/--fd"),
        (["-b", "127.0.0.1:0", "--uds", "/tmp/x.sock"], "--bind replaces"),
        (["-b", "127.0.0.1:http"], "--bind '127.0.0.1:http': 'http' is not a port number"),
        (["-b", "127.0.0.1:70000"], "is not a port number"),
        (["-b", "fd://x"], "--bind 'fd://x': 'x' is not a file descriptor number"),
        (["-b", "unix:"], "no socket path after 'unix:'"),
        (["-b", "127.0.0.1:0", "--reuse-port"], "--reuse-port takes --host/--port"),
        (["--user", "no-such-user-here"], "--user 'no-such-user-here': no such user"),
        (["--group", "no-such-group-here"], "--group 'no-such-group-here': no such group"),
        (["--umask", "0o1000"], "--umask '0o1000' is not between 0 and 0o777"),
        (["--umask", "rw"], "--umask 'rw' is not a number"),
        (["-e", "NOVALUE"], "'NOVALUE' is not KEY=VALUE"),
        (["--chdir", "/no/such/dir"], "--chdir '/no/such/dir': No such file or directory"),
    ],
)
def test_bad_process_option_is_one_line(args: list, message: str) -> None:
    result = run_cli(WHOAMI, *args)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize(
    "value, listener",
    [
        ("127.0.0.1:9000", Listener("tcp", host="127.0.0.1", port=9000)),
        ("tcp://LOCALHOST:9000", Listener("tcp", host="localhost", port=9000)),
        ("example.org", Listener("tcp", host="example.org", port=8000)),
        (":9000", Listener("tcp", host="", port=9000)),
        ("", Listener("tcp", host="0.0.0.0", port=8000)),
        ("[::1]:9000", Listener("tcp", host="::1", port=9000)),
        ("[::]", Listener("tcp", host="::", port=8000)),
        ("unix:/run/app.sock", Listener("unix", path="/run/app.sock")),
        ("unix:///run/app.sock", Listener("unix", path="/run/app.sock")),
        ("fd://3", Listener("fd", fd=3)),
    ],
)
def test_bind_forms_as_gunicorn_reads_them(value: str, listener: Listener) -> None:
    assert parse_bind(value) == listener


@pytest.mark.parametrize(
    "value, umask",
    [("022", 0o22), ("0o22", 0o22), ("0x12", 0o22), ("18", 0o22), (0o27, 0o27), ("0", 0)],
)
def test_umask_forms_as_gunicorn_reads_them(value, umask: int) -> None:
    assert parse_umask(value) == umask


def test_bind_address_in_use_is_one_line(spawn) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(WHOAMI, "-b", "127.0.0.1:0", "-b", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"Cannot bind 127.0.0.1:{port}: Address already in use" in result.stderr


# -- --user / --group ---------------------------------------------------------------------


def proc_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        line = next(line for line in file if line.startswith("Uid:"))
    return int(line.split()[1])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
@pytest.mark.parametrize("workers", ["1", "2"])
def test_user_and_group_are_dropped_after_binding(spawn, short_dir: Path, workers: str) -> None:
    nobody = pwd.getpwnam(NOBODY)
    unix_path = str(short_dir / "app.sock")
    # --ws none: the stdlib of this interpreter may be unreadable to nobody (/root),
    # and the websockets package imports modules the server has not imported yet.
    server = spawn(
        WHOAMI, "-b", "127.0.0.1:0", "-b", f"unix:{unix_path}", "--user", NOBODY,
        "--workers", workers, "--ws", "none", ready=False,
    )  # fmt: skip
    found = listeners(server, 2)
    for where in found:
        seen = whoami(where)
        assert (seen["uid"], seen["gid"]) == (nobody.pw_uid, nobody.pw_gid)
        assert 0 not in seen["groups"]  # none of root's supplementary groups kept
    # bound as root (port and socket file), owned by the user so that it may remove it
    owner = os.stat(unix_path)
    assert (owner.st_uid, owner.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    if workers == "2":
        assert proc_uid(server.pid) == 0  # the master keeps its user, as Gunicorn's
    assert server.stop() == 0


def test_user_without_a_name_needs_a_group() -> None:
    unnamed = next(uid for uid in range(40000, 50000) if not _has_passwd_entry(uid))
    result = run_cli(WHOAMI, "--port", "0", "--user", str(unnamed), "--ws", "none")
    assert result.returncode == 2
    assert f"--user {unnamed} is not in the password database: give --group too" in result.stderr


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@needs_root
def test_group_by_number(spawn) -> None:
    gid = pwd.getpwnam(NOBODY).pw_gid
    server = spawn(WHOAMI, "--port", "0", "--group", str(gid), "--ws", "none")
    seen = whoami(server.url())
    assert (seen["uid"], seen["gid"], seen["groups"]) == (0, gid, [gid])
    assert server.stop() == 0


# -- --umask and unix socket modes --------------------------------------------------------


@pytest.mark.parametrize(
    "flags, mode",
    [([], UVICORN_SOCKET_MODE), (["--umask", UMASK], UMASK_MODE), (["-m", "0o027"], UMASK_MODE)],
)
@pytest.mark.parametrize("how", ["--uds", "--bind"])
def test_unix_socket_mode(spawn, short_dir: Path, flags: list, mode: int, how: str) -> None:
    unix_path = str(short_dir / "app.sock")
    where = ["--uds", unix_path] if how == "--uds" else ["-b", f"unix:{unix_path}"]
    for workers in ("1", "2"):
        server = spawn(WHOAMI, *where, *flags, "--workers", workers, ready=False)
        listeners(server, 1)
        wait_until(lambda: os.path.exists(unix_path), 30, message="the socket file")
        st = os.stat(unix_path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode, oct(st.st_mode)
        assert whoami(unix_path)["pid"]
        assert server.stop() == 0


# -- --chdir --------------------------------------------------------------------------------


def test_chdir_before_loading_the_app(spawn, tmp_path: Path) -> None:
    """The app and --pid are found in the new directory; --env-file where fastserve
    starts (the command line checked it there)."""
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    (app_dir / "chdir_app.py").write_text("from tests.apps_cli import whoami as app\n")
    env_file = ROOT / "tests" / f"chdir-{os.getpid()}.env"
    env_file.write_text("FASTSERVE_TEST_VALUE=from-the-start-directory\n")
    try:
        server = spawn(
            "chdir_app:app", "--port", "0", "--chdir", str(app_dir), "--pid", "app.pid",
            "--env-file", env_file.relative_to(ROOT), env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        env_file.unlink()
    seen = whoami(server.url())
    assert (seen["cwd"], seen["env"]) == (str(app_dir), "from-the-start-directory")
    assert (app_dir / "app.pid").read_text() == f"{server.pid}\n"
    assert server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_env_reaches_the_app(spawn, tmp_path: Path, workers: str) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FASTSERVE_TEST_VALUE=from-the-env-file\n")
    server = spawn(
        WHOAMI, "--port", "0", "-e", "FASTSERVE_TEST_VALUE=from-the-flag",
        "--env-file", str(env_file), "--workers", workers,
    )  # fmt: skip
    assert whoami(server.url())["env"] == "from-the-flag"  # --env wins over --env-file
    assert server.stop() == 0


# -- --pid ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_pid_file_holds_the_master_pid_and_goes_at_exit(
    spawn, tmp_path: Path, workers: str
) -> None:
    pidfile = tmp_path / "run" / "fastserve.pid"
    pidfile.parent.mkdir()
    server = spawn(WHOAMI, "--port", "0", "-p", str(pidfile), "--workers", workers)
    assert pidfile.read_text() == f"{server.pid}\n"
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o644
    if workers == "2":
        assert whoami(server.url())["ppid"] == server.pid  # a worker answers, not the master
    assert server.stop() == 0
    assert not pidfile.exists()


def test_pid_file_of_a_running_server_is_refused(spawn, tmp_path: Path) -> None:
    pidfile = tmp_path / "fastserve.pid"
    first = spawn(WHOAMI, "--port", "0", "--pid", str(pidfile))
    result = run_cli(WHOAMI, "--port", "0", "--pid", str(pidfile))
    assert result.returncode == 1
    assert f"--pid {pidfile}: already running as pid {first.pid}" in result.stderr
    assert pidfile.read_text() == f"{first.pid}\n"
    assert first.stop() == 0


def test_stale_pid_file_is_replaced(spawn, tmp_path: Path) -> None:
    pidfile = tmp_path / "fastserve.pid"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)  # fmt: skip
    pidfile.write_text(dead.stdout)
    server = spawn(WHOAMI, "--port", "0", "--pid", str(pidfile))
    assert pidfile.read_text() == f"{server.pid}\n"
    assert server.stop() == 0


# -- --check-config -------------------------------------------------------------------------


def test_check_config_imports_the_app_and_binds_nothing(short_dir: Path) -> None:
    unix_path = short_dir / "app.sock"
    result = run_cli(WHOAMI, "-b", f"unix:{unix_path}", "--check-config")
    assert result.returncode == 0, result.stderr
    assert not unix_path.exists()
    assert "Fastserve running" not in result.stderr


@pytest.mark.parametrize(
    "app, message",
    [
        ("tests.no_such_module:app", 'Could not import module "tests.no_such_module"'),
        ("tests.apps_cli:nothing", 'Attribute "nothing" not found in module "tests.apps_cli"'),
    ],
)
def test_check_config_fails_with_one_line(app: str, message: str) -> None:
    result = run_cli(app, "--check-config")
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_check_config_fails_on_a_bad_setting() -> None:
    result = run_cli(WHOAMI, "--check-config", "--umask", "x")
    assert result.returncode == 2
    assert len(error_lines(result)) == 1
