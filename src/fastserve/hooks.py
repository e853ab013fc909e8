"""Gunicorn's server hooks (from a gunicorn.conf.py) at the matching moments of
fastserve's processes.

A hook gets Gunicorn's arguments, with small objects standing for Gunicorn's arbiter
and worker: `HookServer` (pid, cfg, log, num_workers) and `HookWorker` (pid, ppid,
age, cfg, log). `cfg` is fastserve's Config, `log` the "fastserve.error" logger.

    on_starting(server)        the master (or the one server) starts, before binding
    when_ready(server)         the master has bound its sockets, before forking workers;
                               one server: once it serves
    post_fork(server, worker)  in a new worker, before it imports the app or drops
                               privileges; one server: after binding
    post_worker_init(worker)   in a worker, once its app started (lifespan)
    worker_exit(server, worker) in a worker that stopped serving, about to exit
    on_exit(server)            the master (or the one server) is about to exit

and under --workers only:

    pre_fork(server, worker)   in the master, before it forks a worker (worker.pid None)
    child_exit(server, worker) in the master, once it reaped an exited worker
    worker_int(worker)         in a worker told to stop at once (SIGINT twice, SIGQUIT)
    worker_abort(worker)       in a worker killed for a missed heartbeat (SIGABRT)
    nworkers_changed(server, new_value, old_value)  SIGTTIN / SIGTTOU
    on_reload(server)          SIGHUP, before the rolling restart

A hook that raises is logged with its traceback; the server goes on.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

logger = logging.getLogger("fastserve.error")

# Each hook by name, with the arguments Gunicorn passes it.
HOOK_ARGUMENTS = {
    "on_starting": ("server",),
    "when_ready": ("server",),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_exit": ("server", "worker"),
    "on_exit": ("server",),
    # --workers only: the master's and a worker's other moments
    "pre_fork": ("server", "worker"),
    "child_exit": ("server", "worker"),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_reload": ("server",),
}
HOOK_NAMES = tuple(HOOK_ARGUMENTS)


def hook_problem(name: str, function: Any) -> Optional[str]:
    """Why `function` cannot be the hook `name` (it must take Gunicorn's arguments), or None."""
    expected = HOOK_ARGUMENTS[name]
    if not callable(function):
        return f"{name} must be a function of ({', '.join(expected)})"
    try:
        inspect.signature(function).bind(*expected)
    except TypeError:
        return f"{name} must take {len(expected)} argument(s): ({', '.join(expected)})"
    except ValueError:
        return None  # no signature to check (a builtin): Gunicorn's call will tell
    return None


@dataclass
class HookServer:
    """Stands for Gunicorn's Arbiter in a hook's arguments."""

    pid: int
    cfg: Any
    log: logging.Logger
    num_workers: int


@dataclass
class HookWorker:
    """Stands for Gunicorn's Worker in a hook's arguments."""

    pid: Optional[int]  # None in pre_fork, before the fork
    ppid: int
    age: int  # the worker's number, 1..N (Gunicorn counts every fork)
    cfg: Any
    log: logging.Logger


class ServerHooks:
    """The hooks a config file defined, by name (none: an empty ServerHooks)."""

    def __init__(self, functions: Optional[dict[str, Callable]] = None) -> None:
        self.functions = dict(functions or {})

    def __reduce__(self):
        # A --reload server process gets its Config pickled: the functions of a config
        # file do not pickle, and the reloader, not that process, runs the hooks.
        return (ServerHooks, ())

    def run(self, name: str, *args: Any) -> None:
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*args)
        except Exception:
            logger.exception("The %s hook raised an exception", name)

    def server(self, config: Any, pid: int, num_workers: int) -> HookServer:
        return HookServer(pid=pid, cfg=config, log=logger, num_workers=num_workers)

    def worker(self, config: Any, age: int) -> HookWorker:
        """This process as a worker."""
        return HookWorker(pid=os.getpid(), ppid=os.getppid(), age=age, cfg=config, log=logger)

    def child(self, config: Any, pid: Optional[int], age: int) -> HookWorker:
        """A worker of this process (the master): `pid` None before the fork."""
        return HookWorker(pid=pid, ppid=os.getpid(), age=age, cfg=config, log=logger)
