"""`fastserve -c gunicorn.conf.py`: a Gunicorn config file moves over unchanged. Real
processes; the server hooks write what they saw into a file the test reads."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from process_util import ServerProcess, free_port, wait_until
from test_config_file import print_config
from test_gunicorn_options import RUNNING, WHOAMI, error_lines, listeners, run_cli, whoami

pytestmark = pytest.mark.timeout(90)

# What each hook records: its name, the pids it is given and sees, and whether the
# unix socket exists and the app module is imported at that moment.
HOOKS = """
import json, os, sys

def _record(name, server=None, worker=None):
    entry = {
        "hook": name,
        "pid": os.getpid(),
        "server_pid": server.pid if server is not None else None,
        "worker_pid": worker.pid if worker is not None else None,
        "worker_age": worker.age if worker is not None else None,
        "bound": os.path.exists(UNIX_PATH),
        "app_imported": "tests.apps_cli" in sys.modules,
        "cfg_workers": (server or worker).cfg.workers,
    }
    with open(HOOK_LOG, "a") as file:
        file.write(json.dumps(entry) + "\\n")

def on_starting(server):
    _record("on_starting", server=server)

def when_ready(server):
    _record("when_ready", server=server)

def post_fork(server, worker):
    _record("post_fork", server=server, worker=worker)

def post_worker_init(worker):
    _record("post_worker_init", worker=worker)

def worker_exit(server, worker):
    _record("worker_exit", server=server, worker=worker)

def on_exit(server):
    _record("on_exit", server=server)
