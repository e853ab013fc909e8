"""The ASGI lifespan protocol: startup/shutdown events and the shared `state`."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastserve.logging import error_logger as logger


class LifespanOff:
    def __init__(self, app: Callable, mode: str) -> None:
        self.should_exit = False
        self.state: dict[str, Any] = {}

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class LifespanOn:
    """Runs the app's lifespan coroutine beside the server.

    With `--lifespan auto` an app that raises before answering startup is taken to
    not support lifespan, and the server goes on; with `on` that is a startup failure.
    """

    def __init__(self, app: Callable, mode: str) -> None:
        self.app = app
        self.required = mode == "on"
        self.should_exit = False
        self.state: dict[str, Any] = {}
        self.startup_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self.receive_queue: asyncio.Queue = asyncio.Queue()
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occurred = False

    async def startup(self) -> None:
        logger.info("Waiting for application startup.")
        loop = asyncio.get_running_loop()
        self.main_task = loop.create_task(self.main())
        await self.receive_queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()
        if self.startup_failed or (self.error_occurred and self.required):
            logger.error("Application startup failed. Exiting.")
            self.should_exit = True
        else:
            logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        if self.error_occurred:
            return
        logger.info("Waiting for application shutdown.")
        await self.receive_queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_event.wait()
        if self.shutdown_failed or (self.error_occurred and self.required):
            logger.error("Application shutdown failed. Exiting.")
            self.should_exit = True
        else:
            logger.info("Application shutdown complete.")

    async def main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if not self.required:
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    async def send(self, message: dict) -> None:
        message_type = message.get("type")
        if message_type == "lifespan.startup.complete" and not self.startup_event.is_set():
            self.startup_event.set()
        elif message_type == "lifespan.startup.failed" and not self.startup_event.is_set():
            self.startup_failed = True
            self.startup_event.set()
            if message.get("message"):
                logger.error(message["message"])
        elif message_type == "lifespan.shutdown.complete" and self.startup_event.is_set():
            self.shutdown_event.set()
        elif message_type == "lifespan.shutdown.failed" and self.startup_event.is_set():
            self.shutdown_failed = True
            self.shutdown_event.set()
            if message.get("message"):
                logger.error(message["message"])
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {message_type!r} at this point")

    async def receive(self) -> dict:
        return await self.receive_queue.get()
