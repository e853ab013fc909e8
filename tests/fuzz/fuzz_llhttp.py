"""Fuzz harness: the llhttp wrapper alone (`fastserve._parser.parse_requests`, the
parsing core and callbacks of the C protocol, with no protocol around it).

Invariants, for any bytes:
- parsing raises nothing but the documented ValueError (malformed, over a limit);
- the requests parsed, or the error, are the same whether the bytes come at once
  or in reads cut anywhere (head limits are counted across reads, spans joined);
- every request has a method llhttp knows, a non-empty target and lowercased names.
"""

from __future__ import annotations

from fuzz_common import InvariantError, reads_of

from fastserve import _parser
from protocol_fakes import make_settings

# Small limits, so that short inputs reach every limit's path.
LIMITS = {
    "limit_request_head": 2048,
    "limit_request_line": 512,
    "limit_request_fields": 16,
    "limit_request_field_size": 256,
    "limit_request_body": 4096,
}


async def _no_app(scope, receive, send):  # parse only: never called
    raise AssertionError("the app is not run by parse_requests")


SETTINGS = make_settings(_no_app, **LIMITS)
DEFAULT_STATUS = "400"  # a malformed request
# Parsing is cheap: inputs up to this long are also parsed one byte per read.
BYTEWISE_MAX = 1024


def _parse(reads: list[bytes]):
    try:
        return _parser.parse_requests(reads, SETTINGS)
    except ValueError as exc:
        # The answer the protocol gives (400 unless the message says " -> status"),
        # not the llhttp error: where a read is cut decides whether llhttp or one of
        # our span callbacks sees a bad byte first (HPE_INVALID_URL or HPE_USER).
        _, arrow, status = str(exc).rpartition(" -> ")
        return "answered %s" % (status if arrow else DEFAULT_STATUS)


def check(data: bytes) -> None:
    ways = reads_of(data, BYTEWISE_MAX)
    results = [_parse(reads) for reads in ways]
    for reads, result in zip(ways[1:], results[1:]):
        if result != results[0]:
            raise InvariantError(
                "at once: %r\nin %d reads %r: %r" % (results[0], len(reads), reads, result)
            )
    if isinstance(results[0], list):
        for method, target, headers, _body in results[0]:
            if not method or not target:
                raise InvariantError("empty method or target: %r" % ((method, target),))
            for name, _value in headers:
                if name != name.lower() or not name:
                    raise InvariantError("header name not lowercased: %r" % name)
