"""Where `h2` lets a frame through that RFC 9113 (or limits.py) refuses, or answers
with another error code, put right in front of it: H2Protocol's connection reads its
frames through `CheckedFrameBuffer` and decodes header blocks with `CheckedDecoder`
(server_connection). Both lean on `h2`'s FrameBuffer internals (`_data`,
`_headers_buffer`, `_update_header_buffer`), the same since h2 3.0;
tests/test_http2_frames.py and test_http2_attacks.py see them work.
"""

from __future__ import annotations

import hpack
import hpack.exceptions
from h2.errors import ErrorCodes
from h2.exceptions import DenialOfServiceError, FrameTooLargeError, ProtocolError
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import ContinuationFrame, HeadersFrame

from fastserve.protocols.http2.limits import CONTINUATION_FRAMES_MAX

FRAME_HEADER_SIZE = 9
SETTINGS_TYPE = 0x4
ACK_FLAG = 0x1


class FrameSizeError(ProtocolError):
    """A frame whose length its type does not allow (RFC 9113 4.2)."""

    error_code = ErrorCodes.FRAME_SIZE_ERROR


class CompressionError(ProtocolError):
    """A header block HPACK cannot decode (RFC 9113 4.3)."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class CheckedFrameBuffer(FrameBuffer):
    """`h2`'s FrameBuffer, and:
    - a frame over SETTINGS_MAX_FRAME_SIZE refused at its header (h2 would buffer
      all of it first, up to 16 MiB);
    - the preface followed by a SETTINGS frame (RFC 9113 3.4), and a SETTINGS ACK
      with a payload a FRAME_SIZE_ERROR (6.5; h2 says PROTOCOL_ERROR);
    - a header block of at most `header_block_max` bytes in at most
      CONTINUATION_FRAMES_MAX CONTINUATION frames (limits.py)."""

    def __init__(self, header_block_max: int) -> None:
        super().__init__(server=True)
        self.header_block_max = header_block_max
        self.settings_seen = False
        self.block_size = 0  # of the header block being gathered

    def __next__(self):
        if len(self._data) >= FRAME_HEADER_SIZE:
            self._check_header()
        return super().__next__()

    def _check_header(self) -> None:
        length = int.from_bytes(self._data[:3], "big")
        frame_type, flags = self._data[3], self._data[4]
        if length > self.max_frame_size:
            raise FrameTooLargeError(f"frame of {length} bytes")
        is_settings = frame_type == SETTINGS_TYPE
        if not self.settings_seen:
            if not is_settings or flags & ACK_FLAG:
                raise ProtocolError("the preface is not followed by SETTINGS")
            self.settings_seen = True
        if is_settings and flags & ACK_FLAG and length:
            raise FrameSizeError("SETTINGS ACK with a payload")

    def _update_header_buffer(self, f):
        if isinstance(f, ContinuationFrame) and self._headers_buffer:
            self.block_size += len(f.data)
            if len(self._headers_buffer) > CONTINUATION_FRAMES_MAX:  # (HEADERS, CONTINUATION...)
                raise DenialOfServiceError("too many CONTINUATION frames")
        elif isinstance(f, HeadersFrame):
            self.block_size = len(f.data)
        if self.block_size > self.header_block_max:
            raise DenialOfServiceError("header block over the header list limit")
        return super()._update_header_buffer(f)


class CheckedDecoder(hpack.Decoder):
    """HPACK's decoder whose decoding errors are COMPRESSION_ERROR (RFC 9113 4.3; h2
    says PROTOCOL_ERROR); a header list over the limit stays h2's ENHANCE_YOUR_CALM."""

    def decode(self, data, raw=False):
        try:
            return super().decode(data, raw=raw)
        except hpack.exceptions.OversizedHeaderListError:
            raise
        except (hpack.exceptions.HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise CompressionError(f"header block: {exc}") from exc
