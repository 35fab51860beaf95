"""The bus on a real Redis Cluster (3 masters, 3 replicas): sharded pub/sub spread
over the masters, a master killed and its replica promoted, a slot moved to
another master, and seeds that are down. The contract every bus keeps is in
test_contract.py (it runs on a cluster too).

A test that kills a node or moves a slot has a cluster of its own (``nodes``, on
``redis_cluster``); the others use the run's shared one, on a bus prefix of their
own (``shared_nodes``). redis-cli runs in a thread: a failover waited for on the
event loop would stall the buses under test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from clusterkit import fresh_prefix
from clusterkit import shared_cluster as shared_cluster  # the fixture: the run's one cluster
from redisclusterproc import RedisClusterProc, command
from redisproc import RedisProc

from chatd import redisurl
from chatd.bus.redis import RedisBus
from chatd.edge.http import _bus_state

from .test_contract import Recorder

Nodes = Callable[..., Awaitable[tuple[RedisBus, Recorder]]]


@pytest.fixture
async def nodes(redis_cluster: RedisClusterProc) -> AsyncIterator[Nodes]:
    """``await nodes(url=None, shards=64)``: a started bus on the test's own cluster."""
    async for node in _nodes(redis_cluster, "chatd"):
        yield node


@pytest.fixture
async def shared_nodes(shared_cluster: RedisClusterProc) -> AsyncIterator[Nodes]:
    """Buses on the run's shared cluster, on a channel prefix of this test's own."""
    async for node in _nodes(shared_cluster, fresh_prefix()):
        yield node


async def _nodes(cluster: RedisClusterProc, prefix: str) -> AsyncIterator[Nodes]:
    made: list[RedisBus] = []

    async def node(url: str | None = None, shards: int = 64) -> tuple[RedisBus, Recorder]:
        bus = RedisBus(url or cluster.url, shards=shards, prefix=prefix)
        rec = Recorder()
        bus.attach(rec)
        await bus.start()
        made.append(bus)
        return bus, rec

    yield node
    for bus in made:
        await bus.stop()


def owner_port(cluster: RedisClusterProc, channel: str) -> int:
    """The master serving ``channel``'s slot, as the cluster itself says."""
    slot = int(command(cluster.master_ports()[0], "CLUSTER", "KEYSLOT", channel).strip())
    assert slot == redisurl.slot(channel)
    owners = sorted(cluster.slot_owners().items())
    return next(port for first, port in reversed(owners) if first <= slot)


def subscribers_on(port: int, channel: str) -> int:
    out = command(port, "PUBSUB", "SHARDNUMSUB", channel).split()
    return int(out[1]) if len(out) == 2 else 0


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Until ``check()`` (which may run redis-cli: in a thread) holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_channels_spread_over_the_masters_each_subscribed_where_its_slot_lives(
    shared_cluster: RedisClusterProc, shared_nodes: Nodes
) -> None:
    a, _ = await shared_nodes()
    b, rb = await shared_nodes()
    assert b.up and b.health() == {"links": 3, "links_up": 3}
    keys = [f"c:circle:{i}" for i in range(40)]
    for k in keys:
        b.interest(k, 1)
    for k in keys:
        await b.ready(k)
    channels = sorted({b.channel(k) for k in keys})
    ports = await asyncio.gather(*(asyncio.to_thread(owner_port, shared_cluster, c) for c in channels))
    owners = dict(zip(channels, ports, strict=True))
    assert len(set(owners.values())) == 3, "40 circles' channels all on fewer than 3 masters"
    for c, port in owners.items():
        assert await asyncio.to_thread(subscribers_on, port, c) == 1  # b's subscription, on the master that owns it
    for i, k in enumerate(keys):
        a.publish(k, str(i).encode())
    await rb.wait_for(lambda: len(rb.got) == len(keys))
    assert sorted(rb.got) == sorted((k, str(i).encode()) for i, k in enumerate(keys))


