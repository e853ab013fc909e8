"""fastserve's logging, in this order:

- the loggers (`fastserve`, `fastserve.error`, `fastserve.access`: ServerLogger), the
  log levels and the built-in config (LOGGING_CONFIG);
- the formatters: uvicorn's line shapes (DefaultFormatter, AccessFormatter) and one
  JSON object per record (JsonFormatter, --log-format json);
- uvicorn's logging contract: its loggers as aliases of fastserve's, its formatter
  classes (or fastserve's stand-ins) in a dictConfig or fileConfig;
- --access-logfile / --error-logfile (log_to_file);
- the access record of a response or a WebSocket (log_access, log_websocket_access):
  its structured fields as record attributes, and the default line or Gunicorn's
  atoms of --access-log-format (AccessAtoms, AccessLogFormat); configure_access_log
  decides whether the default lines go through the buffer of access_buffer.py;
- the start-up line (log_running)."""

from __future__ import annotations

import base64
import binascii
import configparser
import http
import importlib
import json
import logging
import os
import re
import socket
import sys
import time
from copy import copy
from typing import Any, Optional

from fastserve.access_buffer import access_buffer

TRACE_LOG_LEVEL = 5

# The access record of one response, as uvicorn logs it: its message and its args,
# in this order: client, method, path with query, HTTP version, status. A WebSocket's
# is its handshake's (GET, 101 when the app accepted, else the status it refused with).
ACCESS_LOG_FORMAT = '%s - "%s %s HTTP/%s" %d'
# The default access line (uvicorn's): the status with its reason phrase, `200 OK`.
ACCESS_LINE_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
DEFAULT_ACCESS_LINE = '%s - "%s %s HTTP/%s" %s'

# The structured fields every access record carries (LogRecord attributes, by
# `extra=`), whatever renders it: the JSON formatter emits them as they are.
ACCESS_FIELDS = (
    "client", "method", "path", "query", "http_version", "status", "bytes",
    "duration_ms", "user_agent", "referer", "pid",
)  # fmt: skip
LOG_FORMATS = ("text", "json")
# An HTTP/2 request's http_version in its scope (ASGI), and the version as HTTP/1
# text names it: the access line's "HTTP/2.0" (as Gunicorn and nginx write it),
# WSGI's SERVER_PROTOCOL.
HTTP2_VERSION = "2"
HTTP2_VERSION_TEXT = "2.0"
# The built-in default formatter's format (LOGGING_CONFIG): `INFO:     message`.
LEVEL_PREFIX_FORMAT = "%(levelprefix)s %(message)s"


class ServerLogger(logging.Logger):
    """fastserve's loggers (`fastserve`, `fastserve.error`, `fastserve.access`), which
    a logging config's `disable_existing_loggers` does not disable: they are known by
    two names (uvicorn's too), and a config that configures one of the names would
    otherwise disable the logger under the other."""

    @property
    def disabled(self) -> bool:
        return False

    @disabled.setter
    def disabled(self, value: bool) -> None:
        pass  # the server's lines are silenced by level or handlers, not by this


def _server_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    # also a logger a module made before this one was imported (its getLogger call)
    logger.__class__ = ServerLogger
    return logger


_server_logger("fastserve")  # their parent
error_logger = _server_logger("fastserve.error")
access_logger = _server_logger("fastserve.access")

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
            "fmt": ACCESS_LINE_FORMAT,
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

# uvicorn's loggers, and the fastserve logger each one is (alias_uvicorn_loggers).
UVICORN_LOGGERS = {
    "uvicorn": "fastserve",
    "uvicorn.error": "fastserve.error",
    "uvicorn.access": "fastserve.access",
}
# uvicorn's formatter classes, and fastserve's that stand in for them when uvicorn is
# not installed.
UVICORN_FORMATTERS = {
    "uvicorn.logging.ColourizedFormatter": "fastserve.logging.DefaultFormatter",
    "uvicorn.logging.DefaultFormatter": "fastserve.logging.DefaultFormatter",
    "uvicorn.logging.AccessFormatter": "fastserve.logging.AccessFormatter",
}
# The module of the formatter classes a custom access format replaces: they shape
# the default line (Config.configure_logging).
_ACCESS_FORMATTER_MODULES = ("fastserve.logging", "uvicorn.logging")

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
    """uvicorn's access formatter: an access record's `client_addr`, `request_line`
    and `status_code` (with its reason phrase, coloured when the stream is a
    terminal) for the format, from the record's args."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and len(args) == len(_UVICORN_ARGS):
            record = copy(record)
            client_addr, method, path, http_version, status = args
            status_code = STATUS_AND_PHRASE[status]
            if self.use_colors:
                code = "32" if status < 400 else "33" if status < 500 else "31"
                status_code = _colour(status_code, code)
            record.__dict__.update(
                client_addr=client_addr,
                request_line=f"{method} {path} HTTP/{http_version}",
                status_code=status_code,
            )
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


def shapes_access_lines(formatter: Optional[logging.Formatter]) -> bool:
    """Whether `formatter` is fastserve's or uvicorn's AccessFormatter (or made from
    one): it shapes the default line, which a custom access format replaces."""
    return any(
        cls.__name__ == "AccessFormatter" and cls.__module__ in _ACCESS_FORMATTER_MODULES
        for cls in type(formatter).__mro__
    )


def alias_uvicorn_loggers() -> None:
    """Make each of uvicorn's loggers the fastserve logger of the same role, for code
    and configs written for uvicorn: `logging.getLogger("uvicorn.access")` is
    fastserve's access logger (a filter added to it sees every access record),
    `uvicorn.error` fastserve's error logger."""
    loggers = logging.Logger.manager.loggerDict
    for uvicorn_name, name in UVICORN_LOGGERS.items():
        loggers[uvicorn_name] = logging.getLogger(name)


