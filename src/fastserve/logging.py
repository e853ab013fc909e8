"""Log formatting: uvicorn's line shapes, under the `fastserve.*` loggers; Gunicorn's
access-log atoms (--access-log-format); one JSON object per record (--log-format json)."""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import http
import json
import logging
import os
import re
import socket
import sys
import time
from copy import copy
from typing import Any, Optional

TRACE_LOG_LEVEL = 5

# One access line per response: client, method, path with query, HTTP version, status.
ACCESS_LOG_FORMAT = '%s - "%s %s HTTP/%s" %d'
# One access line per WebSocket: client, path with query, and 101 when the app accepted,
# else the status of the HTTP response that refused it.
WEBSOCKET_ACCESS_LOG_FORMAT = '%s - "WebSocket %s" %d'

# The structured fields every access record carries (LogRecord attributes, by
# `extra=`), whatever renders it: the JSON formatter emits them as they are.
ACCESS_FIELDS = (
    "client", "method", "path", "query", "http_version", "status", "bytes",
    "duration_ms", "user_agent", "referer", "pid",
)  # fmt: skip
LOG_FORMATS = ("text", "json")
# The built-in formatters' format (LOGGING_CONFIG): `INFO:     message`.
LEVEL_PREFIX_FORMAT = "%(levelprefix)s %(message)s"

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
            "fmt": LEVEL_PREFIX_FORMAT,
            "use_colors": None,
        },
        "access": {
            "()": "fastserve.logging.AccessFormatter",
            "fmt": LEVEL_PREFIX_FORMAT,
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


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (RFC 3339, UTC), level, logger,
    message; an access record's structured fields; a traceback as one `exc_info`
    string."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % record.msecs,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        attributes = record.__dict__
        for name in ACCESS_FIELDS:
            if name in attributes:
                entry[name] = attributes[name]
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


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


def _header(headers: Any, name: bytes) -> Optional[str]:
    """The value of header `name` (lower case) in ASGI `headers`, its values joined
    by ", " when it comes more than once; None when absent."""
    values = [value for key, value in headers if key.lower() == name]
    return b", ".join(values).decode("latin-1") if values else None


# os.getpid() is a system call; a forked worker takes its own pid once.
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    if _access_buffer is not None:
        # the parent writes the lines it buffered; the child starts empty
        _access_buffer.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)

MICROSECONDS = 1_000_000
# A Gunicorn atom in a format: %(name)... with the name in parentheses.
_ATOM = re.compile(r"%\(([^)]*)\)")
# The atoms named by a header or an environment variable: {name}i, {name}o, {name}e.
_NAMED_ATOM = re.compile(r"\{([^}]+)\}([ioe])")
_ATOMS = "hlutrmUqHsBbfaTMDLp"


class AccessAtoms(dict):
    """Gunicorn's access-log atoms of one response, for `format % atoms`. The named
    ones ({name}i request header, {name}o response header, {name}e environment
    variable) are looked up only when the format asks for them; absent: "-"."""

    def __init__(self, atoms: dict, request_headers: Any, response_headers: Any) -> None:
        super().__init__(atoms)
        self.request_headers = request_headers
        self.response_headers = response_headers

    def __missing__(self, key: str) -> str:
        match = _NAMED_ATOM.fullmatch(key)
        if match is None:
            return "-"
        name, kind = match.groups()
        if kind == "e":
            value = os.environ.get(name)
        else:
            headers = self.request_headers if kind == "i" else self.response_headers
            value = _header(headers or (), name.lower().encode("latin-1"))
        return "-" if value is None else _quote_safe(value)


def _quote_safe(value: str) -> str:
    # as Gunicorn: a value can sit between double quotes in the line
    return value.replace('"', '\\"')


def _basic_auth_user(headers: Any) -> str:
    """The user name of an `Authorization: Basic` header, else "-" (as Gunicorn)."""
    value = _header(headers, b"authorization")
    if value is None or value[:6].lower() != "basic ":
        return "-"
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return "-"
    return _quote_safe(decoded.split(":", 1)[0]) if ":" in decoded else "-"


