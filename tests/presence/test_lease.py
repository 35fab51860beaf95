"""Presence under a reconnect storm (bench/chaos.py).

This node's lease is renewed on time whatever the upkeep beside it is doing:
putting thousands of devices again after a Redis restart once held the next
heartbeat past the lease, and the other nodes reaped a live node
(bench/results/2026-12-02-chaos.md). The first test drives a real Presence on
the in-memory backend with a manual clock (the backend's ``prune`` is held by
the test); the others use a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

from support import FakeSink

from chatd.bus.memory import MemoryBroker, MemoryBus
from chatd.clock import ManualClock
from chatd.presence import Device, MemoryPresence
from chatd.presence.redis import CHANGE_SHA, RedisPresence
from chatd.presence.service import Presence

LEASE_MS = 15_000


class SlowUpkeep(MemoryPresence):
    """The lease was gone at the first heartbeat; putting the devices back
    (``prune``) takes as long as the test says."""

    def __init__(self) -> None:
        super().__init__("n1")
        self.beats: list[int] = []
        self.release = asyncio.Event()
        self.prunes = 0

    async def heartbeat(self, now: int) -> bool:
        self.beats.append(now)
        return len(self.beats) == 1

    async def prune(self, live: set[str], now: int) -> Any:
        self.prunes += 1
        await self.release.wait()
        return await super().prune(live, now)


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_heartbeats_stay_on_time_while_the_devices_are_put_again() -> None:
    clock = ManualClock()
    backend = SlowUpkeep()
    presence = Presence(backend, MemoryBus(MemoryBroker()), clock, lambda slot, kind, d: b"", lease_ms=LEASE_MS)
    presence.opened(FakeSink(0), "alice")
    presence.start()
    try:
        await turn()
        assert len(backend.beats) == 1 and backend.prunes == 1  # the lease was gone: the devices go back
        for _ in range(6):  # 30 s with the put-back stuck: every heartbeat still goes out, 5 s apart
            clock.advance(LEASE_MS / 3000)
            await turn()
        assert [b - backend.beats[0] for b in backend.beats] == [0, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000]
        assert backend.prunes == 1  # one upkeep at a time
        backend.release.set()
        await turn()
        clock.advance(LEASE_MS / 3000)
        await turn()
        assert len(backend.beats) == 8
    finally:
        backend.release.set()
        await presence.stop()


async def test_the_redis_lease_is_renewed_while_every_pooled_connection_is_busy(redis_proc: Any) -> None:
    """A reconnect storm queues thousands of device puts on the presence pool;
    the heartbeat has a connection of its own and does not wait behind them."""
    p = RedisPresence.from_url(redis_proc.url, "n1", "t", LEASE_MS)
    try:
        busy = [asyncio.create_task(p.r.blpop(["t:never"], timeout=1.5)) for _ in range(16)]  # the whole pool
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in busy)
        # the put-back queued behind them waits; the heartbeat does not
        await asyncio.wait_for(p.heartbeat(1_763_900_000_000), 1.0)
        assert await p.lease_r.zscore("t:nodes:all", "n1") == 1_763_900_000_000
        await asyncio.gather(*busy)
    finally:
        await p.close()


async def test_changes_in_one_turn_share_one_pipeline(redis_proc: Any) -> None:
    """A reconnect storm: hundreds of devices put and dropped at once go to Redis
    in one round trip per 256 (one script per change), each still answered with
    its own version and state."""
    p = RedisPresence.from_url(redis_proc.url, "n1", "t", LEASE_MS)
    try:
        now = 1_763_900_000_000
        await p.heartbeat(now)
        dev = Device("n1", "online", False, now)
        await p.put("warm", "d", dev, now)  # the script is loaded

        async def calls(command: str) -> int:
            stats = await p.r.info("commandstats")
            return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

        pipelines, scripts = await calls("zrange"), await calls("evalsha")  # each pipeline reads the leases once
        puts = await asyncio.gather(*(p.put(f"u{i}", "d", dev, now) for i in range(300)))
        assert await calls("zrange") - pipelines == 2  # 256 + 44
        assert await calls("evalsha") - scripts == 300 and await calls("multi") == 0
        assert all(state.status == "online" for _, state in puts)
        assert {v for v, _ in puts} == {1}  # each user's first change
        both = await asyncio.gather(p.drop("u1", "d", now + 5), p.put("u1", "d2", dev, now + 5))
        assert [v for v, _ in both] == [2, 3]  # one user's changes in one pipeline, in order
        assert both[0][1].status == "offline" and both[1][1].status == "online"
        assert (await p.get_many(["u1"], now + 6))["u1"][0] == 3
    finally:
        await p.close()


async def test_a_server_that_lost_the_script_gets_it_again(redis_proc: Any) -> None:
    """Redis restarted (or, on a cluster, a replica promoted) has no script cache:
    the changes that met NOSCRIPT run once more with the script's text, once each,
    and the server has the script again for the next ones."""
    p = RedisPresence.from_url(redis_proc.url, "n1", "t", LEASE_MS)
    try:
        now = 1_763_900_000_000
        await p.heartbeat(now)
        dev = Device("n1", "online", False, now)
        assert (await p.put("alice", "d1", dev, now))[0] == 1
        await p.r.script_flush()
        got = await asyncio.gather(p.put("alice", "d2", dev, now), p.drop("alice", "d1", now + 1))
        assert [v for v, _ in got] == [2, 3] and got[1][1].status == "online"
        assert await p.r.script_exists(CHANGE_SHA) == [True]
    finally:
        await p.close()


async def test_a_change_that_fails_fails_alone_in_its_pipeline(redis_proc: Any) -> None:
    p = RedisPresence.from_url(redis_proc.url, "n1", "t", LEASE_MS)
    try:
        now = 1_763_900_000_000
        await p.heartbeat(now)
        await p.r.set("t:pd:broken", "not a hash")  # HSET on it fails with WRONGTYPE
        dev = Device("n1", "online", False, now)
        results = await asyncio.gather(
            p.put("ok1", "d", dev, now), p.put("broken", "d", dev, now), p.put("ok2", "d", dev, now),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException) and results[0][1].status == "online"
        assert isinstance(results[1], Exception) and "WRONGTYPE" in str(results[1])
        assert not isinstance(results[2], BaseException) and results[2][1].status == "online"
    finally:
        await p.close()