async def test_a_master_killed_fails_over_and_the_bus_resubscribes_on_its_replica(
    redis_cluster: RedisClusterProc, nodes: Nodes
) -> None:
    a, ra = await nodes()
    b, rb = await nodes()
    # two conversations whose channels live on different masters
    keys = [f"c:circle:{i}" for i in range(64)]
    by_owner: dict[int, str] = {}
    for k in keys:
        by_owner.setdefault(await asyncio.to_thread(owner_port, redis_cluster, b.channel(k)), k)
    victim = (await asyncio.to_thread(redis_cluster.master_ports))[0]
    doomed = by_owner[victim]
    healthy = next(k for p, k in by_owner.items() if p != victim)
    for k in (doomed, healthy):
        b.interest(k, 1)
        await b.ready(k)
    resets = rb.resets
    await asyncio.to_thread(redis_cluster.kill_master, victim, wait=False)
    await rb.wait_for(lambda: not b.up, within=5)
    assert b.health()["links_up"] == 2  # degraded: the other shards still deliver
    assert _bus_state(b) == "degraded"  # what /healthz says (still ready)
    a.publish(healthy, b"during the failover")
    await rb.wait_for(lambda: (healthy, b"during the failover") in rb.got)
    a.publish(doomed, b"lost with its master")  # nobody can take it: a resyncs b later
    await asyncio.to_thread(redis_cluster.wait_ok)
    await rb.wait_for(lambda: b.up and rb.resets > resets, within=10)
    await ra.wait_for(lambda: a.up, within=10)
    assert victim not in await asyncio.to_thread(redis_cluster.master_ports)
    assert b.health() == {"links": 3, "links_up": 3} and _bus_state(b) == "up"
    new_owner = await asyncio.to_thread(owner_port, redis_cluster, b.channel(doomed))
    assert new_owner != victim and await asyncio.to_thread(subscribers_on, new_owner, b.channel(doomed)) == 1
    a.publish(doomed, b"after the failover")
    await rb.wait_for(lambda: (doomed, b"after the failover") in rb.got)
    # what a published into the dead shard was counted lost, so b was told to resync
    assert a.stats()["dropped"] >= 1
    await rb.wait_for(lambda: b.remote_resets >= 1, within=5)
    assert (doomed, b"lost with its master") not in rb.got


async def test_a_slot_moved_to_another_master_is_followed(redis_cluster: RedisClusterProc, nodes: Nodes) -> None:
    """A resharding moves a slot: the old master unsubscribes its channels and
    answers MOVED to a publish; both nodes re-read the slot map, b subscribes on
    the new master, and what a published into the move is made good by a resync."""
    a, _ = await nodes()
    b, rb = await nodes()
    key = "c:circle:moving"
    channel = b.channel(key)
    b.interest(key, 1)
    await b.ready(key)
    a.publish(key, b"before")
    await rb.wait_for(lambda: (key, b"before") in rb.got)
    src = await asyncio.to_thread(owner_port, redis_cluster, channel)
    dst = next(p for p in await asyncio.to_thread(redis_cluster.master_ports) if p != src)
    dst_id = (await asyncio.to_thread(command, dst, "CLUSTER", "MYID")).strip()
    slot = str(redisurl.slot(channel))
    resets = rb.resets
    for port in (dst, src):  # an empty slot changes hands directly
        assert (await asyncio.to_thread(command, port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)).strip() == "OK"
    await _until(lambda: subscribers_on(dst, channel) == 1 and b.up and rb.resets > resets, within=10)
    for i in range(50):  # a publishes into the old master until it learns the move
        a.publish(key, f"after {i}".encode())
        await asyncio.sleep(0.05)
        if (key, f"after {i}".encode()) in rb.got:
            break
    assert any(p.startswith(b"after") for k, p in rb.got), "nothing arrived through the new master"
    assert a.stats()["map_changes"] >= 2 and b.stats()["map_changes"] >= 2
    if a.stats()["dropped"]:  # a's MOVED publishes were lost: b was told to resync
        await rb.wait_for(lambda: b.remote_resets >= 1, within=5)


async def test_one_seed_is_enough_and_a_dead_seed_is_skipped(redis_cluster: RedisClusterProc, nodes: Nodes) -> None:
    a, _ = await nodes(redis_cluster.seed_url(3))
    dead = redis_cluster.nodes[0]
    dead_port = dead.port
    if dead_port in await asyncio.to_thread(redis_cluster.master_ports):
        await asyncio.to_thread(redis_cluster.kill_master, dead_port)  # and its replica takes over
    else:
        dead.kill()
    url = f"redis+cluster://127.0.0.1:{dead_port},127.0.0.1:{redis_cluster.nodes[4].port}"
    b, rb = await nodes(url)
    assert b.up and b.health()["links"] == 3
    b.interest("c:k", 1)
    await b.ready("c:k")
    await _until_up(a)
    a.publish("c:k", b"via the live seed")
    await rb.wait_for(lambda: ("c:k", b"via the live seed") in rb.got)


