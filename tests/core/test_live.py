"""Viewer counts summed over processes (``RedisCounter`` in chatd/core/live.py),
on one real redis-server and on a real Redis Cluster with sessions on every
master: each process sees the sum of every process's count. (Live sessions end to
end on two processes: tests/e2e/test_live_multinode.py.)"""

from __future__ import annotations

import pytest
from clusterkit import one_per_master
from clusterkit import redis_at as redis_at  # the fixtures: a test on one server and on the cluster,
from clusterkit import shared_cluster as shared_cluster  # the run's one cluster

from chatd.core.live import COUNT_TTL_MS, RedisCounter
from chatd.redisurl import client, is_cluster


async def test_two_processes_see_the_sum_of_their_counts(
    redis_at: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    url, prefix = redis_at
    if is_cluster(url):  # one session's hash on each master: the pipeline is split
        sessions = list(
            one_per_master(request.getfixturevalue("shared_cluster"), lambda s: f"{prefix}live:{s}", "l:").values()
        )
    else:
        sessions = ["l:1", "l:2", "l:3"]
    a, b = RedisCounter(url, "n1", prefix), RedisCounter(url, "n2", prefix)
    raw = client(url)
    try:
        assert await a.sum({s: 2 for s in sessions}) == {s: 2 for s in sessions}
        assert await b.sum({sessions[0]: 5, sessions[1]: 1}) == {sessions[0]: 7, sessions[1]: 3}
        assert await a.sum({s: 1 for s in sessions}) == {sessions[0]: 6, sessions[1]: 2, sessions[2]: 1}
        assert await a.sum({}) == {}
        # a dead process's share drops out with the hash's TTL
        assert 0 < await raw.pttl(f"{prefix}live:{sessions[0]}") <= COUNT_TTL_MS
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


def test_a_cluster_url_without_usable_seeds_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster seed"):
        RedisCounter("redis+cluster://127.0.0.1:x", "n1", "chatd")
