"""WebSocket protocols: the opening handshake as the HTTP protocols check it
(`handshake.py`), the ASGI side of a WebSocket connection once (`base.py`), and one
thin subclass per framing library (`websockets_impl.py`, `wsproto_impl.py`)."""
