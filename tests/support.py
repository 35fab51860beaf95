"""Helpers shared by the server tests (imported by conftest and test modules)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chatd.app import App
from chatd.auth import make_token
from chatd.clock import ManualClock

ROOT = Path(__file__).resolve().parent.parent


class FakeClock(ManualClock):
    """The server's clock (Config.clock), moving only when a test says so."""

    async def run_until(self, cond: Callable[[], Awaitable[bool]], step: float = 0.1, within: float = 5.0) -> None:
        """Move time ``step`` s at a time, letting the server run between steps (its
        scheduler and timers), until ``cond()`` holds; fail after ``within`` s of
        real time."""
        deadline = time.monotonic() + within
        while not await cond():
            assert time.monotonic() < deadline, "condition not met in time"
            self.advance(step)
            await asyncio.sleep(0.01)


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
