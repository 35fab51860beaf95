"""The lower bound of a Python server: room broadcast on a bare uvloop ``asyncio.Protocol``.

No WebSocket library: the handshake is answered by hand, client frames are unmasked by
hand (one frame per read is assumed, as the load generator sends), and each message is
framed once and handed to every member's transport with one ``transport.write``, which is
what any Python server on uvloop has to do at least once per delivery. It has no limits,
no keepalive, no close handshake, no fragmentation: a measurement, not a server.

Rooms as in floor_server.py: ``/room/N`` in the request path. ``GET /healthz`` answers 200.

    .venv/bin/python bench/raw_floor.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
rooms: dict[bytes, list[asyncio.Transport]] = {}


def server_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def unmask(buf: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame."""
    op = buf[0] & 0x0F
    n = buf[1] & 0x7F
    i = 2
    if n == 126:
        n, i = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        n, i = int.from_bytes(buf[2:10], "big"), 10
    mask = buf[i : i + 4]
    data = buf[i + 4 : i + 4 + n]
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return op, (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


class Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.room: list[asyncio.Transport] | None = None
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        t = self.transport
        assert t is not None
        room = self.room
        if room is not None:
            op, payload = unmask(data)
            if op == 0x8:
                t.close()
                return
            if op == 0x1:
                frame = server_frame(payload)
                for member in room:
                    member.write(frame)
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        lines = self.head.split(b"\r\n")
        path = lines[0].split(b" ")[1]
        if path == b"/healthz":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            t.close()
            return
        key = next(ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        t.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.room = rooms.setdefault(path.rsplit(b"/", 1)[-1], [])
        self.room.append(t)
        self.head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.room is not None and self.transport in self.room:
            self.room.remove(self.transport)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_server(Raw, host, port, backlog=4096)
    async with server:
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    a = ap.parse_args()
    uvloop.run(main(a.host, a.port))
