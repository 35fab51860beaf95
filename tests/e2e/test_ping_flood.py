"""A peer that sends WebSocket pings and never reads (issue 10, defect 1): the
pongs websockets answers with count against the socket's outbound cap like any
frame chatd writes, so the server's buffer stays bounded and the socket is cut
off, before or after auth."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
import pytest
from support import masked, token, ws_upgrade

CAP = 64 * 1024
FLOOD_S = 10.0  # s of pings at full speed: hundreds of MB of pongs if the server kept them


def open_raw(port: int) -> socket.socket:
    """A WebSocket that reads nothing after the handshake: a 4 KiB receive buffer
    fills at once, so what the server writes piles up on the server's side."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(ws_upgrade())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def flood(sock: socket.socket, result: dict[str, Any]) -> None:
    ping = masked(0x9, b"p" * 125) * 100
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < FLOOD_S:
            sock.sendall(ping)
            sent += 100
    except OSError as exc:  # the server cut us off
        result["error"] = exc
    result["sent"] = sent
    result["seconds"] = time.monotonic() - started


def server_buffers(app: Any) -> list[int]:
    return [ws.transport.get_write_buffer_size() for ws in app.server.server.connections]


@pytest.mark.parametrize("authenticated", [False, True])
async def test_pings_from_a_socket_that_never_reads_cannot_grow_the_server(
    make_server: Any, authenticated: bool
) -> None:
    app = await make_server(out_buffer=CAP)
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, open_raw, app.port)
    try:
        if authenticated:
            auth = orjson.dumps({"id": 1, "op": "auth", "d": {"token": token("pinger")}})
            await loop.run_in_executor(None, sock.sendall, masked(0x1, auth))
            for _ in range(100):  # the auth reply waits unread in our buffer
                if "pinger" in app.hub.users:
                    break
                await asyncio.sleep(0.02)
            assert "pinger" in app.hub.users
        for ws in app.server.server.connections:  # small kernel buffers: the flood reaches user space soon
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        result: dict[str, Any] = {}
        thread = threading.Thread(target=flood, args=(sock, result), daemon=True)
        thread.start()
        peak = 0
        while thread.is_alive():
            peak = max([peak, *server_buffers(app)])
            await asyncio.sleep(0.005)
        assert "error" in result, f"{result['sent']} pings in {FLOOD_S} s and the socket still served"
        assert result["seconds"] < 5  # cut off within the close handshake's 2 s and then some
        # over the cap by at most the pongs of one read's worth of pings (the check
        # runs per read of the socket); without the cap it grows by megabytes a second
        assert peak <= CAP + 256 * 1024, f"server buffer reached {peak} bytes (cap {CAP})"
        for _ in range(100):  # and the server let go of the socket
            if not app.server.server.connections:
                break
            await asyncio.sleep(0.05)
        assert not app.server.server.connections
    finally:
        sock.close()
