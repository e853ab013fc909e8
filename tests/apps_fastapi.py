"""A FastAPI app for --root-path behind a proxy that strips the prefix (tests/test_nginx.py).

GET /items/        → JSON: request.url, url_for("item", item_id=7), the scope's
                     root_path / path / raw_path
GET /items         → FastAPI's (Starlette's) redirect to /items/
GET /items/{id}    → JSON {"item": id} (the route named "item")
GET /go            → RedirectResponse(request.url_for("item", item_id=7))
WS  /ws            → accept, send websocket.url and the scope's path, close
"""

from __future__ import annotations

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import RedirectResponse

app = FastAPI()


@app.get("/items/")
async def items(request: Request) -> dict:
    return {
        "url": str(request.url),
        "url_for": str(request.url_for("item", item_id=7)),
        "root_path": request.scope["root_path"],
        "path": request.scope["path"],
        "raw_path": request.scope["raw_path"].decode("latin-1"),
    }


@app.get("/items/{item_id}", name="item")
async def item(item_id: int) -> dict:
    return {"item": item_id}


@app.get("/go")
async def go(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("item", item_id=7))


@app.websocket("/ws")
async def websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"url": str(websocket.url), "path": websocket.scope["path"]})
    await websocket.close()
