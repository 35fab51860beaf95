"""The floor: bare ``websockets`` (asyncio API) + uvloop room broadcast.

Each connection belongs to one room, chosen by the URL path ``/room/N`` or, on
any other path, by the first text message it sends (that message is not
broadcast). Every later message is ``websockets.broadcast()`` as received to all
members of the sender's room, the sender included, as chatd does. No
compression, default limits, default keepalive pings.

``GET /healthz`` answers 200 on the same port.

    .venv/bin/python bench/floor_server.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import http
import signal

import uvloop
import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve

rooms: dict[str, set[ServerConnection]] = {}


def healthz(conn: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return conn.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else "/"
    if path.startswith("/room/"):
        room = path[6:]
    else:
        first = await ws.recv(decode=False)
        room = bytes(first).decode(errors="replace")
    members = rooms.setdefault(room, set())
    members.add(ws)
    try:
        while True:
            msg = await ws.recv(decode=False)
            websockets.broadcast(members, msg, text=True)
    except websockets.ConnectionClosed:
        pass
    finally:
        members.discard(ws)
        if not members:
            rooms.pop(room, None)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, process_request=healthz, backlog=4096):
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    a = ap.parse_args()
    uvloop.run(main(a.host, a.port))
