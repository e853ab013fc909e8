"""The request target (path and query) and the Host rule of RFC 9112."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Optional

# The authority llhttp accepts (CONNECT's target, or after an absolute-form's
# scheme): these bytes, then the path, the query or the end.
_AUTHORITY = rb"[-!$%&'()*+,.0-9:;=@A-Z\[\]_a-z~]*(?:[/?]|\Z)"
_AUTHORITY_FORM = re.compile(_AUTHORITY)
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z]+://" + _AUTHORITY)


def is_request_target(method: str, target: bytes) -> bool:
    """Whether `target` has a form llhttp accepts (RFC 9112 3.2): origin-form
    (`/path`), asterisk-form (`*`) or absolute-form (`http://host/path`); for
    CONNECT, authority-form (`host:port`). The C mode has llhttp check it; the pure
    mode calls this, since h11 takes any bytes (`GET x HTTP/1.1`)."""
    if method == "CONNECT":
        return _AUTHORITY_FORM.match(target) is not None
    first = target[:1]
    return first == b"/" or first == b"*" or _ABSOLUTE_FORM.match(target) is not None


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (raw_path, query_string).

    Absolute-form targets (`GET http://host/path?q HTTP/1.1`) give the path of
    the URL (RFC 9112 3.2.2); `*` (OPTIONS) is kept as is.
    """
    if target[:1] != b"/" and target != b"*":
        scheme_end = target.find(b"://")
        if scheme_end > 0:
            path_start = target.find(b"/", scheme_end + 3)
            query_start = target.find(b"?", scheme_end + 3)
            if path_start < 0 or (0 <= query_start < path_start):
                target = b"/" + (target[query_start:] if query_start >= 0 else b"")
            else:
                target = target[path_start:]
    raw_path, _, query_string = target.partition(b"?")
    return raw_path, query_string


def decode_path(raw_path: bytes) -> str:
    """The percent-decoded `path` of the ASGI scope (`raw_path` keeps the bytes)."""
    path = raw_path.decode("latin-1")
    if "%" in path:
        return urllib.parse.unquote(path)
    return path


def host_error(http_version: str, headers: Sequence[tuple[bytes, bytes]]) -> Optional[str]:
    """RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host header.

    Returns the reason for a 400, or None when the request is fine.
    """
    count = 0
    for name, _ in headers:
        if name == b"host":
            count += 1
    if count > 1:
        return "multiple Host headers"
    if count == 0 and http_version == "1.1":
        return "missing Host header"
    return None
