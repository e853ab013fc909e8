"""--log-format json: every line fastserve writes is one JSON object (start-up, access,
an app exception with its traceback, shutdown), single-process, with --workers, with
--reload, and under Gunicorn."""

from __future__ import annotations

import json
import re

import pytest

from process_util import ServerProcess, get, start_gunicorn

pytestmark = pytest.mark.timeout(60)

APP = "tests.apps:app"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ACCESS_TYPES = {
    "client": str,
    "method": str,
    "path": str,
    "query": str,
    "http_version": str,
    "status": int,
    "bytes": int,
    "duration_ms": (int, float),
    "user_agent": str,
    "referer": (str, type(None)),
    "pid": int,
}


def records(text: str) -> list[dict]:
    """Every non-empty line of `text` as JSON (a line that does not parse fails)."""
    parsed = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert RFC3339_UTC.fullmatch(record["time"]), record
            assert {"level", "logger", "message"} <= record.keys(), record
            parsed.append(record)
    return parsed


def exercise(server: ServerProcess, token: str) -> None:
    """One answered request and one whose app raises, each seen in the log."""
    response = get(server.url(f"/_/hello?token={token}"), headers={"user-agent": token})
    assert response.status_code == 200
    assert get(server.url(f"/_/raise-before?token={token}")).status_code == 500
    server.wait_for_log(rf'"query": "token={token}"')
    server.wait_for_log(rf"boom-before-start-{token}")


def check(all_records: list, token: str, pids: set) -> None:
    [access, failed] = [r for r in all_records if r.get("query") == f"token={token}"]
    assert (failed["path"], failed["status"]) == ("/_/raise-before", 500)
    assert access["logger"] == "fastserve.access"
    for name, kind in ACCESS_TYPES.items():
        assert isinstance(access[name], kind), (name, access)
    assert access["path"] == "/_/hello"
    assert (access["method"], access["status"], access["bytes"]) == ("GET", 200, 13)
    assert access["user_agent"] == token
    assert access["http_version"] == "1.1"
    assert access["duration_ms"] >= 0
    assert access["pid"] in pids
    assert access["message"].endswith(f'"GET /_/hello?token={token} HTTP/1.1" 200')
    [failure] = [
        r for r in all_records if r.get("exc_info", "").endswith(f"boom-before-start-{token}")
    ]
    assert failure["level"] == "ERROR"
    assert failure["exc_info"].startswith("Traceback (most recent call last):")
    assert f"RuntimeError: boom-before-start-{token}" in failure["exc_info"]
    messages = [r["message"] for r in all_records]
    for expected in ("Started server process", "Application startup complete", "Finished"):
        assert any(expected in message for message in messages), (expected, messages)


def test_single_process(start_server, mode, token):
    server = start_server(APP, mode, "--log-format", "json")
    exercise(server, token)
    assert server.stop() == 0
    check(records(server.output()), token, {server.pid})


def test_workers(spawn, token):
    server = spawn(APP, "--port", "0", "--workers", "2", "--log-format", "json")
    server.wait_for_log("Application startup complete", count=2)
    workers = server.workers()
    exercise(server, token)
    assert server.stop() == 0
    all_records = records(server.output())
    check(all_records, token, workers)
    assert sum("Application startup complete" in r["message"] for r in all_records) == 2


def test_reload(spawn, tmp_path, token):
    pytest.importorskip("watchfiles")
    watched = tmp_path / "watched.py"
    watched.write_text("X = 1\n")
    server = spawn(
        APP, "--port", "0", "--log-format", "json", "--reload",
        "--reload-dir", str(tmp_path), "--reload-delay", "0.1",
    )  # fmt: skip
    exercise(server, token)
    # a restart: the new server process logs JSON as well
    watched.write_text("X = 2\n")
    server.wait_for_log("Application startup complete", count=2)
    exercise(server, token + "-after")
    assert server.stop() == 0
    all_records = records(server.output())
    assert any("Reloading" in r["message"] for r in all_records)
    pids = {r["pid"] for r in all_records if "pid" in r}
    assert len(pids) == 2  # one server process before the change, one after
    check(all_records, token, pids)
    check(all_records, token + "-after", pids)


def test_gunicorn(token):
    pytest.importorskip("gunicorn")

    server = start_gunicorn(APP, "--access-logfile", "-", env={"FASTSERVE_LOG_FORMAT": "json"})
    try:
        exercise(server, token)
        assert server.stop() == 0
    finally:
        server.cleanup()
    # gunicorn's own lines keep its format; fastserve's are JSON
    ours = [line for line in server.output().splitlines() if line.startswith("{")]
    theirs = [line for line in server.output().splitlines() if not line.startswith("{")]
    assert any("Booting worker" in line for line in theirs)
    all_records = records("\n".join(ours))
    assert all(r["logger"].startswith("fastserve") for r in all_records)
    [access] = [
        r for r in all_records if (r.get("query"), r.get("path")) == (f"token={token}", "/_/hello")
    ]
    # the message is gunicorn's default access format; the fields are the same
    assert f'"GET /_/hello?token={token} HTTP/1.1" 200 13' in access["message"]
    assert (access["status"], access["bytes"]) == (200, 13)
    [failure] = [r for r in all_records if token in r.get("exc_info", "")]
    assert "Traceback" in failure["exc_info"]


def test_log_config_and_access_log_format(spawn, tmp_path, token):
    """--log-format json also reshapes the handlers of a --log-config file; with
    --access-log-format the message is that line, the fields the same."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "PLAIN %(message)s"}},
        "handlers": {
            "out": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {"fastserve": {"handlers": ["out"], "level": "INFO", "propagate": False}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    server = spawn(
        APP, "--port", "0", "--log-config", str(path), "--log-format", "json",
        "--access-log-format", "%(m)s %(U)s %(s)s %(B)s",
    )  # fmt: skip
    exercise(server, token)
    assert server.stop() == 0
    assert "PLAIN" not in server.output()
    all_records = records(server.output())
    [access] = [
        r for r in all_records if (r.get("query"), r.get("path")) == (f"token={token}", "/_/hello")
    ]
    assert access["message"] == "GET /_/hello 200 13"
    assert (access["status"], access["bytes"], access["user_agent"]) == (200, 13, token)


def test_log_config_formatter_reads_the_access_fields(spawn, tmp_path, token):
    """In text mode too, a --log-config formatter of the user's can name the access
    record's structured fields (the built-in line alone goes without them)."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(message)s"},
            "fields": {"format": "FIELDS %(method)s %(status)s %(bytes)s %(query)s"},
        },
        "handlers": {
            "err": {"class": "logging.StreamHandler", "formatter": "plain"},
            "out": {
                "class": "logging.StreamHandler",
                "formatter": "fields",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "fastserve": {"handlers": ["err"], "level": "INFO", "propagate": False},
            "fastserve.access": {"handlers": ["out"], "level": "INFO", "propagate": False},
        },
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    server = spawn(APP, "--port", "0", "--log-config", str(path))
    assert get(server.url(f"/_/hello?token={token}")).status_code == 200
    server.wait_for_log(f"FIELDS GET 200 13 token={token}")
    assert server.stop() == 0
