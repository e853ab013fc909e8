"""A Starlette app under fastserve, driven with httpx: lifespan state, streaming,
background tasks, request.is_disconnected(), anyio task groups."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.timeout(30)

STARLETTE_APP = "tests.apps_starlette:app"


@pytest.fixture
def app_server(servers, mode):
    return servers.get(STARLETTE_APP, mode)


@pytest.fixture
def http(app_server):
    with httpx.Client(base_url=app_server.url(""), timeout=10) as client:
        yield client


def test_index_with_lifespan_state(http):
    response = http.get("/")
    assert response.status_code == 200
    assert response.json() == {"greeting": "hello from lifespan", "path": "/", "scheme": "http"}
    assert response.headers["server"] == "fastserve"


def test_not_found(http):
    assert http.get("/missing").status_code == 404


def test_streaming_response(http):
    with http.stream("GET", "/stream") as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = list(response.iter_text())
    assert "".join(chunks) == "".join(f"chunk {i}\n" for i in range(5))


def test_post_json(http):
    response = http.post("/json", json={"a": [1, 2, 3], "b": "x" * 10000})
    assert response.status_code == 200
    assert response.json()["received"] == {"a": [1, 2, 3], "b": "x" * 10000}


def test_background_task_runs_after_response(app_server, http, token):
    response = http.get("/background", params={"token": token})
    assert response.status_code == 200
    assert response.text == "scheduled"
    events = app_server.wait_event(token, bool, path_prefix="/events")
    assert events == ["background ran"]


def test_is_disconnected(app_server, http, token):
    with app_server.client() as raw:
        raw.send(b"GET /disconnect?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        assert app_server.wait_event(token, bool, path_prefix="/events") == ["waiting"]
    events = app_server.wait_event(token, lambda events: len(events) > 1, path_prefix="/events")
    assert events == ["waiting", "disconnected"]


def test_anyio_task_group(http):
    response = http.get("/taskgroup")
    assert response.status_code == 200
    # each task waited for the other two to start: they ran concurrently
    assert response.json() == {"results": {"task0": "done", "task1": "done", "task2": "done"}}


def test_concurrent_clients(app_server):
    import concurrent.futures

    def fetch(i):
        with httpx.Client(base_url=app_server.url(""), timeout=10) as client:
            return [client.get("/taskgroup").status_code for _ in range(2)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(8)))
    assert results == [[200, 200]] * 8


def test_keep_alive_reuse(http):
    for _ in range(20):
        assert http.get("/").status_code == 200
