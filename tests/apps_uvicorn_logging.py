"""An app written for uvicorn's logging (tests/test_uvicorn_logging.py): at import it
adds the usual `/health` filter to uvicorn's access logger (or to its handler, with
FASTSERVE_TEST_FILTER_ON=handler), and it logs an INFO line through `uvicorn.error`
for each request to `/say?WORDS`."""

from __future__ import annotations

import logging
import os

FILTER_ON_ENV = "FASTSERVE_TEST_FILTER_ON"


class HealthFilter(logging.Filter):
    """Drops the access records of `/health`, reading uvicorn's record args (the
    third is the path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, tuple) and record.args[2] == "/health")


access_logger = logging.getLogger("uvicorn.access")
if os.environ.get(FILTER_ON_ENV) == "handler":
    for handler in access_logger.handlers:
        handler.addFilter(HealthFilter())
else:
    access_logger.addFilter(HealthFilter())

logger = logging.getLogger("uvicorn.error")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/say":
        logger.info("the app says %s", scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