def _fastserve_name(name: str, seen: set) -> str:
    """The logger a config's logger `name` is here; a ValueError when the config
    names it twice (as uvicorn's and as fastserve's)."""
    target = UVICORN_LOGGERS.get(name, name)
    if target in seen:
        raise ValueError(f"loggers {name!r} and {target!r} are one logger here: configure it once")
    seen.add(target)
    return target


def _formatter_class(name: Any) -> Any:
    """uvicorn's formatter class `name`, or fastserve's that stands in for it when
    uvicorn is not installed; any other name as it is."""
    if name not in UVICORN_FORMATTERS:
        return name
    try:
        importlib.import_module("uvicorn.logging")
    except ImportError:
        return UVICORN_FORMATTERS[name]
    return name


def as_fastserve_config(config: dict) -> dict:
    """A dictConfig whose uvicorn loggers are fastserve's, and whose uvicorn formatter
    classes stand in as fastserve's when uvicorn is not installed."""
    seen: set = set()
    loggers = {
        _fastserve_name(name, seen): settings
        for name, settings in config.get("loggers", {}).items()
    }
    formatters = {}
    for name, settings in config.get("formatters", {}).items():
        settings = dict(settings)
        for key in ("()", "class"):
            if key in settings:
                settings[key] = _formatter_class(settings[key])
        formatters[name] = settings
    return {**config, "loggers": loggers, "formatters": formatters}


def as_fastserve_ini(path: str) -> configparser.ConfigParser:
    """The fileConfig file at `path`, read, with the same changes as
    as_fastserve_config."""
    parser = configparser.ConfigParser()
    parser.read(path)
    seen: set = set()
    for section in parser.sections():
        if section.startswith("logger_"):
            name = parser.get(section, "qualname", raw=True, fallback=None)
            if name is not None:
                parser.set(section, "qualname", _fastserve_name(name, seen))
        elif section.startswith("formatter_"):
            name = parser.get(section, "class", raw=True, fallback=None)
            if name is not None:
                parser.set(section, "class", _formatter_class(name))
    return parser


# Gunicorn's --access-logfile / --error-logfile name for the standard streams.
STANDARD_STREAM = "-"


def log_to_file(names: tuple, path: str, standard_stream: Any) -> None:
    """Gunicorn's --access-logfile / --error-logfile: the records of the loggers
    `names` (the first of them when none has a handler) go to the file `path`
    (appended to), or to `standard_stream` for "-", in the format their handlers had.
    Raises OSError when the file cannot be opened."""
    loggers = [logging.getLogger(name) for name in names]
    current = [handler for logger in loggers for handler in logger.handlers]
    if path == STANDARD_STREAM:
        handler: logging.Handler = logging.StreamHandler(standard_stream)
    else:
        handler = logging.FileHandler(path)
    formatter = current[0].formatter if current else None
    if (
        formatter is not None
        and path != STANDARD_STREAM
        and getattr(formatter, "use_colors", False)
    ):
        formatter = copy(formatter)  # no colour codes in a file
        formatter.use_colors = False
    handler.setFormatter(formatter)
    for logger in loggers:
        if logger.handlers:
            logger.handlers = [handler]
    if not current:  # they propagated to the root logger's handlers: no more
        loggers[0].handlers = [handler]
        loggers[0].propagate = False


# The args of uvicorn's access records, in order (ACCESS_LOG_FORMAT).
_UVICORN_ARGS = ("client_addr", "method", "full_path", "http_version", "status_code")


class _StatusAndPhrase(dict):
    """`200 OK` by status, as uvicorn's access line shows a status; `599 ` for one
    without a reason phrase."""

    def __missing__(self, status: int) -> str:
        return f"{status} "


