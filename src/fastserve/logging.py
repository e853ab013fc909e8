"""Log formatting: uvicorn's line shapes, under the `fastserve.*` loggers."""

from __future__ import annotations

import http
import logging
import socket
import sys
from copy import copy
from typing import Optional

TRACE_LOG_LEVEL = 5

# One access line per response: client, method, path with query, HTTP version, status.
ACCESS_LOG_FORMAT = '%s - "%s %s HTTP/%s" %d'
# One access line per WebSocket: client, path with query, and 101 when the app accepted,
# else the status of the HTTP response that refused it.
WEBSOCKET_ACCESS_LOG_FORMAT = '%s - "WebSocket %s" %d'

error_logger = logging.getLogger("fastserve.error")
access_logger = logging.getLogger("fastserve.access")

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LOG_LEVEL,
}

LOGGING_CONFIG: dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "fastserve.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "fastserve.logging.AccessFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "fastserve": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "fastserve.error": {"level": "INFO"},
        "fastserve.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}

_LEVEL_COLOURS = {
    TRACE_LOG_LEVEL: "34",
    logging.DEBUG: "36",
    logging.INFO: "32",
    logging.WARNING: "33",
    logging.ERROR: "31",
    logging.CRITICAL: "91",
}


def _colour(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


class DefaultFormatter(logging.Formatter):
    """`INFO:     message`, coloured when the stream is a terminal."""

    def __init__(
        self,
        fmt: Optional[str] = None,
        datefmt: Optional[str] = None,
        style: str = "%",
        use_colors: Optional[bool] = None,
    ) -> None:
        self.use_colors = sys.stderr.isatty() if use_colors is None else use_colors
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy(record)
        levelname = record.levelname
        padding = " " * max(0, 8 - len(levelname))
        if self.use_colors:
            levelname = _colour(levelname, _LEVEL_COLOURS.get(record.levelno, "0"))
        record.__dict__["levelprefix"] = f"{levelname}:{padding}"
        return super().formatMessage(record)


class AccessFormatter(DefaultFormatter):
    """Colours the status of an access line when the stream is a terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if (
            self.use_colors
            and isinstance(record.args, tuple)
            and isinstance(record.msg, str)
            and record.msg in _STATUS_LAST
        ):
            record = copy(record)
            *args, status = record.args
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = ""
            code = "32" if status < 400 else "33" if status < 500 else "31"
            record.msg = _STATUS_LAST[record.msg]
            record.args = (*args, _colour(f"{status} {phrase}", code))
            record.message = record.getMessage()
        return super().formatMessage(record)


# The access formats whose last argument is a status, and the same with the status
# as a (coloured) string.
_STATUS_LAST = {
    ACCESS_LOG_FORMAT: ACCESS_LOG_FORMAT[:-2] + "%s",
    WEBSOCKET_ACCESS_LOG_FORMAT: WEBSOCKET_ACCESS_LOG_FORMAT[:-2] + "%s",
}


def format_client(scope: dict) -> str:
    """`host:port` of the scope's client, or "-" (a unix socket)."""
    client = scope.get("client")
    return "%s:%d" % (client[0], client[1]) if client else "-"


def _path_with_query(scope: dict) -> str:
    query = scope["query_string"]
    path = scope["raw_path"].decode("latin-1")
    if query:
        path = path + "?" + query.decode("latin-1")
    return path


def log_access(scope: dict, status: int) -> None:
    """The access line of one finished response (both HTTP modes call this)."""
    access_logger.info(
        ACCESS_LOG_FORMAT,
        format_client(scope),
        scope["method"],
        _path_with_query(scope),
        scope["http_version"],
        status,
    )


def log_websocket_access(scope: dict, status: int) -> None:
    """The access line of one WebSocket, once the app answered its handshake: 101
    when it accepted, else the status it refused with (403, its own, or 500)."""
    access_logger.info(
        WEBSOCKET_ACCESS_LOG_FORMAT, format_client(scope), _path_with_query(scope), status
    )


def log_running(sockets, scheme: str, details: str) -> None:
    """The start-up line, one per listening socket, that users and tests wait for:
    `Fastserve running on http://127.0.0.1:8000 (c mode, press CTRL+C to quit)`."""
    for sock in sockets:
        address = sock.getsockname()
        if sock.family == socket.AF_INET6:
            where = f"{scheme}://[{address[0]}]:{address[1]}"
        elif sock.family == socket.AF_INET:
            where = f"{scheme}://{address[0]}:{address[1]}"
        else:
            where = f"unix socket {address}"
        error_logger.info("Fastserve running on %s (%s, press CTRL+C to quit)", where, details)