"""


def write_conf(directory: Path, settings: str, hooks: bool = True) -> tuple[Path, Path, Path]:
    """gunicorn.conf.py with `settings` (and the recording hooks); its path, the hook
    log and the unix socket path it binds besides a TCP port."""
    hook_log = directory / "hooks.jsonl"
    unix_path = directory / "app.sock"
    conf = directory / "gunicorn.conf.py"
    head = f"HOOK_LOG = {str(hook_log)!r}\nUNIX_PATH = {str(unix_path)!r}\n"
    conf.write_text(head + settings + (HOOKS if hooks else ""))
    return conf, hook_log, unix_path


def hook_records(hook_log: Path, count: int) -> list[dict]:
    def enough():
        if not hook_log.exists():
            return None
        lines = hook_log.read_text().splitlines()
        return [json.loads(line) for line in lines] if len(lines) >= count else None

    return wait_until(enough, 30, message=f"{count} hook records in {hook_log}")


@pytest.fixture
def conf_dir():
    """A directory short enough for a unix socket path."""
    path = Path(f"/tmp/fs-gconf-{os.getpid()}-{os.urandom(3).hex()}")
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_settings_by_gunicorn_names(conf_dir: Path) -> None:
    conf, _, unix_path = write_conf(
        conf_dir,
        'bind = ["127.0.0.1:7010", f"unix:{UNIX_PATH}"]\n'
        "workers = 3\n"
        'worker_class = "uvicorn.workers.UvicornH11Worker"\n'
        "timeout = 12\n"
        "keepalive = 7\n"
        "graceful_timeout = 9\n"
        "max_requests = 0\n"
        "loglevel = 'WARNING'\n"
        "forwarded_allow_ips = ['10.0.0.1', '10.0.0.0/8']\n"
        "preload_app = True\n"
        "umask = 0o027\n"
        "user = 0\n"
        "pidfile = '/tmp/never.pid'\n"
        "limit_request_fields = 50\n"
        "threads = 4\n"
        "wsgi_app = 'tests.apps_cli:whoami'\n",
        hooks=False,
    )
    settings = print_config("-c", str(conf))
    source = str(conf)
    assert settings["bind"] == (f'["127.0.0.1:7010", "unix:{unix_path}"]', source)
    assert settings["workers"] == ("3", source)
    assert settings["http"] == ('"python"', source)
    assert settings["timeout-worker-healthcheck"] == ("12.0", source)
    assert settings["timeout-keep-alive"] == ("7.0", source)
    assert settings["limit-max-requests"][1] == "default"  # 0: Gunicorn's "no limit"
    assert settings["log-level"] == ('"warning"', source)
    assert settings["forwarded-allow-ips"] == ('"10.0.0.1,10.0.0.0/8"', source)
    assert settings["preload"] == ("true", source)
    assert settings["umask"] == ('"0o27"', source)
    assert settings["user"] == ('"0"', source)
    assert settings["pid"] == ('"/tmp/never.pid"', source)
    assert settings["limit-request-fields"] == ("50", source)
    assert settings["threads"] == ("4", source)
    assert settings["app"] == ('"tests.apps_cli:whoami"', source)
    graceful = settings.get("graceful-timeout") or settings["timeout-graceful-shutdown"]
    assert graceful == ("9.0", source)


def test_command_line_wins_over_the_gunicorn_file(conf_dir: Path) -> None:
    conf, _, _ = write_conf(conf_dir, "workers = 3\n", hooks=False)
    settings = print_config("-c", str(conf), "--workers", "2")
    assert settings["workers"] == ("2", "command line")


def test_a_gunicorn_file_serves(spawn, conf_dir: Path) -> None:
    port = free_port()
    conf, _, unix_path = write_conf(
        conf_dir,
        f'import multiprocessing\nPORT = {port}\nbind = [f"127.0.0.1:{{PORT}}", f"unix:{{UNIX_PATH}}"]\n'
        'workers = 2\nworker_class = "uvicorn.workers.UvicornWorker"\n'
        'raw_env = ["FASTSERVE_TEST_VALUE=from-raw-env"]\n',
        hooks=False,
    )
    server = spawn(WHOAMI, "-c", str(conf), ready=False)
    assert listeners(server, 2) == [f"http://127.0.0.1:{port}", str(unix_path)]
    workers = server.wait_workers(2)
    seen = whoami(f"http://127.0.0.1:{port}")
    assert seen["pid"] in workers
    assert seen["env"] == "from-raw-env"
    assert whoami(str(unix_path))["pid"] in workers
    assert server.stop() == 0


def test_gunicorn_settings_without_equivalent_are_named_in_one_line(conf_dir: Path) -> None:
    # Gunicorn's "off" values (accesslog None, errorlog "-") set nothing and are not named
    conf, _, _ = write_conf(
        conf_dir,
        "proc_name = 'shop'\nworker_tmp_dir = '/dev/shm'\n"
        "accesslog = None\nerrorlog = '-'\nmax_requests = 0\n",
        hooks=False,
    )
    result = run_cli(WHOAMI, "-c", str(conf), "--check-config")
    assert result.returncode == 0, result.stderr
    lines = [line for line in error_lines(result) if "ignored" in line]
    assert lines == [
        f"fastserve: {conf}: ignored (no fastserve equivalent): proc_name, worker_tmp_dir"
    ]


@pytest.mark.parametrize(
    "settings, message",
    [
        ("worker = 4\n", "'worker' is not a Gunicorn setting"),
        ('worker_class = "eventlet"\n', "worker_class 'eventlet': fastserve serves ASGI and"),
        ('worker_class = "gevent"\n', "worker_class 'gevent'"),
        ("daemon = True\n", "daemon = True: fastserve does not daemonize"),
        ('workers = "many"\n', "workers = 'many' is not a valid value"),
        ("timeout = 0\n", "timeout = 0 (never kill a worker) has no equivalent"),
        ('raw_env = ["NOVALUE"]\n', "key 'env': 'NOVALUE' is not KEY=VALUE"),
        ("on_starting = 3\n", "on_starting must be a function of (server)"),
        (
            "def post_fork(worker):\n    pass\n",
            "post_fork must take 2 argument(s): (server, worker)",
        ),
        ("x = 1 / 0\n", "(line 3): ZeroDivisionError: division by zero"),
        ('bind = "127.0.0.1:http"\n', "--bind '127.0.0.1:http': 'http' is not a port number"),
    ],
)
def test_bad_gunicorn_file_is_one_line(conf_dir: Path, settings: str, message: str) -> None:
    conf, _, _ = write_conf(conf_dir, settings, hooks=False)
    result = run_cli(WHOAMI, "-c", str(conf))
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_hooks_under_the_supervisor(spawn, conf_dir: Path) -> None:
    conf, hook_log, unix_path = write_conf(
        conf_dir, 'bind = ["127.0.0.1:0", f"unix:{UNIX_PATH}"]\nworkers = 2\n'
    )
    server = spawn(WHOAMI, "-c", str(conf), ready=False)
    listeners(server, 2)
    workers = server.wait_workers(2)
    started = hook_records(hook_log, 6)
    by_hook: dict = {}
    for record in started:
        by_hook.setdefault(record["hook"], []).append(record)
    master = server.pid
    assert [r["hook"] for r in started[:2]] == ["on_starting", "when_ready"]
    # on_starting before binding, when_ready after, both in the master
    for name, bound in (("on_starting", False), ("when_ready", True)):
        (record,) = by_hook[name]
        assert (record["pid"], record["server_pid"], record["bound"]) == (master, master, bound)
    # post_fork in each new worker before it imports the app; post_worker_init after
    forked = {
        (r["pid"], r["worker_pid"], r["server_pid"], r["app_imported"])
        for r in by_hook["post_fork"]
    }
    assert forked == {(pid, pid, master, False) for pid in workers}
    assert sorted(r["worker_age"] for r in by_hook["post_fork"]) == [1, 2]
    initialised = {
        (r["pid"], r["worker_pid"], r["app_imported"]) for r in by_hook["post_worker_init"]
    }
    assert initialised == {(pid, pid, True) for pid in workers}
    assert {r["cfg_workers"] for r in started} == {2}

    assert server.stop() == 0
    ended = hook_records(hook_log, 9)[6:]
    assert [r["hook"] for r in ended] == ["worker_exit", "worker_exit", "on_exit"]
    assert {(r["pid"], r["server_pid"]) for r in ended[:2]} == {(pid, master) for pid in workers}
    assert ended[2]["pid"] == master
    assert not unix_path.exists()


def test_hooks_in_one_process(spawn, conf_dir: Path) -> None:
    conf, hook_log, _ = write_conf(conf_dir, 'bind = f"unix:{UNIX_PATH}"\n')
    server = spawn(WHOAMI, "-c", str(conf), ready=False)
    listeners(server, 1)
    started = hook_records(hook_log, 4)
    assert [r["hook"] for r in started] == [
        "on_starting",
        "post_fork",
        "post_worker_init",
        "when_ready",
    ]
    assert {r["pid"] for r in started} == {server.pid}
    assert [r["bound"] for r in started] == [False, True, True, True]
    assert [r["app_imported"] for r in started] == [False, False, True, True]
    server.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    ended = hook_records(hook_log, 6)[4:]
    assert [r["hook"] for r in ended] == ["worker_exit", "on_exit"]


def test_a_hook_that_raises_is_logged_and_the_server_goes_on(spawn, conf_dir: Path) -> None:
    conf = conf_dir / "gunicorn.conf.py"
    conf.write_text("def when_ready(server):\n    raise RuntimeError('hook broke')\n")
    server = spawn(WHOAMI, "-c", str(conf), "--port", "0")
    server.wait_for_log("The when_ready hook raised an exception")
    assert "RuntimeError: hook broke" in server.output()
    assert whoami(server.url())["pid"] == server.pid
    assert server.stop() == 0


def test_hooks_under_reload(conf_dir: Path) -> None:
    conf, hook_log, _ = write_conf(conf_dir, 'bind = f"unix:{UNIX_PATH}"\n')
    server = ServerProcess.fastserve(
        WHOAMI, "-c", str(conf), "--reload", "--reload-dir", str(conf_dir)
    )
    try:
        server.wait_for_log(RUNNING.pattern)
        started = hook_records(hook_log, 2)
        assert [r["hook"] for r in started] == ["on_starting", "when_ready"]
        server.wait_for_log("Application startup complete")
        server.send_signal(signal.SIGINT)
        assert server.wait() == 0
        assert [r["hook"] for r in hook_records(hook_log, 3)] == [
            "on_starting",
            "when_ready",
            "on_exit",
        ]
        assert {r["pid"] for r in hook_records(hook_log, 3)} == {server.pid}
    finally:
        server.cleanup()


# The --workers-only hooks, recorded the same way (after HOOKS, whose _record they use).
SUPERVISOR_HOOKS = """
def pre_fork(server, worker):
    _record("pre_fork", server=server, worker=worker)

