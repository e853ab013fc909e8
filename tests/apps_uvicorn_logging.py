"""An app written for uvicorn's logging (tests/test_uvicorn_logging.py): at import it
configures logging itself with FASTSERVE_TEST_DICT_CONFIG=1 (uvicorn's loggers, and
`disable_existing_loggers` left at its default, true); then it adds the usual
`/health` filter to uvicorn's access logger (or to its handler, with
FASTSERVE_TEST_FILTER_ON=handler; with =runtime, on a request to `/add-filter`); it logs an INFO line through `uvicorn.error` for
each request to `/say?WORDS`."""

from __future__ import annotations

import logging
import logging.config
import os

FILTER_ON_ENV = "FASTSERVE_TEST_FILTER_ON"
DICT_CONFIG_ENV = "FASTSERVE_TEST_DICT_CONFIG"
APP_LOGGING = {
    "version": 1,
    "formatters": {
        "default": {"format": "APP %(levelname)s %(message)s"},
        "access": {"format": 'APP %(client_addr)s - "%(request_line)s" %(status_code)s'},
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": "default"},
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


class HealthFilter(logging.Filter):
    """Drops the access records of `/health`, as filters written for uvicorn do: by
    its record args (the third is the path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and len(record.args) >= 3 and record.args[2] == "/health")


if os.environ.get(DICT_CONFIG_ENV):
    logging.config.dictConfig(APP_LOGGING)

access_logger = logging.getLogger("uvicorn.access")
filter_on = os.environ.get(FILTER_ON_ENV)
if filter_on == "handler":
    for handler in access_logger.handlers:
        handler.addFilter(HealthFilter())
elif filter_on != "runtime":
    access_logger.addFilter(HealthFilter())

logger = logging.getLogger("uvicorn.error")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/say":
        logger.info("the app says %s", scope["query_string"].decode())
    elif scope["path"] == "/add-filter":
        access_logger.addFilter(HealthFilter())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
