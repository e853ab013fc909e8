"""A FastAPI app with an HTTP route and two WebSocket endpoints, served by fastserve.

Run it from the repository root (the CLI imports `examples.fastapi_ws` from the
current directory):

    pip install 'fastserve[standard]' fastapi      # standard brings websockets
    fastserve examples.fastapi_ws:app                  # C HTTP mode, port 8000
    fastserve examples.fastapi_ws:app --http python    # the pure-Python HTTP mode
    fastserve examples.fastapi_ws:app --ws wsproto     # framing by wsproto (pip install wsproto)

Then:

    curl http://127.0.0.1:8000/                        # {"service": ..., "rooms": {}}
    python -m websockets ws://127.0.0.1:8000/ws/echo   # every message comes back
    python -m websockets 'ws://127.0.0.1:8000/ws/chat/lobby?name=ann'

Endpoints:

    GET /                 the service name and every chat room with its member count
    WS  /ws/echo          echoes each message back, text as text and bytes as bytes
    WS  /ws/chat/{room}   a chat room; `?name=` names you (default "anonymous").
                          Everyone in the room, you too, gets JSON events:
                          {"type": "join", "name": ..., "members": n} when someone
                          comes in, {"type": "message", "name": ..., "text": ...} for
                          each text message sent, {"type": "leave", ...} when they go.

The rooms live in the process: with `--workers N` each worker has its own rooms,
so a real chat behind several workers needs a shared broker (Redis pub/sub, ...).
Tested by tests/test_examples.py, in both HTTP modes.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

SERVICE = "fastapi_ws example on fastserve"

app = FastAPI(title=SERVICE)


class ChatRooms:
    """The open chat WebSockets of this process, by room name."""

    def __init__(self) -> None:
        self.members: dict[str, dict[WebSocket, str]] = {}

    def counts(self) -> dict[str, int]:
        return {room: len(members) for room, members in self.members.items()}

    async def join(self, room: str, websocket: WebSocket, name: str) -> None:
        self.members.setdefault(room, {})[websocket] = name
        await self.broadcast(
            room, {"type": "join", "name": name, "members": len(self.members[room])}
        )

    async def leave(self, room: str, websocket: WebSocket) -> None:
        members = self.members[room]
        name = members.pop(websocket)
        if not members:
            del self.members[room]
        await self.broadcast(room, {"type": "leave", "name": name, "members": len(members)})

    async def broadcast(self, room: str, event: dict) -> None:
        for websocket in list(self.members.get(room, ())):
            try:
                await websocket.send_json(event)
            except WebSocketDisconnect:
                pass  # that member is leaving: its own endpoint removes it


rooms = ChatRooms()


@app.get("/")
async def index() -> dict:
    return {"service": SERVICE, "rooms": rooms.counts()}


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass  # the client went away while its echo was being sent


@app.websocket("/ws/chat/{room}")
async def chat(websocket: WebSocket, room: str, name: str = "anonymous") -> None:
    await websocket.accept()
    await rooms.join(room, websocket, name)
    try:
        while True:
            text = await websocket.receive_text()
            await rooms.broadcast(room, {"type": "message", "name": name, "text": text})
    except WebSocketDisconnect:
        pass
    finally:
        await rooms.leave(room, websocket)