STATUS_AND_PHRASE = _StatusAndPhrase(
    {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}
)


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
    variable) are looked up only when the format asks for them; absent: "-". As a
    record's args, it also answers uvicorn's args by position (`record.args[2]`, the
    path, for a filter written for uvicorn)."""

    def __init__(
        self, atoms: dict, request_headers: Any, response_headers: Any, args: tuple = ()
    ) -> None:
        super().__init__(atoms)
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.args = args

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self.args[key]
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


def access_atoms(
    fields: dict, scope: dict, duration: float, response_headers: Any, args: tuple = ()
) -> AccessAtoms:
    """The atoms of one access record, from its structured fields (and its args in
    uvicorn's order)."""
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
        args,
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
        args = ("127.0.0.1:1", "GET", "/", "1.1", 200)
        fields = _access_fields(sample_scope, args, 0.0, 0)
        try:
            fmt % access_atoms(fields, sample_scope, 0.0, [], args)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(str(exc)) from None
        self.format = fmt


# The custom access-log format, None for the default line (Config sets it).
access_log_format: Optional[str] = None


def configure_access_log(fmt: Optional[str]) -> None:
    """Use `fmt` (Gunicorn's atoms) for access lines, or the default line (None).
    Call it once the access logger's handlers are set up: it decides whether the
    lines go through the buffer (access_buffer.py)."""
    global access_log_format
    access_log_format = None if fmt is None else AccessLogFormat(fmt).format
    access_buffer.stop()
    prefix = None if fmt is not None else builtin_line_prefix()
    if prefix is not None:
        access_buffer.start(access_logger, access_logger.handlers[0], prefix)


def builtin_line_prefix() -> Optional[str]:
    """What the access logger's one handler puts before the default line, when its
    set-up is the built-in one (a StreamHandler or FileHandler with the built-in
    AccessFormatter and line, no colours): the lines the buffer may write by itself.
    None for any other set-up."""
    logger = access_logger
    if logger.propagate or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    formatter = handler.formatter
    if (
        type(handler) not in (logging.StreamHandler, logging.FileHandler)
        or handler.stream is None
        or type(formatter) is not AccessFormatter
        or formatter.use_colors
        or type(formatter._style) is not logging.PercentStyle
        or formatter._fmt != ACCESS_LINE_FORMAT
    ):
        return None
    # what the formatter puts before the line, by its own hand
    args = ("127.0.0.1:1", "GET", "/", "1.1", 200)
    sample = logging.makeLogRecord(
        {
            "name": logger.name,
            "levelno": logging.INFO,
            "levelname": logging.getLevelName(logging.INFO),
            "msg": ACCESS_LOG_FORMAT,
            "args": args,
        }
    )
    text = formatter.format(sample)
    line = DEFAULT_ACCESS_LINE % (*args[:4], STATUS_AND_PHRASE[200])
    return text[: -len(line)] if text.endswith(line) else None


def _access_fields(scope: dict, args: tuple, duration: float, body_bytes: int) -> dict:
    """The structured fields of an access record (ACCESS_FIELDS), and uvicorn's
    (`client_addr`, `request_line`, `status_code`), from its args in uvicorn's order."""
    client, method, full_path, http_version, status = args
    user_agent = referer = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"referer":
            referer = value.decode("latin-1")
    return {
        "client": client,
        "method": method,
        "path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": http_version,
        "status": status,
        "bytes": body_bytes,
        "duration_ms": round(duration * 1000, 3),
        "user_agent": user_agent,
        "referer": referer,
        "pid": _pid,
        "client_addr": client,
        "request_line": f"{method} {full_path} HTTP/{http_version}",
        "status_code": STATUS_AND_PHRASE[status],
    }


def log_access(
    scope: dict, status: int, started: float, body_bytes: int, response_headers: Any
) -> None:
    """The access record of one finished response (both HTTP modes call this):
    `started` is when its head was complete (time.monotonic()), `body_bytes` the
    body bytes written, `response_headers` the app's."""
    _write_access(scope, scope["method"], status, started, body_bytes, response_headers)


def log_websocket_access(scope: dict, status: int, started: float, response_headers: Any) -> None:
    """The access record of one WebSocket, once the app answered its handshake: 101
    when it accepted, else the status it refused with (403, its own, or 500). Its
    duration is from the handshake request to that answer; its bytes are 0."""
    # a WebSocket scope has no method: the handshake's is GET
    _write_access(scope, "GET", status, started, 0, response_headers)


def _write_access(
    scope: dict,
    method: str,
    status: int,
    started: float,
    body_bytes: int,
    response_headers: Any,
) -> None:
    """One access record: the default line, buffered while the set-up allows it, or
    through the logging module with uvicorn's message and args, the structured
    fields, and the custom format's atoms when there is one."""
    client = format_client(scope)
    path = _path_with_query(scope)
    version = scope["http_version"]
    if version == HTTP2_VERSION:
        version = HTTP2_VERSION_TEXT
    buffer = access_buffer
    if buffer.handler is not None:
        if buffer.nothing_else_sees_records():
            buffer.add(
                DEFAULT_ACCESS_LINE % (client, method, path, version, STATUS_AND_PHRASE[status])
            )
            return
        buffer.stop()
    if not access_logger.isEnabledFor(logging.INFO):
        return
    args = (client, method, path, version, status)
    duration = time.monotonic() - started
    fields = _access_fields(scope, args, duration, body_bytes)
    if access_log_format is None:
        access_logger.info(ACCESS_LOG_FORMAT, *args, extra=fields)
    else:
        atoms = access_atoms(fields, scope, duration, response_headers, args)
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
