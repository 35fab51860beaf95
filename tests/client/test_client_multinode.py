"""chatd_client against two chatd nodes sharing a store and a real redis-server:
exactly once and in order across a Redis restart (the resync push), and the
presence and typing API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chatd_client import Client
from redisproc import RedisProc

from chatd.auth import make_token

from .test_client_e2e import Inbox, Server


@pytest.fixture
async def two(tmp_path: Path, redis_proc: RedisProc) -> AsyncIterator[tuple[Server, Server]]:
    a = Server(tmp_path, redis_url=redis_proc.url, sync="normal", send_rate=1e4, send_burst=10_000)
    b = Server(tmp_path, redis_url=redis_proc.url, sync="normal", send_rate=1e4, send_burst=10_000)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def client(server: Server, user: str, **kw: Any) -> Client:
    c = Client(server.url, make_token(user=user, type="owner"), backoff_min=0.05, **kw)
    await c.connect()
    return c


async def test_every_message_once_in_order_across_a_redis_restart(
    two: tuple[Server, Server], redis_proc: RedisProc
) -> None:
    a, b = two
    alice = await client(a, "alice")
    bob = await client(b, "bob")
    try:
        inbox = Inbox(bob)
        conv = (await alice.circle_create("ET5 Touring", "interest"))["conv"]
        await bob.circle_join(conv)
        sent = []
        for i in range(10):
            await alice.send(conv, f"m{i}")
            sent.append(f"m{i}")
        redis_proc.kill()
        await asyncio.sleep(0.3)
        for i in range(10, 20):  # acknowledged while Redis is down: not pushed to bob
            await alice.send(conv, f"m{i}")
            sent.append(f"m{i}")
        await asyncio.get_running_loop().run_in_executor(None, redis_proc.start)
        await inbox.wait_for(lambda: inbox.texts(conv) == sent, within=10)
        for i in range(20, 30):  # and live again
            await alice.send(conv, f"m{i}")
            sent.append(f"m{i}")
        await inbox.wait_for(lambda: inbox.texts(conv) == sent, within=10)
        await asyncio.sleep(0.2)
        assert inbox.texts(conv) == sent  # nothing twice
    finally:
        await alice.close()
        await bob.close()


async def test_presence_and_typing_through_the_client(two: tuple[Server, Server]) -> None:
    a, b = two
    bob = await client(a, "bob")
    events: list[Any] = []
    got = asyncio.Event()

    async def collect() -> None:
        async for event in bob.events():
            if event.type in ("presence", "typing", "msg"):
                events.append(event)
                got.set()

    task = asyncio.create_task(collect())
    try:
        states = await bob.presence_sub(["alice"])
        assert states == [{"user": "alice", "status": "offline", "on_duty": False}]
        alice = await client(b, "alice")
        conv = (await alice.dm_open("bob"))["conv"]

        async def seen(kind: str, **want: Any) -> None:
            async with asyncio.timeout(5):
                while not any(e.type == kind and all(e.d.get(k) == v for k, v in want.items()) for e in events):
                    got.clear()
                    await got.wait()

        # Typing is ephemeral: one sent before bob's node has learnt of the new
        # DM (a store read and a SUBSCRIBE away) is dropped, by design. A message
        # is durable and reaches bob either way; once it has, his node follows.
        await alice.send(conv, "hi")
        await seen("msg", conv=conv)
        await alice.presence_set(status="away")
        assert (await alice.typing(conv)) == {"pushed": True}
        await seen("presence", user="alice", status="online")
        await seen("presence", user="alice", status="away")
        await seen("typing", conv=conv, user="alice")
        await alice.close()
        await seen("presence", user="alice", status="offline")
    finally:
        task.cancel()
        await bob.close()
