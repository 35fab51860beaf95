"""A user's send budget is shared by the processes on one Redis (issue 10, item
16): two processes do not let a user send twice the rate."""

from __future__ import annotations

import asyncio
from typing import Any

from redisproc import RedisProc

LIMITS = {"send_rate": 0.5, "send_burst": 10, "flood_strikes": 10_000}


async def attempt(clients: list[Any], conv: str, n: int) -> int:
    accepted = 0
    for i in range(n):
        reply = await clients[i % len(clients)].request("send", conv=conv, cid=f"m{i}", text="burst")
        accepted += getattr(reply, "code", None) != "rate_limited"
    return accepted


async def test_two_processes_share_one_budget(make_server: Any, clients: Any, redis_proc: RedisProc) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=16, **LIMITS)
    b = await make_server(redis_url=redis_proc.url, bus_shards=16, **LIMITS)
    on_a, on_b = await clients(a, "alice"), await clients(b, "alice")
    conv = (await on_a.call("dm.open", user="bob"))["conv"]
    accepted = await attempt([on_a, on_b], conv, 30)
    # the burst, plus at most one lease (1 token here) and as much on credit per process
    assert 10 <= accepted <= 14, accepted


async def test_separate_processes_without_redis_each_have_their_own(make_server: Any, clients: Any) -> None:
    a = await make_server(**LIMITS)
    b = await make_server(**LIMITS)  # the same store, no shared Redis: a budget each
    on_a, on_b = await clients(a, "alice"), await clients(b, "alice")
    conv = (await on_a.call("dm.open", user="bob"))["conv"]
    assert await attempt([on_a, on_b], conv, 30) == 20


async def test_without_redis_the_process_falls_back_to_its_own_budget(
    make_server: Any, clients: Any, redis_proc: RedisProc
) -> None:
    app = await make_server(redis_url=redis_proc.url, bus_shards=16, **LIMITS)
    c = await clients(app, "alice")
    conv = (await c.call("dm.open", user="bob"))["conv"]
    redis_proc.kill()
    await asyncio.sleep(0.2)
    accepted = await attempt([c], conv, 20)
    assert 1 <= accepted <= 12, accepted  # the local bucket, not every send, and not none
    assert app.limiter.errors >= 1  # type: ignore[attr-defined]
