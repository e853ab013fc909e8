"""What an HTTP/2 connection takes of the frames the known attacks are made of (RFC
9113 10.5 leaves those limits to the server): the bounds, named, and `RateLimit`,
the token bucket that counts frames against them, and FloodLimits, a connection's
buckets (connection.HTTP2Connection holds one). Frame-library free, so that both
modes' connections count by the same rules (README "HTTP/2", the attack table): the
pure mode's H2Protocol spends them on `h2`'s events; the C mode's session
(_http2.ServerSession) sets nghttp2's own limiters from these bounds and spends the
connection's FloodLimits from its callbacks on what nghttp2 does not count.

Per connection; going over a rate ends it with GOAWAY ENHANCE_YOUR_CALM:

- STREAM_RESET_*: streams reset before their response was done, by the client
  (RST_STREAM: rapid reset, CVE-2023-44487) or by the server because of the client's
  frames (a stream error it provoked: MadeYouReset, CVE-2025-8671), and streams
  refused over MAX_CONCURRENT_STREAMS. nghttp2's stream_reset_rate_limit is set to
  these (its defaults too; it counts the client's RST_STREAMs, GOAWAY
  INTERNAL_ERROR); the C session spends `stream_resets` too, on the client's
  RST_STREAMs and on those nghttp2 sends for the client's frames (it counts these
  under its glitch limit only), so the count is this one in both modes.
- CONTROL_FRAME_*: PING and SETTINGS frames, which the server must answer (ACK):
  CVE-2019-9512, CVE-2019-9515. nghttp2 does not count them (the C session spends
  `control_frames`); its max_outbound_ack (ACKs queued and not sent, when the client
  does not read) is set to CONTROL_FRAME_BURST.
- EMPTY_FRAME_*: frames that cost work and carry nothing: DATA with no bytes and no
  END_STREAM, PRIORITY, unknown frame types (CVE-2019-9518, CVE-2019-9513). nghttp2:
  its glitch rate limit, set to these (from its 10000 at 330 a second; it counts
  malformed requests there too).

Per header block (CVE-2024-27316 and kin: CONTINUATION floods, zero-length ones too):
at most CONTINUATION_FRAMES_MAX CONTINUATION frames (nghttp2's max_continuations,
set to it) and --limit-request-head bytes before HPACK decoding (the decoded list is
bounded by the same setting: HPACK bombs); over either, GOAWAY ENHANCE_YOUR_CALM
(nghttp2 decodes a block whole to keep HPACK in step, keeping no field past the
list's bound, and answers the stream 431).

A connection whose running streams all wait for the client (its flow-control windows
shut, or its transport full because it does not read: CVE-2019-9511, CVE-2019-9517)
for --timeout-keep-alive is closed, as an idle one is; a stream holds at most the
app's one pending body message meanwhile. nghttp2 has no such timer: the connection
that drives it does (connection.HTTP2Connection._wait_for_client, both modes).
"""

from __future__ import annotations

# RFC 9113 7: the GOAWAY code a connection over a bound ends with.
ENHANCE_YOUR_CALM = 0xB
# The data of the server's PINGs (8 bytes), both modes': a graceful shutdown's, whose
# ack is the second GOAWAY's moment, and the keep-alive ones (connection.py tells
# their acks apart).
SERVER_PING = b"goaway\x00\x00"
STREAM_RESET_BURST = 1000
STREAM_RESET_RATE = 33  # a second
CONTROL_FRAME_BURST = 1000
CONTROL_FRAME_RATE = 100  # a second
EMPTY_FRAME_BURST = 1000
EMPTY_FRAME_RATE = 100  # a second
CONTINUATION_FRAMES_MAX = 8


class RateLimit:
    """A token bucket: `burst` events at once, then `rate` a second (nghttp2's
    nghttp2_ratelim). `spend(now)` is False once the bucket is empty: over the limit."""

    __slots__ = ("burst", "rate", "tokens", "stamp")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.stamp = now

    def spend(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# RFC 9113 6.5.2 / 6.9.1: the bounds of --h2-max-inbound-frame-size (the smallest is
# every peer's default) and of --h2-initial-window-size.
FRAME_SIZE_MIN = 16384
FRAME_SIZE_MAX = 2**24 - 1
WINDOW_SIZE_MAX = 2**31 - 1


class FloodLimits:
    """A connection's three buckets (the module doc)."""

    __slots__ = ("stream_resets", "control_frames", "empty_frames")

    def __init__(self, now: float) -> None:
        self.stream_resets = RateLimit(STREAM_RESET_BURST, STREAM_RESET_RATE, now)
        self.control_frames = RateLimit(CONTROL_FRAME_BURST, CONTROL_FRAME_RATE, now)
        self.empty_frames = RateLimit(EMPTY_FRAME_BURST, EMPTY_FRAME_RATE, now)
