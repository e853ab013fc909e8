"""Everything that speaks on a connection: `http/` (the pure HTTP/1.1 protocol and the
rules both HTTP modes share), `websockets/` (the handshake, the WebSocket base class and
its two framing adapters), `asgi.py` (ASGI message checks), `proxy_protocol.py` (the
PROXY header reader), `tls.py` (the `tls` extension) and `utils.py` (a transport's
addresses)."""
