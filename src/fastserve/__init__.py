"""fastserve: an ASGI server whose HTTP/1.1 hot path is C (llhttp + Cython)."""

from fastserve.config import Config
from fastserve.main import run
from fastserve.protocols.asgi import ClientDisconnected
from fastserve.server import Server

__version__ = "0.1.0"
__all__ = ["ClientDisconnected", "Config", "Server", "run", "__version__"]
