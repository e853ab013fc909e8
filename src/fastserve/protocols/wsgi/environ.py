"""The PEP 3333 environ of a request, in three parts:

- the head's variables (`head_variables`: REQUEST_METHOD, PATH_INFO, QUERY_STRING,
  SERVER_PROTOCOL, HTTP_*, CONTENT_TYPE / CONTENT_LENGTH), built by the HTTP protocol
  from the parsed head as it parses it (the C mode in `_parser.pyx`, by the same
  rules and tables as this module's), handed over in the scope's ENVIRON_EXTENSION;
- what the request's scope says once proxy trust and --root-path are applied
  (REMOTE_ADDR, wsgi.url_scheme, SCRIPT_NAME, SERVER_NAME / SERVER_PORT);
- the server's keys, alike for every request (`base_environ`).

Every value is a native `str`, decoded as latin-1 (PEP 3333's "bytes as str").
"""

from __future__ import annotations

import logging
import sys
import urllib.parse
from typing import Any, Optional

WSGI_VERSION = (1, 0)
SERVER_SOFTWARE = "fastserve"
# Request headers PEP 3333 names without the HTTP_ prefix (CGI's names).
UNPREFIXED = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
# Repeated headers join with ", " (RFC 9110 5.3); cookies with "; " (RFC 6265 5.4).
JOIN = ", "
COOKIE = b"cookie"
COOKIE_JOIN = "; "
# Request headers whose environ keys are made at import (HEADER_KEYS).
COMMON_HEADERS = (
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"authorization",
    b"cache-control",
    b"connection",
    b"content-length",
    b"content-type",
    b"cookie",
    b"expect",
    b"forwarded",
    b"host",
    b"if-modified-since",
    b"if-none-match",
    b"origin",
    b"pragma",
    b"referer",
    b"transfer-encoding",
    b"upgrade",
    b"user-agent",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"x-request-id",
)
# The scope extension in which both HTTP protocols hand a WSGI request's head
# variables (head_variables) to the runner, when ProtocolSettings.wsgi is on.
ENVIRON_EXTENSION = "fastserve.wsgi.environ"
# SERVER_PORT when the connection has none (a unix socket) and Host names none.
DEFAULT_PORTS = {"http": "80", "https": "443"}

error_logger = logging.getLogger("fastserve.error")


