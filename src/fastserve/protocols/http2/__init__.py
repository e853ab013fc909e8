"""HTTP/2: the ASGI side of a stream (stream.py, for every frame layer), the pure
mode's connection over `h2` (h2_impl.py), and how a connection gets there
(negotiation.py: ALPN over TLS, the preface on a plain port)."""
