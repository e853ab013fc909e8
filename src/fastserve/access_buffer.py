"""The buffered access log, as Nginx's `access_log ... buffer= flush=`: the default
access lines wait in memory and go to the access handler's stream in one write per
batch. logging.py decides when the set-up allows it (configure_access_log) and
formats each line; this module holds the lines and writes them. It imports nothing
of fastserve."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
from typing import Optional

ACCESS_BUFFER_SIZE = 64 * 1024  # characters: a batch this big is written at once
ACCESS_FLUSH_SECONDS = 1.0  # the longest a line waits in the buffer


class AccessLogBuffer:
    """The default access lines of the built-in config (one StreamHandler, or
    FileHandler, with the built-in AccessFormatter and line, no colours, no
    filters), each line after the `prefix` that handler's formatter puts before it,
    written to its stream in batches: when the buffer passes ACCESS_BUFFER_SIZE, at
    most ACCESS_FLUSH_SECONDS after a line came (one timer on the event loop, armed
    by the first line of a batch), and on every exit path (flush). Each line first
    checks that the set-up is still that one (nothing_else_sees_records): a filter,
    a handler or a level the app sets at any time sends that line, and every later
    one, through the logging module.

    One object per process (`access_buffer`); while its `handler` is None (stopped),
    nothing is buffered."""

    def __init__(self) -> None:
        self.logger: Optional[logging.Logger] = None
        self.handler: Optional[logging.StreamHandler] = None
        self.handlers: list[logging.Handler] = []
        self.formatter: Optional[logging.Formatter] = None
        self.prefix = ""
        self.lines: list[str] = []
        self.size = 0
        self.timer: Optional[asyncio.TimerHandle] = None

    def start(self, logger: logging.Logger, handler: logging.StreamHandler, prefix: str) -> None:
        """Buffer the lines of `logger`, whose one handler is `handler`, while the
        set-up stays as it is now (in_charge)."""
        self.stop()
        self.logger = logger
        self.handler = handler
        self.handlers = [handler]
        self.formatter = handler.formatter
        self.prefix = prefix
        if not self.in_charge():
            self.stop()

    def stop(self) -> None:
        """Write what the buffer holds; every later line goes through the logging
        module."""
        self.flush()
        self.logger = self.handler = self.formatter = None
        self.handlers = []

    def in_charge(self) -> bool:
        """Whether the access logger's set-up is still the one this buffer stands for:
        nothing that would see or drop a record (a filter, a level, another handler)."""
        logger = self.logger
        handler = self.handler
        return (
            self.nothing_else_sees_records()
            and handler.level <= logging.INFO
            and handler.formatter is self.formatter
            and logger.isEnabledFor(logging.INFO)
            and not logger.disabled
        )

    def nothing_else_sees_records(self) -> bool:
        """The part of in_charge that every line checks: a filter, a handler or a
        propagation to the root logger's handlers, added at any time, sees that line.
        (The protocols check the level per connection; the rest is checked on the
        timed flush.)"""
        logger = self.logger
        return (
            not logger.filters
            and logger.handlers == self.handlers
            and not self.handler.filters
            and not logger.propagate
        )

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line)
        if self.size >= ACCESS_BUFFER_SIZE:
            self.flush()
        elif self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a line from outside an event loop
                self.flush()
                return
            self.timer = loop.call_later(ACCESS_FLUSH_SECONDS, self.timed_flush)

    def timed_flush(self) -> None:
        self.timer = None
        if self.in_charge():
            self.flush()
        else:
            self.stop()

    def flush(self) -> None:
        """Write the buffered lines to the handler's stream, in one write: every exit
        path calls this (a server's end, a worker's os._exit, the interpreter's exit)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines:
            return
        handler = self.handler
        separator = handler.terminator + self.prefix
        text = self.prefix + separator.join(self.lines) + handler.terminator
        self.forget()
        with handler.lock:
            try:
                handler.stream.write(text)
                handler.stream.flush()
            except Exception:
                handler.handleError(logging.makeLogRecord({"name": self.logger.name, "msg": text}))

    def forget(self) -> None:
        """Drop the buffered lines: in a forked child, whose parent writes them."""
        self.lines = []
        self.size = 0
        self.timer = None


access_buffer = AccessLogBuffer()
atexit.register(access_buffer.flush)
# the parent writes the lines it buffered; the child starts empty (its timer, on the
# parent's loop, is not its own)
os.register_at_fork(after_in_child=access_buffer.forget)