def child_exit(server, worker):
    _record("child_exit", server=server, worker=worker)

def worker_int(worker):
    _record("worker_int", worker=worker)

def worker_abort(worker):
    _record("worker_abort", worker=worker)

def nworkers_changed(server, new_value, old_value):
    _record(f"nworkers_changed {new_value} {old_value}", server=server)

def on_reload(server):
    _record("on_reload", server=server)
"""


def records_of(hook_log: Path, name: str, count: int = 1) -> list[dict]:
    def enough():
        if not hook_log.exists():
            return None
        found = [json.loads(line) for line in hook_log.read_text().splitlines()]
        found = [record for record in found if record["hook"] == name]
        return found if len(found) >= count else None

    return wait_until(enough, 30, message=f"{count} x {name} in {hook_log}")


@pytest.mark.serial  # waits for a heartbeat timeout
def test_supervisor_only_hooks(spawn, conf_dir: Path) -> None:
    conf, hook_log, _ = write_conf(conf_dir, 'bind = "127.0.0.1:0"\nworkers = 2\n')
    conf.write_text(conf.read_text() + SUPERVISOR_HOOKS)
    server = spawn("tests.apps_process:app", "-c", str(conf), "--timeout-worker-healthcheck", "1.5")
    master = server.pid
    first = server.wait_workers(2)
    forked = records_of(hook_log, "pre_fork", count=2)
    assert sorted((r["pid"], r["worker_pid"], r["worker_age"]) for r in forked) == [
        (master, None, 1),
        (master, None, 2),
    ]

    server.send_signal(signal.SIGTTIN)
    (changed,) = records_of(hook_log, "nworkers_changed 3 2")
    assert changed["pid"] == master
    records_of(hook_log, "pre_fork", count=3)
    workers = server.wait_workers(3)
    assert first < workers

    # the master's heartbeat kill: SIGABRT, worker_abort in the worker, child_exit in the master
    server.wait_for_log(r"Worker \[\d+\] is ready", count=3)
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url("/block?s=60"), timeout=30)
    (aborted,) = records_of(hook_log, "worker_abort")
    assert aborted["pid"] == aborted["worker_pid"] and aborted["pid"] in workers
    exited = records_of(hook_log, "child_exit")
    assert (exited[0]["pid"], exited[0]["worker_pid"]) == (master, aborted["pid"])

    server.send_signal(signal.SIGHUP)
    assert records_of(hook_log, "on_reload")[0]["pid"] == master
    server.wait_for_log("Rolling restart: new workers are ready")

    server.send_signal(signal.SIGQUIT)  # an immediate stop: worker_int in each worker
    assert server.wait(30) == 0
    interrupted = {record["pid"] for record in records_of(hook_log, "worker_int")}
    assert interrupted and master not in interrupted


def test_gthread_worker_class_takes_threads(conf_dir: Path) -> None:
    """Gunicorn's WSGI workers: fastserve serves the WSGI app in --threads threads."""
    conf, _, _ = write_conf(conf_dir, 'worker_class = "gthread"\nthreads = 6\n', hooks=False)
    assert print_config("-c", str(conf))["threads"] == ("6", str(conf))


@pytest.mark.parametrize(("protocols", "http2"), [('"h2,h1"', "true"), ('"h1"', "false")])
def test_http_protocols_naming_h2_is_http2(conf_dir: Path, protocols: str, http2: str) -> None:
    """Gunicorn 25+'s http_protocols: h2 among them turns --http2 on."""
    conf, _, _ = write_conf(conf_dir, f"http_protocols = {protocols}\n", hooks=False)
    assert print_config("-c", str(conf))["http2"] == (http2, str(conf))
