"""The PEP 3333 environ of a request.

Built from the parts the HTTP protocols already put in the request's ASGI scope,
where proxy trust (client address, scheme) and --root-path are applied: method, raw
path, query string, HTTP version, headers as (lowercase name bytes, value bytes),
client and server addresses. Every value is a native `str`, decoded as latin-1
(PEP 3333's "bytes as str").
"""

from __future__ import annotations

import logging
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


def header_variables(headers) -> dict[str, str]:
    """The HTTP_* variables (and CONTENT_TYPE / CONTENT_LENGTH) of the request headers."""
    variables: dict[str, str] = {}
    for name, value in headers:
        if b"_" in name:
            # CVE-2015-0219: as HTTP_X_AUTH_USER, X-Auth_User would pass for
            # X-Auth-User, which a proxy may have vouched for. Dropped, as gunicorn does.
            continue
        key = UNPREFIXED.get(name)
        if key is None:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key in variables:
            text = variables[key] + (COOKIE_JOIN if name == COOKIE else JOIN) + text
        variables[key] = text
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


def build_environ(scope: dict, body: Any, body_length: int, extras: dict) -> dict[str, Any]:
    """The environ of the request `scope` whose body (`wsgi.input`) holds
    `body_length` bytes; `extras`: the wsgi.* keys that are the server's."""
    variables = header_variables(scope["headers"])
    scheme = scope["scheme"]
    if "CONTENT_LENGTH" not in variables and "HTTP_TRANSFER_ENCODING" in variables:
        # a chunked body, de-chunked and read in full: its length is known now (as
        # waitress says it), which frameworks that read CONTENT_LENGTH bytes need
        variables["CONTENT_LENGTH"] = str(body_length)
    server_name, server_port = server_address(
        scope.get("server"), variables.get("HTTP_HOST"), scheme
    )
    root_path = scope.get("root_path", "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path_info(scope["raw_path"], root_path),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "wsgi.version": WSGI_VERSION,
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.input_terminated": True,
        "wsgi.run_once": False,
        **extras,
        **variables,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    return environ
