"""`fastserve --reload`: restart the server whenever a watched file changes.

For development. The reloader process binds the socket once (so the port stays the
same and connections wait in the backlog during a restart), then starts the server
in a fresh interpreter (`sys.executable`, so changed modules are imported anew),
watches the files with watchfiles, or by polling their modification times when
watchfiles is not installed, and on a change stops that server gracefully and
starts a new one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from fastserve.config import Config, ConfigError
from fastserve.logging import log_running
from fastserve.process import OptionError, PidFile, drop_privileges, remove_unix_sockets

logger = logging.getLogger("fastserve.error")

DEFAULT_INCLUDES = ["*.py"]
DEFAULT_EXCLUDES = [".*", "*.py[cod]", ".sw.*", "~*", "__pycache__"]

# Seconds a server gets to stop on a restart when --timeout-graceful-shutdown is unset.
DEFAULT_STOP_TIMEOUT = 5.0


class FileFilter:
    """Which changed paths restart the server: --reload-include / --reload-exclude.

    A pattern is matched against the file name, the path below the watched directory,
    and (for excludes) each directory on that path, so `.*` ignores `.git/` and `.venv/`.
    A pattern the user gives that names an existing directory includes or excludes
    that directory (the defaults stay patterns, so `__pycache__` means every one).
    """

    def __init__(self, dirs: list[Path], includes: list[str], excludes: list[str]) -> None:
        self.dirs = dirs
        self.includes: list[str] = []
        self.excludes: list[str] = []
        self.include_dirs: list[Path] = []
        self.exclude_dirs: list[Path] = []
        for pattern in includes:
            if Path(pattern).is_dir():
                self.include_dirs.append(Path(pattern).resolve())
        for pattern in excludes:
            if Path(pattern).is_dir():
                self.exclude_dirs.append(Path(pattern).resolve())
        for pattern in DEFAULT_INCLUDES + includes:
            if pattern not in self.includes and Path(pattern).resolve() not in self.include_dirs:
                self.includes.append(pattern)
        for pattern in DEFAULT_EXCLUDES + excludes:
            if Path(pattern).resolve() in self.exclude_dirs:
                continue
            if pattern not in includes:  # an explicit include wins over a default exclude
                self.excludes.append(pattern)

    def relative(self, path: Path) -> Path:
        for directory in self.dirs:
            with contextlib.suppress(ValueError):
                return path.relative_to(directory)
        return Path(path.name)

    def excluded_dir(self, path: Path) -> bool:
        if any(path == d or d in path.parents for d in self.exclude_dirs):
            return True
        return any(fnmatch.fnmatch(path.name, pattern) for pattern in self.excludes)

    def __call__(self, path: Path) -> bool:
        if any(path == d or d in path.parents for d in self.exclude_dirs):
            return False
        relative = self.relative(path)
        for part in relative.parts[:-1]:
            if any(fnmatch.fnmatch(part, pattern) for pattern in self.excludes):
                return False
        name = path.name
        relative_str = relative.as_posix()
        for pattern in self.excludes:
            if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative_str, pattern):
                return False
        if any(d in path.parents for d in self.include_dirs):
            return True
        return any(
            fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative_str, pattern)
            for pattern in self.includes
        )


class Reloader:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.dirs = [Path(d).resolve() for d in (config.reload_dirs or [os.getcwd()])]
        missing = [str(d) for d in self.dirs if not d.is_dir()]
        if missing:
            raise ConfigError(f"--reload-dir {missing[0]!r} is not a directory")
        self.filter = FileFilter(self.dirs, config.reload_includes, config.reload_excludes)
        self.should_exit = threading.Event()
        self.restart_requested = False
        self.process: Optional[subprocess.Popen] = None
        self.sockets: list[socket.socket] = []
        self.pidfile: Optional[PidFile] = None

    def run(self) -> int:
        """The reloader is the master for Gunicorn's hooks (on_starting, when_ready,
        on_exit) and --pid; its server process drops the privileges."""
        config = self.config
        hook_server = config.hooks.server(config, os.getpid(), num_workers=1)
        config.hooks.run("on_starting", hook_server)
        try:
            self.sockets = config.bind_sockets()
            if config.pidfile:
                self.pidfile = PidFile.create(config.pidfile)
        except (ConfigError, OptionError) as exc:
            logger.error("%s", exc)
            self.close_sockets()
            config.hooks.run("on_exit", hook_server)
            return 1
        watcher, engine = self.make_watcher()
        logger.info("Will watch for changes in: %s", ", ".join(repr(str(d)) for d in self.dirs))
        logger.info("Started reloader process [%d] using %s", os.getpid(), engine)
        self.log_listening()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.signal_handler)
        config.hooks.run("when_ready", hook_server)
        try:
            self.start_process()
            for changes in watcher:
                if self.should_exit.is_set():
                    break
                if self.restart_requested:
                    self.restart_requested = False
                    logger.info("Received SIGHUP. Reloading...")
                    self.restart_process()
                    continue
                if changes:
                    names = sorted({self.display(path) for path in changes})
                    shown = ", ".join(repr(name) for name in names[:5])
                    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
                    logger.warning("Detected changes in %s%s. Reloading...", shown, more)
                    self.restart_process()
        finally:
            self.stop_process()
            self.close_sockets()
            if self.pidfile is not None:
                self.pidfile.remove()
        logger.info("Stopping reloader process [%d]", os.getpid())
        config.hooks.run("on_exit", hook_server)
        return 0

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        remove_unix_sockets(self.config.unix_paths() if self.sockets else [])
        self.sockets = []

    def signal_handler(self, sig: int, frame) -> None:
        if sig == signal.SIGHUP:
            self.restart_requested = True
        else:
            self.should_exit.set()

    def display(self, path: Path) -> str:
        for directory in self.dirs:
            with contextlib.suppress(ValueError):
                return str(path.relative_to(directory))
        return str(path)

    def log_listening(self) -> None:
        scheme = "https" if self.config.is_ssl else "http"
        log_running(self.sockets, scheme, f"{self.config.mode_details}, reload")

    # -- watching ----------------------------------------------------------------------

    def make_watcher(self) -> tuple[Iterator[set[Path]], str]:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            return self.poll_changes(), "polling (install watchfiles for a faster reload)"
        return self.watch_changes(), "WatchFiles"

    def watch_changes(self) -> Iterator[set[Path]]:
        """Changed paths from watchfiles; an empty set every so often to check signals."""
        import watchfiles

        for changes in watchfiles.watch(
            *self.dirs,
            watch_filter=lambda change, path: self.filter(Path(path)),
            stop_event=self.should_exit,
            yield_on_timeout=True,
            rust_timeout=500,
            raise_interrupt=False,
        ):
            changed = {Path(path) for _, path in changes}
            if changed and self.config.reload_delay:
                # Let an editor finish writing before the new server imports the code.
                self.should_exit.wait(self.config.reload_delay)
            yield changed

    def poll_changes(self) -> Iterator[set[Path]]:
        """The fallback: compare modification times every --reload-delay seconds."""
        interval = max(self.config.reload_delay, 0.1)
        mtimes = self.scan()
        while not self.should_exit.wait(interval):
            current = self.scan()
            changed = {
                path
                for path in current.keys() | mtimes.keys()
                if current.get(path) != mtimes.get(path)
            }
            mtimes = current
            yield changed

    def scan(self) -> dict[Path, float]:
        mtimes: dict[Path, float] = {}
        for directory in self.dirs:
            for root, dirnames, filenames in os.walk(directory):
                root_path = Path(root)
                dirnames[:] = [d for d in dirnames if not self.filter.excluded_dir(root_path / d)]
                for name in filenames:
                    path = root_path / name
                    if self.filter(path):
                        with contextlib.suppress(OSError):
                            mtimes[path] = path.stat().st_mtime
        return mtimes

    # -- the server process ------------------------------------------------------------

    def start_process(self) -> None:
        """Start the server in a fresh interpreter on the inherited socket."""
        fds = [sock.fileno() for sock in self.sockets]
        read_fd, write_fd = os.pipe()
        payload = pickle.dumps({"config": self.config, "sys_path": sys.path, "fds": fds})
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from fastserve.supervisors.reload import child_main; child_main()",
                str(read_fd),
            ],
            pass_fds=(*fds, read_fd),
        )
        os.close(read_fd)
        with os.fdopen(write_fd, "wb") as pipe:
            with contextlib.suppress(BrokenPipeError):
                pipe.write(payload)

    def stop_process(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is not None:
            return
        process.terminate()
        timeout = self.config.timeout_graceful_shutdown
        timeout = DEFAULT_STOP_TIMEOUT if timeout is None else timeout + 1
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "Server process [%d] did not stop in %gs; killing it", process.pid, timeout
            )
            process.kill()
            process.wait()

    def restart_process(self) -> None:
        self.stop_process()
        if not self.should_exit.is_set():
            self.start_process()


def child_main() -> None:
    """The server process: read its Config from the reloader, serve the passed socket."""
    from fastserve.config import STARTUP_FAILURE
    from fastserve.server import Server

    read_fd = int(sys.argv[1])
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pickle.load(pipe)
    sys.path[:] = payload["sys_path"]
    config: Config = payload["config"]
    config.reload = False
    config.configure_logging()
    sockets = [socket.socket(fileno=fd) for fd in payload["fds"]]
    try:
        drop_privileges(config.uid, config.gid)
    except OptionError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    server = Server(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)
