"""One presence contract, two backends: in memory and in Redis, on one real
redis-server per test and on a real Redis Cluster (3 masters, 3 replicas) shared
by the run's tests, each with keys of its own. What the presence service
relies on (chatd/presence/base.py). Time is a parameter: every call takes ``now``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from clusterkit import redis_at as redis_at  # the fixtures: a test on one server and on the cluster,
from clusterkit import shared_cluster as shared_cluster  # the run's one cluster
from clusterkit import where

from chatd.presence import AWAY, OFFLINE, ONLINE, Device, MemoryPresence, PresenceBackend, State
from chatd.presence.redis import RedisPresence

T0 = 1_763_900_000_000
LEASE = 15_000

Make = Callable[[str], Awaitable[PresenceBackend]]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """``await make(node)``: a backend for ``node``; with Redis, all nodes share
    one server (or one cluster)."""
    made: list[PresenceBackend] = []
    at = None if request.param == "memory" else where(request, request.param)

    async def factory(node: str) -> PresenceBackend:
        backend: PresenceBackend
        if at is None:
            backend = MemoryPresence(node)
        else:
            backend = RedisPresence.from_url(at[0], node, at[1], LEASE)
            await backend.heartbeat(T0)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


def dev(node: str, status: str = ONLINE, duty: bool = False, since: int = T0) -> Device:
    return Device(node, status, duty, since)


async def test_one_device_online_then_offline_with_last_seen(make: Make) -> None:
    b = await make("n1")
    v1, s1 = await b.put("alice", "d1", dev("n1"), T0)
    assert s1 == State(ONLINE, None, False)
    v2, s2 = await b.drop("alice", "d1", T0 + 500)
    assert v2 > v1 and s2 == State(OFFLINE, T0 + 500, False)
    assert (await b.get_many(["alice"], T0 + 600))["alice"] == (v2, s2)


async def test_a_user_aggregates_every_device(make: Make) -> None:
    b = await make("n1")
    await b.put("alice", "phone", dev("n1", AWAY, since=T0 + 10), T0 + 10)
    v, s = await b.put("alice", "desk", dev("n1", ONLINE, duty=True), T0 + 20)
    assert s == State(ONLINE, None, True)
    v2, s2 = await b.drop("alice", "desk", T0 + 30)
    assert v2 > v and s2 == State(AWAY, T0 + 10, False)  # away since the remaining device went away


async def test_versions_strictly_increase_per_user(make: Make) -> None:
    b = await make("n1")
    versions = []
    for i in range(5):
        versions.append((await b.put("alice", f"d{i % 2}", dev("n1", AWAY if i % 2 else ONLINE), T0 + i))[0])
    assert versions == sorted(versions) and len(set(versions)) == 5
    got = await b.get_many(["alice", "nobody"], T0 + 10)
    assert got["alice"][0] == versions[-1]
    assert got["nobody"][1] == State(OFFLINE, None, False)


async def test_prune_removes_devices_no_socket_owns(make: Make) -> None:
    b = await make("n1")
    await b.put("alice", "kept", dev("n1"), T0)
    await b.put("bob", "stale", dev("n1"), T0)
    changes = await b.prune({"kept"}, T0 + 100)
    assert [(u, s.status) for u, _, s in changes] == [("bob", OFFLINE)]
    got = await b.get_many(["alice", "bob"], T0 + 200)
    assert got["alice"][1].status == ONLINE and got["bob"][1] == State(OFFLINE, T0 + 100, False)


async def test_leave_takes_this_nodes_devices_offline(make: Make) -> None:
    b = await make("n1")
    await b.put("alice", "d1", dev("n1"), T0)
    await b.put("alice", "d2", dev("n1", AWAY), T0)
    changes = await b.leave(T0 + 50)
    assert [(u, s) for u, _, s in changes] == [("alice", State(OFFLINE, T0 + 50, False))]
    assert (await b.get_many(["alice"], T0 + 60))["alice"][1].status == OFFLINE


async def test_a_live_node_is_not_reaped(make: Make) -> None:
    b = await make("n1")
    await b.put("alice", "d1", dev("n1"), T0)
    assert not await b.heartbeat(T0 + 1000)  # known: nothing to put again
    assert await b.reap(T0 + 1000) == []
    assert (await b.get_many(["alice"], T0 + 1000))["alice"][1].status == ONLINE


# -- several nodes: Redis only (a memory backend is one process by definition)


async def test_a_dead_nodes_users_go_offline_once_its_lease_runs_out(redis_at: tuple[str, str]) -> None:
    url, prefix = redis_at
    a = RedisPresence.from_url(url, "a", prefix, LEASE)
    b = RedisPresence.from_url(url, "b", prefix, LEASE)
    dead: list[str] = []
    b.on_node_dead = dead.append
    try:
        assert await a.heartbeat(T0) and await b.heartbeat(T0)  # first beats: unknown nodes
        await a.put("alice", "d1", dev("a"), T0)
        await b.put("alice", "d2", dev("b", AWAY), T0)
        await b.heartbeat(T0 + LEASE)  # a stops beating (killed)
        assert await b.reap(T0 + LEASE) == []  # within its lease: alive
        seen = (await b.get_many(["alice"], T0 + LEASE + 1))["alice"][1]
        assert seen.status == AWAY  # a's device no longer counts once its lease ran out
        changes = await b.reap(T0 + LEASE + 1)
        assert [(u, s.status) for u, _, s in changes] == [("alice", AWAY)] and dead == ["a"]
        assert await b.reap(T0 + LEASE + 2) == []  # reaped once
        assert await a.heartbeat(T0 + LEASE + 3)  # a comes back: it must put its devices again
    finally:
        await a.close()
        await b.close()
