"""Helpers shared by the server tests (imported by conftest and test modules)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from chatd.app import App
from chatd.auth import make_token

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """Wall clock in ms that only moves when told (Config.clock)."""

    def __init__(self, start: int = 1_763_900_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def url(app: App | int) -> str:
    port = app if isinstance(app, int) else app.port
    return f"ws://127.0.0.1:{port}/"


def token(user: str, type: str = "owner", **kw: Any) -> str:
    return make_token(user, type, **kw)


def read_db(path: Path | str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """A fresh connection to the SQLite file (not the server's): what is on disk."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def stop_app(app: App) -> None:
    """Stop a server once (a test may stop it itself before teardown does)."""
    if getattr(app, "_stopped_by_test", False):
        return
    app._stopped_by_test = True  # type: ignore[attr-defined]
    await app.stop()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """A plain HTTP GET on loopback: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
