"""Proxy trust: which peers may say who the client is, which header family they
say it in, and how a scope takes `client` and `scheme` from it (HTTP and WebSocket
scopes alike, both HTTP modes).

The rule: one family is believed, never both. `x-forwarded` (the default, as
uvicorn, gunicorn and Nginx's documentation assume) reads X-Forwarded-For and
X-Forwarded-Proto; `forwarded` reads RFC 7239 `Forwarded`. The other family is
ignored, since a standard proxy set-up overwrites the family it writes and passes the
other one through from the client untouched. X-Real-IP is never read."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Optional, Union

# Trust answers cached per peer address; the cache is emptied when it holds this many.
TRUST_CACHE_SIZE = 1024

X_FORWARDED = "x-forwarded"
FORWARDED = "forwarded"
PROXY_HEADERS_STYLES = (X_FORWARDED, FORWARDED)
# The header fields apply_proxy_headers reads: a request without any skips it. (The C
# HTTP/1.1 protocol tests these names inline, as it reads them: _parser.pyx `forwarded`.)
PROXY_HEADER_NAMES = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))


class ProxyTrust:
    """`forwarded_allow_ips` is a comma-separated string or a list of IP addresses,
    CIDR networks, or `*` for everyone. A peer on a unix socket (no address) is
    trusted: only a local process with access to the socket file can be one, and
    that is how Nginx sits in front of fastserve. `style` is the header family
    believed: one of PROXY_HEADERS_STYLES.
    """

    def __init__(self, forwarded_allow_ips: Union[str, Iterable[str]], style: str) -> None:
        if style not in PROXY_HEADERS_STYLES:
            raise ValueError(
                f"proxy headers style {style!r}: expected one of {PROXY_HEADERS_STYLES}"
            )
        self.style = style
        if isinstance(forwarded_allow_ips, str):
            items = [item.strip() for item in forwarded_allow_ips.split(",")]
        else:
            items = [str(item).strip() for item in forwarded_allow_ips]
        self.always = "*" in items
        self.networks = []
        self.literals = set()
        for item in items:
            if not item or item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)
        # Parsing an address costs more than the rest of a request, and peers repeat.
        self._answers: dict[Optional[str], bool] = {}

    def is_trusted(self, host: Optional[str]) -> bool:
        answer = self._answers.get(host)
        if answer is None:
            if len(self._answers) >= TRUST_CACHE_SIZE:
                self._answers.clear()
            answer = self._answers[host] = self._is_trusted(host)
        return answer

    def _is_trusted(self, host: Optional[str]) -> bool:
        if self.always or host is None or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_from_forwarded_for(self, value: str) -> Optional[str]:
        """The client in an X-Forwarded-For chain: the rightmost untrusted hop."""
        hops = [hop.strip() for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else None


def apply_proxy_headers(scope: dict, trust: ProxyTrust) -> None:
    """Take `client` and `scheme` from the headers of the trusted style, when the
    peer is trusted. Repeated header lines count as one comma-separated list."""
    if trust.style == FORWARDED:
        forwarded = _joined(scope, b"forwarded")
        if forwarded is not None and _peer_is_trusted(scope, trust):
            _apply_forwarded(scope, trust, parse_forwarded(forwarded))
        return
    forwarded_for = _joined(scope, b"x-forwarded-for")
    forwarded_proto = _joined(scope, b"x-forwarded-proto")
    if forwarded_for is None and forwarded_proto is None:
        return
    if not _peer_is_trusted(scope, trust):
        return
    if forwarded_proto is not None:
        # the last value is the nearest proxy's word
        _set_scheme(scope, forwarded_proto.split(",")[-1])
    if forwarded_for is not None:
        host = trust.client_from_forwarded_for(forwarded_for)
        if host:
            scope["client"] = (host, 0)


def _joined(scope: dict, name: bytes) -> Optional[str]:
    """Every `name` header line of the scope joined by commas; None without one."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ",".join(values) if values else None


def _peer_is_trusted(scope: dict, trust: ProxyTrust) -> bool:
    client = scope.get("client")
    return trust.is_trusted(client[0] if client else None)


def _apply_forwarded(scope: dict, trust: ProxyTrust, elements: list[dict[str, str]]) -> None:
    """RFC 7239: the client is the right-most `for=` hop that is not a trusted proxy
    (the first hop when all are trusted), and the scheme is the `proto=` of that
    hop's element, which the proxy it connected to wrote."""
    chosen = None
    for element in reversed(elements):
        if "for" in element:
            chosen = element
            if not trust.is_trusted(parse_node(element["for"])[0]):
                break
    if chosen is None:  # no for= at all: the nearest proto= still names the scheme
        chosen = next((element for element in reversed(elements) if "proto" in element), {})
    if "proto" in chosen:
        _set_scheme(scope, chosen["proto"])
    if "for" in chosen:
        host, port = parse_node(chosen["for"])
        if host and host.lower() != "unknown":
            scope["client"] = (host, port)


def _set_scheme(scope: dict, proto: str) -> None:
    proto = proto.strip().lower()
    if proto in ("http", "https", "ws", "wss"):
        secure = proto in ("https", "wss")
        if scope["type"] == "websocket":
            scope["scheme"] = "wss" if secure else "ws"
        else:
            scope["scheme"] = "https" if secure else "http"


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a Forwarded header value, nearest proxy last: each a dict of
    lowercased parameter names to unquoted values (RFC 7239 4)."""
    elements = []
    for element in _split_outside_quotes(value, ","):
        pairs = {}
        for pair in _split_outside_quotes(element, ";"):
            name, equals, found = pair.partition("=")
            name = name.strip().lower()
            if not equals or not name:
                continue  # not a name=value pair: skipped, as proxies do
            found = found.strip()
            if len(found) >= 2 and found[0] == found[-1] == '"':
                found = _unescape(found[1:-1])
            pairs[name] = found
        if pairs:
            elements.append(pairs)
    return elements


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return parts


def _unescape(quoted: str) -> str:
    """A quoted-string's content: `\\x` stands for `x`."""
    out = []
    escaped = False
    for char in quoted:
        if char == "\\" and not escaped:
            escaped = True
            continue
        out.append(char)
        escaped = False
    return "".join(out)


def parse_node(node: str) -> tuple[str, int]:
    """`(host, port)` of a `for=` node (RFC 7239 6): `[v6]:port`, `v4:port`, a name,
    `unknown` or an obfuscated `_id`; port 0 when it has none."""
    node = node.strip()
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() else 0
