"""The ASGI `tls` extension (https://asgi.readthedocs.io/en/latest/specs/tls.html):
what a TLS connection tells the app about itself, computed once per connection at
connection_made and referenced by every HTTP and WebSocket scope on it, in both
HTTP modes."""

from __future__ import annotations

import re
import ssl
import weakref
from typing import Optional

TLS = "tls"  # the extension's key in scope["extensions"]

# The low 16 bits of an OpenSSL cipher id are the suite's IANA number
# (the high bits are OpenSSL's 0x0300 "SSLv3 record" prefix).
IANA_CIPHER_MASK = 0xFFFF

# getpeercert()'s attribute names -> the short keys RFC 4514 (section 3) names;
# any other attribute keeps OpenSSL's long name.
RFC4514_ATTRIBUTE_KEYS = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
RFC4514_SPECIAL = re.compile(r'([\\"+,;<>])')  # escaped anywhere in a value

PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL
)

# SSLContext -> {OpenSSL cipher name: IANA id}, built once per context
_cipher_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_server_cert(certfile: str) -> Optional[str]:
    """The first certificate of a PEM file (the server's own, chain certificates
    follow it), as PEM; None when the file holds none."""
    with open(certfile, encoding="latin-1") as file:  # PEM is ASCII; never fail on a comment
        match = PEM_CERTIFICATE.search(file.read())
    if match is None:
        return None
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(match.group()))


def tls_extension(transport, server_cert: Optional[str]) -> Optional[dict]:
    """The `tls` extension of a connection, or None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    client_cert_chain = _client_cert_chain(ssl_object)
    peercert = transport.get_extra_info("peercert")
    return {
        "server_cert": server_cert,
        "client_cert_chain": client_cert_chain,
        "client_cert_name": _rfc4514_name(peercert["subject"]) if peercert else None,
        # a certificate that fails verification fails the handshake: the app never
        # sees a connection whose client certificate has an error
        "client_cert_error": None,
        "tls_version": int(ssl.TLSVersion[version.replace(".", "_")]) if version else None,
        "cipher_suite": _cipher_id(ssl_object.context, cipher[0]) if cipher else None,
    }


def _client_cert_chain(ssl_object) -> list:
    """The certificates the client sent, leaf first, as PEM: the whole chain where
    ssl exposes it (Python 3.13+), else the leaf."""
    get_unverified_chain = getattr(ssl_object, "get_unverified_chain", None)
    if get_unverified_chain is not None:
        ders = get_unverified_chain() or []
    else:
        leaf = ssl_object.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    return [ssl.DER_cert_to_PEM_cert(der) for der in ders]


def _cipher_id(context: ssl.SSLContext, name: str) -> Optional[int]:
    ids = _cipher_ids.get(context)
    if ids is None:
        ids = _cipher_ids[context] = {
            cipher["name"]: cipher["id"] & IANA_CIPHER_MASK for cipher in context.get_ciphers()
        }
    return ids.get(name)


def _rfc4514_name(subject) -> str:
    """getpeercert()'s subject (RDNs, most significant first) as RFC 4514 text,
    which lists them the other way round."""
    return ",".join(
        "+".join(
            f"{RFC4514_ATTRIBUTE_KEYS.get(key, key)}={_rfc4514_value(value)}" for key, value in rdn
        )
        for rdn in reversed(subject)
    )


def _rfc4514_value(value: str) -> str:
    escaped = RFC4514_SPECIAL.sub(r"\\\1", value)
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    return escaped
