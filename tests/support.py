"""Helpers shared by the server tests (imported by conftest and test modules)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chatd_protocol import CODECS, JSON, MSGPACK

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


class FakeSink:
    """A socket as the hub and presence see it (``chatd.core.hub.Sink``): keeps
    the frames it is given. ``slot`` 0 is msgpack, 1 JSON; ``on_write`` runs
    after each write (a slow consumer closing itself, say)."""

    def __init__(self, slot: int = 0, on_write: Callable[[bytes], None] | None = None) -> None:
        self.slot = slot
        self.writes: list[bytes] = []
        self.on_write = on_write
        self.signed_out: list[tuple[int, int]] = []

    def sign_out(self, before: int, kicked: int) -> None:
        self.signed_out.append((before, kicked))

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.on_write is not None:
            self.on_write(data)

    def pushes(self) -> list[dict[str, Any]]:
        """Every frame written, decoded with the sink's codec: ``{"push": ..., "d": ...}``."""
        codec = CODECS[(MSGPACK, JSON)[self.slot]]
        out = []
        for frame in self.writes:
            n = frame[1] & 0x7F
            payload = frame[{126: 4, 127: 10}.get(n, 2) :]
            out.append(codec.loads(payload.decode() if codec.text else payload))
        return out


def url(app: App | int) -> str:
    port = app if isinstance(app, int) else app.port
    return f"ws://127.0.0.1:{port}/"


def token(user: str, type: str = "owner", **kw: Any) -> str:
    """A development token. Without ``now`` it carries no ``iat``: a server on a
    FakeClock (years behind the system clock) would refuse an iat in its future."""
    if "now" not in kw:
        kw.setdefault("issued_at", False)
    return make_token(user, type, **kw)


def read_db(path: Path | str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """A fresh connection to the store (not the server's): what is committed. The
    SQL is SQLite's; on a ``postgresql://`` store it is translated as the
    repositories' is, and run on a connection of its own, in a thread (this is
    called from tests running on the event loop)."""
    if str(path).startswith("postgresql://"):
        import concurrent.futures

        import asyncpg

        from chatd.store.postgres.dialect import pg

        async def run() -> list[Any]:
            conn = await asyncpg.connect(str(path))
            try:
                return [tuple(r) for r in await conn.fetch(pg(sql).sql, *args)]
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, run()).result(timeout=30)
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def write_db(path: Path | str, sql: str, args: tuple[Any, ...] = ()) -> None:
    """Write to the store behind the server's back (a test setting up a state no op
    makes), committed; either engine, as read_db."""
    if str(path).startswith("postgresql://"):
        read_db(path, sql, args)  # autocommit
        return
    conn = sqlite3.connect(str(path))
    try:
        with conn:
            conn.execute(sql, args)
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


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    cond: Callable[[], Any],
    within: float = 5.0,
    every: float = 0.02,
    what: str | Callable[[], str] = "condition not met in time",
) -> Any:
    """Poll ``cond()`` (a plain or an async callable) every ``every`` s of real
    time until it returns something true, and return that; fail with ``what``
    after ``within`` s. For what another process or thread does: time-based
    behaviour of the server is driven with a FakeClock instead."""
    deadline = time.monotonic() + within
    while True:
        got = cond()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(what() if callable(what) else what)
        await asyncio.sleep(every)


async def healthz(port: int) -> bool:
    """Whether the server on ``port`` answers /healthz with 200 (False while it
    cannot be reached)."""
    try:
        return (await http_get(port, "/healthz"))[0] == 200
    except (OSError, IndexError, ValueError):  # not listening yet, or cut off mid-answer
        return False


# -- what tests do through a raw client (tests/wsclient.py) ---------------------


async def circle(
    owner: Any, *members: Any, name: str = "Circle", category: str = "interest", drain: bool = True
) -> str:
    """A circle created by ``owner`` and joined by ``members``; with ``drain``
    the pushes this caused are dropped from every one's queue."""
    conv = (await owner.call("circle.create", name=name, category=category))["conv"]
    for m in members:
        await m.call("circle.join", conv=conv)
    if drain:
        for c in (owner, *members):
            c.drain_pushes()
    return str(conv)


async def texts(c: Any, conv: str, n: int, wait: float = 5.0, frm: str | None = None) -> list[dict[str, Any]]:
    """The next ``n`` text messages of ``conv`` (from ``frm``) pushed to ``c``;
    other pushes are dropped."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        m = await c.next_msg(wait)
        if m["conv"] == conv and m["kind"] == "text" and frm in (None, m["from"]):
            out.append(m)
    return out


async def history_all(c: Any, conv: str, limit: int = 100) -> list[dict[str, Any]]:
    """Every message of ``conv``, oldest first, paging ``history`` backwards."""
    msgs: list[dict[str, Any]] = []
    before = None
    while True:
        args: dict[str, Any] = {"conv": conv, "limit": limit}
        if before:
            args["before"] = before
        page = await c.call("history", **args)
        msgs = page["messages"] + msgs
        if not page["more"]:
            return msgs
        before = page["messages"][0]["seq"]


async def sync_all(c: Any, since: int, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Catch up from ``since``, paging ``sync`` as the server says: every
    message in order, and the position to sync from next."""
    msgs: list[dict[str, Any]] = []
    pos, more = since, True
    while more:
        d = await (c.call("sync", since=pos) if limit is None else c.call("sync", since=pos, limit=limit))
        msgs += d["messages"]
        pos, more = d["pos"], d["more"]
    return msgs, pos


async def admin_call(
    app: App | int,
    op: str,
    body: Any = None,
    *,
    token_: str | None = None,
    raw: bytes | None = None,
    method: str = "POST",
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request to ``app``'s admin API: (HTTP status, decoded JSON body).
    ``body`` is sent as JSON (``raw``: these bytes instead); the bearer token
    is a backend's (``crm``, admin scope) unless ``token_`` or ``headers`` say
    otherwise (``token_=""``: no Authorization header)."""
    import aiohttp
    import orjson

    # the server's clock (a test's FakeClock); a port: a chatd process on the real clock
    issued = app.clock.wall_ms() / 1000 if isinstance(app, App) else time.time()
    port = app.admin_port if isinstance(app, App) else app
    tok = make_token("crm", "bot", scopes=["admin"], now=issued) if token_ is None else token_
    hdrs = {"Authorization": f"Bearer {tok}"} if tok else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{port}{path or '/v1/' + op}", data=data, headers=hdrs
        ) as resp,
    ):
        payload = await resp.read()
        return resp.status, orjson.loads(payload) if payload else None


# -- raw WebSocket bytes, for tests that must send what no client library would ----


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (masked, RFC 6455 §5.3), payload under 64 KiB."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return bytes(((0x80 if fin else 0) | opcode,)) + length + key + body


def ws_upgrade(subprotocol: str = "chatd.v1.json") -> bytes:
    """A WebSocket opening handshake request for ``/``."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    ).encode()