def access_atoms(fields: dict, scope: dict, duration: float, response_headers: Any) -> AccessAtoms:
    """The atoms of one access record, from its structured fields."""
    client = scope.get("client")
    micros = int(duration * MICROSECONDS)
    seconds = micros // MICROSECONDS
    protocol = "HTTP/" + fields["http_version"]
    path = _quote_safe(fields["path"])
    query = _quote_safe(fields["query"])
    target = path + "?" + query if query else path
    body_bytes = fields["bytes"]
    headers = scope.get("headers", ())
    return AccessAtoms(
        {
            "h": client[0] if client else "-",
            "l": "-",
            "u": _basic_auth_user(headers),
            "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
            "r": f"{fields['method']} {target} {protocol}",
            "m": fields["method"],
            "U": path,
            "q": query,
            "H": protocol,
            "s": fields["status"],
            "B": body_bytes,
            "b": str(body_bytes) if body_bytes else "-",
            "f": _quote_safe(fields["referer"] or "-"),
            "a": _quote_safe(fields["user_agent"] or "-"),
            "T": seconds,
            "M": micros // 1000,
            "D": micros,
            "L": "%d.%06d" % (seconds, micros % MICROSECONDS),
            "p": "<%d>" % fields["pid"],
        },
        headers,
        response_headers,
    )


class AccessLogFormat:
    """A checked --access-log-format: every atom known and the whole format renders."""

    def __init__(self, fmt: str) -> None:
        for name in _ATOM.findall(fmt):
            if name not in _ATOMS and _NAMED_ATOM.fullmatch(name) is None:
                raise ValueError(f"unknown atom %({name})")
        if "%" in _ATOM.sub("", fmt.replace("%%", "")):
            raise ValueError("every % starts an atom, as %(h)s (a literal % is %%)")
        sample_scope = {
            "client": ("127.0.0.1", 1),
            "raw_path": b"/",
            "query_string": b"",
            "http_version": "1.1",
            "headers": [],
        }
        fields = _access_fields(sample_scope, "GET", 200, 0.0, 0)
        try:
            fmt % access_atoms(fields, sample_scope, 0.0, [])
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(str(exc)) from None
        self.format = fmt


# The custom access-log format, None for the default line (Config sets it).
access_log_format: Optional[str] = None
# Whether access records carry the structured fields (ACCESS_FIELDS). Only the
# built-in text line needs none of them, and it is the common case: it skips
# their cost (a header scan and a dict per response).
access_fields: bool = True


def configure_access_log(fmt: Optional[str], fields: bool) -> None:
    """Use `fmt` (Gunicorn's atoms) for access lines, or the default line (None);
    `fields`: whether records carry the structured fields, for a formatter to use.
    Call it once the access logger's handlers are set up: it decides whether the
    lines go through the buffer (AccessLogBuffer)."""
    global access_log_format, access_fields, _access_buffer
    access_log_format = None if fmt is None else AccessLogFormat(fmt).format
    access_fields = fields or access_log_format is not None
    flush_access_log()
    _access_buffer = None if access_fields else AccessLogBuffer.for_access_logger()


# The buffered access log, as Nginx's `access_log ... buffer= flush=`: lines wait
# in memory and go to the stream in one write per batch.
ACCESS_BUFFER_SIZE = 64 * 1024  # characters: a batch this big is written at once
ACCESS_FLUSH_SECONDS = 1.0  # the longest a line waits in the buffer