class ErrorStream:
    """`wsgi.errors`: what the app writes goes into the `fastserve.error` logger, a
    record per line (a partial line waits for its end, or for flush())."""

    def __init__(self) -> None:
        self.partial = ""

    def write(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            error_logger.error("%s", line)

    def writelines(self, lines) -> None:
        for text in lines:
            self.write(text)

    def flush(self) -> None:
        if self.partial:
            error_logger.error("%s", self.partial)
            self.partial = ""


def header_key(name: bytes) -> Optional[str]:
    """The environ key of a request header (lowercase name bytes): HTTP_ and the name
    upper-cased, "-" as "_"; CONTENT_TYPE and CONTENT_LENGTH without the prefix; None
    for a name with "_" (CVE-2015-0219: as HTTP_X_AUTH_USER, X-Auth_User would pass
    for X-Auth-User, which a proxy may have vouched for; dropped, as gunicorn does).
    Kept in HEADER_KEYS (interned) while it has room."""
    if b"_" in name:
        return None
    key = UNPREFIXED.get(name)
    if key is None:
        key = sys.intern("HTTP_" + name.decode("latin-1").upper().replace("-", "_"))
    if len(HEADER_KEYS) < HEADER_KEYS_MAX:
        HEADER_KEYS[name] = key
    return key


def join_values(name: bytes, joined: str, value: str) -> str:
    """A repeated header's values as one variable."""
    return joined + (COOKIE_JOIN if name == COOKIE else JOIN) + value


# Header names -> environ keys: the common ones from the start, then those seen (on the
# event loop's thread, where requests are parsed), up to HEADER_KEYS_MAX so that a
# client inventing names cannot grow it. The C mode reads this same dict.
HEADER_KEYS_MAX = 1024
HEADER_KEYS: dict[bytes, str] = {}
for _name in COMMON_HEADERS:
    header_key(_name)


def header_variables(headers) -> dict[str, str]:
    """The HTTP_* variables (and CONTENT_TYPE / CONTENT_LENGTH) of the request headers
    (lowercase name bytes, value bytes)."""
    variables: dict[str, str] = {}
    for name, value in headers:
        key = HEADER_KEYS.get(name) or header_key(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in variables:
            text = join_values(name, variables[key], text)
        variables[key] = text
    return variables


def head_variables(
    method: str, http_version: str, raw_path: bytes, query_string: bytes, headers, root_path: str
) -> dict[str, str]:
    """The environ's variables that come from the request's head. The pure mode calls
    this; the C mode builds the same in `_parser.pyx` (`_wsgi_head`, its hot-path
    twin: change both; tests/test_differential.py binds them)."""
    variables = header_variables(headers)
    variables["REQUEST_METHOD"] = method
    variables["SERVER_PROTOCOL"] = "HTTP/" + http_version
    variables["PATH_INFO"] = path_info(raw_path, root_path)
    variables["QUERY_STRING"] = query_string.decode("latin-1")
    return variables


def path_info(raw_path: bytes, root_path: str) -> str:
    """PATH_INFO: the percent-decoded path bytes after SCRIPT_NAME, as latin-1. The
    scope's raw_path starts with --root-path (target.with_root_path), visible ASCII."""
    prefix = root_path.encode("ascii")
    if prefix and raw_path.startswith(prefix):
        raw_path = raw_path[len(prefix) :]
    return urllib.parse.unquote_to_bytes(raw_path).decode("latin-1")


def server_address(server: Optional[tuple], host: Optional[str], scheme: str) -> tuple[str, str]:
    """(SERVER_NAME, SERVER_PORT): the connection's local address, or on a unix
    socket the Host header's (as gunicorn), else localhost and the scheme's port."""
    if server is not None and server[1] is not None:
        return str(server[0]), str(server[1])
    default_port = DEFAULT_PORTS.get(scheme, DEFAULT_PORTS["http"])
    if not host:
        return "localhost", default_port
    name, colon, port = host.rpartition(":")
    if not colon or "]" in port:  # no port, or a bare IPv6 literal
        return host, default_port
    return name, port


def build_environ(scope: dict, body: Any, body_length: int, base: dict) -> dict[str, Any]:
    """The environ of the request `scope` whose body (`wsgi.input`) holds `body_length`
    bytes: `base`'s keys (the server's), the head's variables (ENVIRON_EXTENSION, made by
    the protocol from the parsed head), and what proxy trust and --root-path decided."""
    environ = base.copy()
    environ.update(scope["extensions"][ENVIRON_EXTENSION])
    scheme = scope["scheme"]
    if "CONTENT_LENGTH" not in environ and "HTTP_TRANSFER_ENCODING" in environ:
        # a chunked body, de-chunked and read in full: its length is known now (as
        # waitress says it), which frameworks that read CONTENT_LENGTH bytes need
        environ["CONTENT_LENGTH"] = str(body_length)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = server_address(
        scope.get("server"), environ.get("HTTP_HOST"), scheme
    )
    environ["SCRIPT_NAME"] = scope.get("root_path", "")
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = body
    environ["wsgi.errors"] = ErrorStream()  # its own per request: it holds a partial line
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    return environ


def base_environ(multithread: bool, multiprocess: bool, file_wrapper: Any) -> dict[str, Any]:
    """The keys every request's environ has alike, made once per app."""
    return {
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "wsgi.version": WSGI_VERSION,
        "wsgi.input_terminated": True,
        "wsgi.run_once": False,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.file_wrapper": file_wrapper,
    }
