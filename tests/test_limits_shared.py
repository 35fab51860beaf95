"""The send budget shared through Redis (chatd/limits_shared.py), on one real
redis-server and on a real Redis Cluster: two limiters (two processes) give a
user one budget between them; a cluster URL that cannot work is refused, and one
that cannot be reached falls back to the per-process buckets. (Through real
servers end to end: tests/e2e/test_shared_limits.py.)"""

from __future__ import annotations

import pytest
from clusterkit import redis_at as redis_at  # the fixtures: a test on one server and on the cluster,
from clusterkit import shared_cluster as shared_cluster  # the run's one cluster
from support import eventually, free_port

from chatd.clock import ManualClock
from chatd.limits_shared import SharedSendLimiter

RATE, BURST = 0.5, 10  # one token every 2 s: none come back during a test


async def attempt(limiters: list[SharedSendLimiter], user: str, n: int) -> int:
    """``n`` sends of ``user``, round robin over the limiters, each after the
    previous one's lease fetch (if any) has come back; how many were let through."""
    accepted = 0
    for i in range(n):
        accepted += limiters[i % len(limiters)].wait(user) == 0.0
        await eventually(
            lambda: not any(lim.leases[user].fetching for lim in limiters if user in lim.leases), every=0.001
        )
    return accepted


async def test_two_limiters_share_one_budget(redis_at: tuple[str, str]) -> None:
    url, prefix = redis_at
    clock = ManualClock()
    limiters = [SharedSendLimiter(url, RATE, BURST, clock, prefix) for _ in range(2)]
    try:
        accepted = await attempt(limiters, "alice", 30)
        # the burst, plus at most one lease (1 token here) and as much on credit per limiter
        assert BURST <= accepted <= BURST + 2 * 2 * limiters[0].chunk, accepted
        assert await attempt(limiters, "bob", 4) == 4  # a budget per user
        assert all(lim.errors == 0 for lim in limiters)
    finally:
        for lim in limiters:
            await lim.close()


def test_a_cluster_url_without_usable_seeds_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster seed"):
        SharedSendLimiter("redis+cluster://127.0.0.1:0", RATE, BURST, ManualClock())


async def test_an_unreachable_cluster_leaves_the_per_process_budget() -> None:
    lim = SharedSendLimiter(f"redis+cluster://127.0.0.1:{free_port()}", RATE, BURST, ManualClock())
    try:
        accepted = await attempt([lim], "alice", 20)
        assert 1 <= accepted <= BURST + lim.chunk, accepted  # the local bucket, not every send, and not none
        assert lim.errors >= 1
    finally:
        await lim.close()
