"""`fastserve.run()`: the programmatic entry point, as `uvicorn.run()`."""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastserve.config import STARTUP_FAILURE, Config, ConfigError
from fastserve.server import Server

logger = logging.getLogger("fastserve.error")


def run(app: Any, **kwargs: Any) -> None:
    """Serve `app` (an ASGI app or a "module:attribute" string) until stopped.

    Takes the keyword arguments of `Config`. Exits the process with a non-zero
    code when the app cannot be loaded (1) or fails its startup (3).
    """
    try:
        config = Config(app, **kwargs)
    except ConfigError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    run_config(config)


def run_config(config: Config) -> None:
    """Serve with a ready Config: under the reloader, the supervisor, or in this process."""
    if config.reload:
        from fastserve.supervisors.reload import Reloader

        if not isinstance(config.app, str):
            logger.error(
                '--reload needs the app as an import string ("module:attribute"), '
                "so that each restart imports the changed code"
            )
            sys.exit(1)
        try:
            reloader = Reloader(config)
        except ConfigError as exc:
            logger.error("%s", exc)
            sys.exit(1)
        code = reloader.run()
    elif config.supervised:
        from fastserve.supervisors.multiprocess import Supervisor

        code = Supervisor(config).run()
    else:
        server = Server(config)
        server.run()
        code = 0 if server.started else STARTUP_FAILURE
    if code:
        sys.exit(code)
