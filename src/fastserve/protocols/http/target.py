"""The request target (path and query) and the Host rule of RFC 9112."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Optional

# The request-target grammar llhttp enforces in the C mode, for the pure mode (h11
# takes any run of visible ASCII): the origin and asterisk forms start with "/" or
# "*"; the absolute form is scheme "://" authority, then "/" or "?" and the rest;
# CONNECT takes an authority (RFC 9112 3.2). An authority excludes these bytes:
# " # < > \ ^ ` { | } (and SP); the rest of a target is any visible ASCII.
_AUTHORITY = rb"[!$-;=?-\[\]_a-z~]*"
_REST = rb"(?:[/?][!-~]*)?"
_TARGET_RE = re.compile(rb"[/*][!-~]*|[A-Za-z]+://" + _AUTHORITY + _REST)
_CONNECT_TARGET_RE = re.compile(_AUTHORITY + _REST)


def is_valid_target(method: str, target: bytes) -> bool:
    """Whether the C mode's parser (llhttp) accepts `target` for `method`."""
    pattern = _CONNECT_TARGET_RE if method == "CONNECT" else _TARGET_RE
    return bool(target) and pattern.fullmatch(target) is not None


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


# What --root-path may be: empty, or "/" and visible ASCII without "?" and "#". It goes
# into raw_path byte for byte, so it must be bytes a request target could hold.
# (The class is "!" to "~" less "#" (0x23) and "?" (0x3f).)
_ROOT_PATH_RE = re.compile(r'(?:/[!"$->@-~]*)?')


def root_path_error(root_path: str) -> Optional[str]:
    """Why `root_path` cannot be the --root-path, or None when it can."""
    if _ROOT_PATH_RE.fullmatch(root_path) is None:
        return 'must be empty or a path starting with "/", in visible ASCII without "?" or "#"'
    return None


def with_root_path(root_path: str, raw_path: bytes, path: str) -> tuple[bytes, str]:
    """The scope's (raw_path, path) for a request under --root-path `root_path`.

    As uvicorn has it, and the ASGI spec since 2023: `path` and `raw_path` hold the
    whole path, root path included, and a router matches what follows `root_path`.
    A proxy that mounts the app at /api strips the prefix and the server puts it
    back, so the URLs the app builds (request.url, redirects, url_for) keep it.
    The prefix goes before every path, even one that already starts with it (as
    uvicorn does: a stripped path and an unstripped one look the same here), so
    /api/items sent past the proxy is /api/api/items to the app, and the app
    answers at one set of URLs only. Callers skip the call when `root_path` is
    empty (the default; the C mode's hot path pays one test).
    """
    return root_path.encode("ascii") + raw_path, root_path + path


def request_paths(target: bytes, root_path: str) -> tuple[bytes, bytes, str]:
    """A request target as the scope has it: (raw_path, query_string, path), with
    --root-path before raw_path and path. (The C mode's hot path does this inline for
    an origin-form target without "%", and calls this for any other.)"""
    raw_path, query_string = split_target(target)
    path = decode_path(raw_path)
    if root_path:
        raw_path, path = with_root_path(root_path, raw_path, path)
    return raw_path, query_string, path


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
