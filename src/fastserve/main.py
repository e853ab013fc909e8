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
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