class AccessLogBuffer:
    """The default access lines of the built-in config (one StreamHandler with the
    built-in AccessFormatter, no colours, no filters), formatted here byte for byte
    as that handler would, and written to its stream in batches: when the buffer
    passes ACCESS_BUFFER_SIZE, at most ACCESS_FLUSH_SECONDS after a line came (one
    timer on the event loop, armed by the first line of a batch), and on every exit
    path (flush_access_log). Any other logging set-up keeps the logging module's
    path; one that changes at run time is seen at the next timed flush."""

    def __init__(self, handler: logging.StreamHandler, prefix: str) -> None:
        self.handler = handler
        self.formatter = handler.formatter
        self.prefix = prefix
        self.lines: list[str] = []
        self.size = 0
        self.timer: Optional[asyncio.TimerHandle] = None

    @classmethod
    def for_access_logger(cls) -> Optional[AccessLogBuffer]:
        """A buffer for the access logger when its set-up is the built-in one, else
        None."""
        logger = access_logger
        if logger.propagate or logger.filters or not logger.isEnabledFor(logging.INFO):
            return None
        if len(logger.handlers) != 1:
            return None
        handler = logger.handlers[0]
        formatter = handler.formatter
        if (
            type(handler) is not logging.StreamHandler
            or handler.filters
            or handler.level > logging.INFO
            or type(formatter) is not AccessFormatter
            or formatter.use_colors
            or type(formatter._style) is not logging.PercentStyle
            or formatter._fmt != LEVEL_PREFIX_FORMAT
        ):
            return None
        # what the formatter puts before a message, by its own hand
        empty = logging.makeLogRecord(
            {
                "name": logger.name,
                "levelno": logging.INFO,
                "levelname": logging.getLevelName(logging.INFO),
                "msg": "",
            }
        )
        return cls(handler, formatter.format(empty))

    def still_in_charge(self) -> bool:
        """Whether the access logger's set-up is still the one this buffer stands for."""
        logger = access_logger
        handler = self.handler
        return (
            logger.handlers == [handler]
            and not logger.filters
            and not handler.filters
            and handler.formatter is self.formatter
            and logger.isEnabledFor(logging.INFO)
        )

    def add(self, message: str) -> None:
        self.lines.append(message)
        self.size += len(message)
        if self.size >= ACCESS_BUFFER_SIZE:
            self.flush()
        elif self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a line from outside an event loop
                self.flush()
                return
            self.timer = loop.call_later(ACCESS_FLUSH_SECONDS, self.timed_flush)

    def timed_flush(self) -> None:
        global _access_buffer
        self.timer = None
        self.flush()
        if not self.still_in_charge():
            _access_buffer = None

    def flush(self) -> None:
        """Write the buffered lines to the handler's stream, in one write."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines:
            return
        separator = self.handler.terminator + self.prefix
        text = self.prefix + separator.join(self.lines) + self.handler.terminator
        self.forget()
        handler = self.handler
        with handler.lock:
            try:
                handler.stream.write(text)
                handler.stream.flush()
            except Exception:
                handler.handleError(
                    logging.makeLogRecord({"name": access_logger.name, "msg": text})
                )

    def forget(self) -> None:
        self.lines = []
        self.size = 0
        self.timer = None


# The buffer of the access lines, when the set-up allows one (configure_access_log).
_access_buffer: Optional[AccessLogBuffer] = None


def flush_access_log() -> None:
    """Write the buffered access lines now: every exit path calls this (a server's
    end, a worker's os._exit, the interpreter's exit)."""
    if _access_buffer is not None:
        _access_buffer.flush()


atexit.register(flush_access_log)


def _access_fields(scope: dict, method: str, status: int, duration: float, body_bytes: int) -> dict:
    user_agent = referer = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"referer":
            referer = value.decode("latin-1")
    return {
        "client": format_client(scope),
        "method": method,
        "path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "status": status,
        "bytes": body_bytes,
        "duration_ms": round(duration * 1000, 3),
        "user_agent": user_agent,
        "referer": referer,
        "pid": _pid,
    }


def log_access(
    scope: dict, status: int, started: float, body_bytes: int, response_headers: Any
) -> None:
    """The access record of one finished response (both HTTP modes call this):
    `started` is when its head was complete (time.monotonic()), `body_bytes` the
    body bytes written, `response_headers` the app's."""
    args = (
        format_client(scope),
        scope["method"],
        _path_with_query(scope),
        scope["http_version"],
        status,
    )
    _write_access(
        ACCESS_LOG_FORMAT, args, scope, scope["method"], status, started, body_bytes,
        response_headers,
    )  # fmt: skip


def log_websocket_access(scope: dict, status: int, started: float, response_headers: Any) -> None:
    """The access record of one WebSocket, once the app answered its handshake: 101
    when it accepted, else the status it refused with (403, its own, or 500). Its
    duration is from the handshake request to that answer; its bytes are 0."""
    args = (format_client(scope), _path_with_query(scope), status)
    # a WebSocket scope has no method: the handshake's is GET
    _write_access(
        WEBSOCKET_ACCESS_LOG_FORMAT, args, scope, "GET", status, started, 0, response_headers
    )


def _write_access(
    line_format: str,
    args: tuple,
    scope: dict,
    method: str,
    status: int,
    started: float,
    body_bytes: int,
    response_headers: Any,
) -> None:
    """One access record: the default line (`line_format % args`), buffered when
    the set-up allows it, or the custom format's atoms; with the structured fields
    when something may use them (access_fields)."""
    if not access_fields:
        if _access_buffer is not None:
            _access_buffer.add(line_format % args)
        else:
            access_logger.info(line_format, *args)
        return
    duration = time.monotonic() - started
    fields = _access_fields(scope, method, status, duration, body_bytes)
    if access_log_format is None:
        access_logger.info(line_format, *args, extra=fields)
    else:
        atoms = access_atoms(fields, scope, duration, response_headers)
        access_logger.info(access_log_format, atoms, extra=fields)


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
