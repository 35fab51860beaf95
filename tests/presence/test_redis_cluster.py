"""Presence on a Redis Cluster, beyond the contract suite (which runs on one too):
a user's keys share a slot, one batch spans every master, a master that fails
over is routed around, and a cluster URL or prefix that cannot work is refused."""

from __future__ import annotations

import asyncio

import pytest
from clusterkit import fresh_prefix, one_per_master, owner, replicated
from clusterkit import shared_cluster as shared_cluster  # the fixture: the run's one cluster
from redisclusterproc import RedisClusterProc

from chatd.presence import AWAY, OFFLINE, ONLINE
from chatd.presence.redis import RedisPresence
from chatd.redisurl import client

from .test_contract import LEASE, T0, dev


async def test_one_batch_spans_every_master_and_both_nodes_agree_on_versions(
    shared_cluster: RedisClusterProc,
) -> None:
    prefix = fresh_prefix()
    users = one_per_master(shared_cluster, lambda u: f"{prefix}:pd:{{{u}}}")  # master port -> user
    a = RedisPresence.from_url(shared_cluster.url, "a", prefix, LEASE)
    b = RedisPresence.from_url(shared_cluster.url, "b", prefix, LEASE)
    raw = client(shared_cluster.url)
    try:
        await a.heartbeat(T0)
        await b.heartbeat(T0)
        # one turn of the loop: a device of every user on each node, and one dropped
        first = await asyncio.gather(
            *(a.put(u, "phone", dev("a"), T0) for u in users.values()),
            *(b.put(u, "desk", dev("b", AWAY), T0 + 1) for u in users.values()),
        )
        assert sorted(v for v, _ in first) == [1, 1, 1, 2, 2, 2]  # the two nodes' changes ordered per user
        assert all(s.status in (ONLINE, AWAY) for _, s in first)  # AWAY: b's change came first
        u0 = users[min(users)]
        version, state = await b.drop(u0, "desk", T0 + 2)
        assert version == 3 and state.status == ONLINE  # a's phone is still there
        seen_a = await a.get_many(list(users.values()), T0 + 3)
        seen_b = await b.get_many(list(users.values()), T0 + 3)
        assert seen_a == seen_b and seen_a[u0] == (3, state)
        # each user's keys on the master of its own slot, named with the hash tag
        for port, u in users.items():
            for kind in ("pd", "pv"):
                assert await asyncio.to_thread(owner, shared_cluster, f"{prefix}:{kind}:{{{u}}}") == port
            assert await raw.exists(f"{prefix}:pd:{{{u}}}") and not await raw.exists(f"{prefix}:pd:{u}")
        assert await raw.exists(f"{prefix}:pls:{{{u0}}}")
        # a node leaving takes its devices with it, on every master
        gone = await a.leave(T0 + 4)
        assert sorted(u for u, _, _ in gone) == sorted(users.values())
        assert (await b.get_many([u0], T0 + 5))[u0][1].status == OFFLINE
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


async def test_presence_keeps_working_after_a_master_fails_over(redis_cluster: RedisClusterProc) -> None:
    """The master holding the leases (and a user) is killed; its replica takes
    over. The next calls, on clients that still hold the old slot map, succeed:
    redis-py re-reads the map when a command fails to connect, and the promoted
    replica is given the change script it never saw."""
    users = one_per_master(redis_cluster, lambda u: f"t:pd:{{{u}}}")
    a = RedisPresence.from_url(redis_cluster.url, "a", "t", LEASE)
    b = RedisPresence.from_url(redis_cluster.url, "b", "t", LEASE)
    try:
        await a.heartbeat(T0)
        await b.heartbeat(T0)
        await asyncio.gather(*(a.put(u, "d1", dev("a"), T0) for u in users.values()))
        before = await b.get_many(list(users.values()), T0 + 1)
        # redis-cli in a thread: the clients' connections stay served meanwhile
        await asyncio.to_thread(replicated, redis_cluster)
        leases = await asyncio.to_thread(owner, redis_cluster, "t:nodes:all")
        await asyncio.to_thread(redis_cluster.kill_master, leases)
        victim = users[leases]

        await a.heartbeat(T0 + 5000)  # on the lease's new master
        await b.heartbeat(T0 + 5000)
        got = await asyncio.gather(*(a.put(u, "d2", dev("a", AWAY), T0 + 5001) for u in users.values()))
        # nothing lost, in order; a change whose connection the failover cut is
        # sent again, and may count its version up twice (redis-py closes every
        # node's connections when one fails, the healthy masters' too)
        assert all(v > before[u][0] for (v, _), u in zip(got, users.values(), strict=True))
        assert all(s.status == ONLINE for _, s in got)
        version, state = await a.drop(victim, "d1", T0 + 5002)
        assert version > got[list(users.values()).index(victim)][0] and state.status == AWAY
        seen = await b.get_many(list(users.values()), T0 + 5003)
        assert seen[victim] == (version, state)
        assert await b.reap(T0 + 5003) == []  # both leases renewed on the new master
    finally:
        await a.close()
        await b.close()


# -- what cannot work is refused where it is built


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",  # no seed
        "redis+cluster://127.0.0.1:0",  # port out of range
        "redis+cluster://127.0.0.1:70000",
        "redis+cluster://127.0.0.1:x",
        "redis+cluster://127.0.0.1:7000,",  # an empty seed
        "rediss+cluster://u:p@:7000",  # a seed without a host
    ],
)
def test_a_cluster_url_without_usable_seeds_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"cluster seed|--redis-url"):
        RedisPresence.from_url(url, "n1")


def test_a_prefix_with_a_brace_is_refused_on_a_cluster() -> None:
    """A brace in the prefix would move the hash tag off the user: a user's keys
    would no longer share a slot. On one server the prefix is only a name."""
    with pytest.raises(ValueError, match="brace"):
        RedisPresence.from_url("redis+cluster://127.0.0.1:7000", "n1", "chat{d}")
    RedisPresence.from_url("redis://127.0.0.1:7000/0", "n1", "chat{d}")  # built; never connects here


async def test_an_unreachable_cluster_fails_the_change_quickly() -> None:
    from support import free_port

    p = RedisPresence.from_url(f"redis+cluster://127.0.0.1:{free_port()}", "n1", "t", LEASE)
    try:
        with pytest.raises(Exception, match=r"[Cc]onnect"):
            await asyncio.wait_for(p.put("alice", "d1", dev("n1"), T0), 5.0)
        with pytest.raises(Exception, match=r"[Cc]onnect"):
            await asyncio.wait_for(p.heartbeat(T0), 5.0)
    finally:
        await p.close()
