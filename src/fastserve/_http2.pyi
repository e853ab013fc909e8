"""Type stub of the HTTP/2 session core (_http2.pyx): what Python code can see of it."""

from fastserve.protocols.http2.limits import FloodLimits

NGHTTP2_VERSION: str
MAX_CONCURRENT_STREAMS: int
STREAM_WINDOW: int
MAX_FRAME_SIZE: int
CONNECTION_WINDOW: int
MAX_HEADER_LIST_SIZE: int

# event kinds, the first item of each event tuple
REQUEST: int  # (REQUEST, stream_id, method, scheme, authority, path, headers, end_stream)
DATA: int  # (DATA, stream_id): body bytes wait for take_body
END: int  # (END, stream_id): the request body is complete
CLOSED: int  # (CLOSED, stream_id, error_code)
GOAWAY: int  # (GOAWAY, last_stream_id, error_code)
PING_ACK: int  # (PING_ACK, 0): the PING of ping() is acknowledged

class HTTP2Error(Exception): ...

class ServerSession:
    max_header_list_size: int
    flooded: bool  # a bound of `limits` was crossed: GOAWAY ENHANCE_YOUR_CALM queued
    def __init__(
        self,
        *,
        max_concurrent_streams: int = ...,
        stream_window: int = ...,
        connection_window: int = ...,
        max_frame_size: int = ...,
        max_header_list_size: int = ...,
        limits: FloodLimits | None = None,
    ) -> None: ...
    def receive(self, data: bytes | bytearray | memoryview) -> list[tuple]: ...
    def take_events(self) -> list[tuple]: ...
    def data_to_send(self) -> bytes: ...
    @property
    def want_close(self) -> bool: ...
    def take_body(self, stream_id: int, reopen: bool = True) -> bytes: ...
    def consume(self, stream_id: int, n: int) -> None: ...
    def submit_response(
        self,
        stream_id: int,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        end_stream: bool = True,
    ) -> bool: ...
    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool: ...
    def send_trailers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> bool: ...
    def submit_informational(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]]
    ) -> bool: ...
    def pending_body(self, stream_id: int) -> int: ...
    def reset_stream(self, stream_id: int, error_code: int = ...) -> None: ...
    def shutdown_notice(self) -> None: ...
    def ping(self) -> None: ...
    def goaway(self, error_code: int = ...) -> None: ...
