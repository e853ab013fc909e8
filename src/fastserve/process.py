"""Gunicorn's process options: --bind addresses, --user/--group, --umask, --pid.

What a serving process does about its place in the operating system, with Gunicorn's
names and meanings (gunicorn/config.py, sock.py, pidfile.py), apart from where fastserve
chose otherwise for safety (README, "Switching from Gunicorn"). Imports nothing of
fastserve: Config calls the parsers, the processes call the rest.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import tempfile
from typing import NamedTuple, Optional, Union

logger = logging.getLogger("fastserve.error")

# `--bind HOST` without a port listens on Gunicorn's port.
GUNICORN_PORT = 8000
# A pid file is readable by all, writable by its owner (as Gunicorn's).
PIDFILE_MODE = 0o644
# `--umask 022`: a leading zero followed by a digit is octal (Gunicorn's auto_int).
OCTAL_WITHOUT_PREFIX = re.compile(r"0\d")


class OptionError(ValueError):
    """A process option (--bind, --user, --umask, --pid...) that cannot be used; one line."""


class Listener(NamedTuple):
    """One parsed --bind address: kind "tcp" (host, port), "unix" (path) or "fd" (fd)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1


def parse_bind(value: str) -> Listener:
    """Gunicorn's address forms: HOST, HOST:PORT, [IPV6]:PORT, tcp://..., unix:PATH,
    unix://PATH, fd://FD."""
    if value.startswith("unix:"):
        path = value[len("unix://") :] if value.startswith("unix://") else value[len("unix:") :]
        if not path:
            raise OptionError(f"--bind {value!r}: no socket path after 'unix:'")
        return Listener("unix", path=path)
    if value.startswith("fd://"):
        number = value[len("fd://") :]
        if not number.isdigit():
            raise OptionError(f"--bind {value!r}: {number!r} is not a file descriptor number")
        return Listener("fd", fd=int(number))
    address = value[len("tcp://") :] if value.startswith("tcp://") else value
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(GUNICORN_PORT)
        if rest and not rest.startswith(":"):
            raise OptionError(f"--bind {value!r}: expected [IPV6]:PORT")
    elif ":" in address:
        host, _, port = address.rpartition(":")
    else:
        host, port = address or "0.0.0.0", str(GUNICORN_PORT)
    if not port.isdigit() or int(port) > 65535:
        raise OptionError(f"--bind {value!r}: {port!r} is not a port number")
    return Listener("tcp", host=host.lower(), port=int(port))


def parse_umask(value: Union[int, str]) -> int:
    """An int, or a string as Gunicorn reads it: "022" and "0o22" are octal, "0x12"
    hex, "18" decimal."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if OCTAL_WITHOUT_PREFIX.match(text):
            text = "0o" + text[1:]
        try:
            number = int(text, 0)
        except ValueError:
            raise OptionError(f"--umask {value!r} is not a number (e.g. 022, 0o22)") from None
    else:
        raise OptionError(f"--umask {value!r} is not a number")
    if not 0 <= number <= 0o777:
        raise OptionError(f"--umask {value!r} is not between 0 and 0o777")
    return number


def resolve_user(value: Union[int, str, None]) -> Optional[int]:
    """--user: a uid, or a user name from the password database."""
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise OptionError(f"--user {value!r}: no such user") from None


def resolve_group(value: Union[int, str, None]) -> Optional[int]:
    """--group: a gid, or a group name from the group database."""
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise OptionError(f"--group {value!r}: no such group") from None


def primary_group(uid: int) -> int:
    """The group --user alone runs as: the user's own (Gunicorn keeps the current one,
    root's, which would keep root's files)."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        raise OptionError(
            f"--user {uid} is not in the password database: give --group too"
        ) from None


def drop_privileges(uid: Optional[int], gid: Optional[int]) -> None:
    """Become --user/--group in this process (after binding, before the app runs); with
    --user, `gid` is never None (Config resolves primary_group). The supplementary
    groups become the user's own (Gunicorn keeps root's unless --initgroups): a
    worker keeps nothing of root."""
    if uid is None and gid is None:
        return
    try:
        name = pwd.getpwuid(uid).pw_name if uid is not None else None
    except KeyError:
        name = None
    try:
        if os.getuid() == 0:
            if name is not None:
                os.initgroups(name, gid)
            else:
                os.setgroups([gid])
        if gid != os.getgid():
            os.setgid(gid)
        if uid is not None and uid != os.getuid():
            os.setuid(uid)
    except OSError as exc:
        raise OptionError(
            f"--user/--group: cannot switch to uid {uid}, gid {gid}: {exc.strerror}"
        ) from exc


class PidFile:
    """--pid: this process's pid in a file, written after binding, removed at exit
    (only while it still holds this pid)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()

    @classmethod
    def create(cls, path: str) -> PidFile:
        running = read_pid(path)
        if running is not None and running != os.getpid() and pid_running(running):
            raise OptionError(
                f"--pid {path}: already running as pid {running} (or the file is stale)"
            )
        pidfile = cls(path)
        directory = os.path.dirname(os.path.abspath(path))
        temporary = None
        try:
            fd, temporary = tempfile.mkstemp(dir=directory)
            with os.fdopen(fd, "w") as file:
                file.write(f"{pidfile.pid}\n")
            os.chmod(temporary, PIDFILE_MODE)
            os.replace(temporary, path)  # never a half-written pid file
        except OSError as exc:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
            raise OptionError(f"--pid {path}: cannot write the pid file: {exc.strerror}") from exc
        return pidfile

    def remove(self) -> None:
        if read_pid(self.path) != self.pid:
            return
        try:
            os.remove(self.path)
        except OSError as exc:
            logger.warning("Cannot remove the pid file %s: %s", self.path, exc.strerror)


def read_pid(path: str) -> Optional[int]:
    try:
        with open(path) as file:
            return int(file.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def pid_running(pid: int) -> bool:
    """A process with this pid exists (another user's too: signal 0 is then refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_unix_sockets(paths: list) -> None:
    """Remove the socket files this process created (at exit)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)
