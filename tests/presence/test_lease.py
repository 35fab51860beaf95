"""This node's presence lease is renewed on time whatever the upkeep beside it
is doing: putting thousands of devices again after a Redis restart once held the
next heartbeat past the lease, and the other nodes reaped a live node
(bench/results/2026-12-02-chaos.md). A real Presence on the in-memory backend,
driven by a manual clock; the backend's ``prune`` is held by the test."""

from __future__ import annotations

import asyncio
from typing import Any

from support import FakeSink

from chatd.bus.memory import MemoryBroker, MemoryBus
from chatd.clock import ManualClock
from chatd.presence import MemoryPresence
from chatd.presence.redis import RedisPresence
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