async def _until_up(bus: RedisBus, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not bus.up:
        assert loop.time() < deadline, "the bus did not come back up"
        await asyncio.sleep(0.05)


async def test_no_reachable_seed_serves_without_fan_out_then_joins(shared_cluster: RedisClusterProc) -> None:
    ports = shared_cluster.ports
    prefix = fresh_prefix()  # the cluster is shared
    bus = RedisBus("redis+cluster://127.0.0.1:1", shards=16, prefix=prefix)  # nothing listens on port 1
    bus.attach(Recorder())
    await bus.start(wait=0.5)
    try:
        assert not bus.up and bus.health() == {"links": 0, "links_up": 0} and _bus_state(bus) == "down"
        bus.publish("c:k", b"nowhere")  # never raises
        assert bus.stats()["dropped"] == 1
    finally:
        await bus.stop()
    bus = RedisBus(f"redis+cluster://127.0.0.1:1,127.0.0.1:{ports[2]}", shards=16, prefix=prefix)
    bus.attach(Recorder())
    await bus.start()
    try:
        assert bus.up
    finally:
        await bus.stop()


async def test_a_cluster_url_to_a_server_without_cluster_mode_says_so_once(
    redis_proc: RedisProc, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisBus(f"redis+cluster://127.0.0.1:{redis_proc.port}", shards=16)
    bus.attach(Recorder())
    with caplog.at_level(logging.WARNING, logger="chatd.bus"):
        await bus.start(wait=1.0)
        try:
            assert not bus.up
            bus.publish("c:k", b"x")  # never raises
        finally:
            await bus.stop()
    said = [r.getMessage() for r in caplog.records if "slot map" in r.getMessage()]
    assert len(said) == 1 and "cluster support disabled" in said[0], said


async def test_the_publish_check_follows_its_slot_when_it_moves(redis_cluster: RedisClusterProc, nodes: Nodes) -> None:
    """A publishing connection checks its permission with a publish to a channel on
    its own master. When a resharding moves that channel's slot, the next check must
    use a channel still on the master: a stale one is refused (MOVED) on every
    reconnect, and that master's publisher would never connect again."""
    a, _ = await nodes()
    link = next(iter(a.links.values()))
    probe = a.probe_channel(link)
    assert a.route(probe) is link
    src = await asyncio.to_thread(owner_port, redis_cluster, probe)
    dst = next(p for p in await asyncio.to_thread(redis_cluster.master_ports) if p != src)
    dst_id = (await asyncio.to_thread(command, dst, "CLUSTER", "MYID")).strip()
    changes = a.map_changes
    slot = str(redisurl.slot(probe))
    for port in (dst, src):
        assert (await asyncio.to_thread(command, port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)).strip() == "OK"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while a.map_changes == changes:
        assert loop.time() < deadline, "the slot map was not read again"
        await asyncio.sleep(0.05)
    fresh = a.probe_channel(link)
    assert fresh != probe and a.route(fresh) is link


async def test_a_subscribe_answered_moved_resubscribes_that_slot_and_keeps_the_link(
    redis_cluster: RedisClusterProc, nodes: Nodes
) -> None:
    """Interest arrives between a resharding and the node's next map read: its
    SSUBSCRIBE goes to the old master, which answers MOVED. The node reads the map
    again and subscribes where the slot now lives; the old master's link keeps its
    connection (its other channels are not disturbed)."""
    a, _ = await nodes()
    b, rb = await nodes()
    key = "c:circle:late"
    channel = b.channel(key)
    src = await asyncio.to_thread(owner_port, redis_cluster, channel)
    dst = next(p for p in await asyncio.to_thread(redis_cluster.master_ports) if p != src)
    dst_id = (await asyncio.to_thread(command, dst, "CLUSTER", "MYID")).strip()
    old = b.route(channel)
    assert old is not None and old.sub is not None
    sub_before = old.sub
    slot = str(redisurl.slot(channel))
    for port in (dst, src):
        assert (await asyncio.to_thread(command, port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)).strip() == "OK"
    b.interest(key, 1)  # b's map still says src
    await asyncio.wait_for(b.ready(key), 10)
    assert b.moved_answers >= 1 or b.route(channel) is not old  # MOVED seen (or the 5 s map read came first)
    await _until(lambda: subscribers_on(dst, channel) == 1, within=10)
    await asyncio.sleep(1.0)  # a broken link is noticed within 0.5 s by its listener
    assert old.sub is sub_before and not old.broken and b.health()["links_up"] == 3  # not reconnected
    await _until_up(a)
    for i in range(50):  # a publishes until it learns the move too
        a.publish(key, f"late {i}".encode())
        await asyncio.sleep(0.05)
        if any(k == key for k, _ in rb.got):
            break
    assert any(k == key and p.startswith(b"late") for k, p in rb.got), "nothing arrived through the new master"
