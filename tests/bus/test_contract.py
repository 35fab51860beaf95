"""One contract, three buses: the in-memory broker, Redis pub/sub (a real
redis-server per test) and Redis Cluster sharded pub/sub (a real 3+3 cluster: the
run's shared one, on a bus prefix of the test's own, or one of its own for the
tests that take the transport away: ``outage_harness``). What chatd's fan-out layer
relies on (chatd/bus/base.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from clusterkit import fresh_prefix
from clusterkit import shared_cluster as shared_cluster  # the fixture: the run's one cluster
from redisclusterproc import RedisClusterProc
from redisproc import RedisProc

from chatd.bus import Bus, MemoryBroker, MemoryBus
from chatd.bus.redis import RedisBus


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.resets = 0
        self.reconnected: list[bool] = []  # per reset: the bus reconnected (True) or another node lost envelopes
        self.event = asyncio.Event()

    def bus_message(self, key: str, payload: bytes) -> None:
        self.got.append((key, payload))
        self.event.set()

    def bus_reset(self, reconnected: bool = True) -> None:
        self.resets += 1
        self.reconnected.append(reconnected)
        self.event.set()

    async def wait_for(self, cond: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {self.got[-5:]} resets={self.resets}")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), min(left, 0.1))
            except TimeoutError:
                pass


class Harness:
    """Makes connected buses of one kind, and can take their transport away."""

    kind = ""
    prefix = "chatd"  # of the buses' channels (the default but on the shared cluster)

    async def node(self) -> tuple[Bus, Recorder]:
        raise NotImplementedError

    async def outage(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    async def node(self) -> tuple[Bus, Recorder]:
        bus = MemoryBus(self.broker, shards=16)
        rec = Recorder()
        bus.attach(rec)
        await bus.start()
        return bus, rec

    async def outage(self) -> None:
        self.broker.down()

    async def restore(self) -> None:
        self.broker.up()


class RedisHarness(Harness):
    kind = "redis"

    def __init__(self, proc: RedisProc) -> None:
        self.proc = proc

    async def node(self) -> tuple[Bus, Recorder]:
        bus = RedisBus(self.proc.url, shards=16)
        rec = Recorder()
        bus.attach(rec)
        await bus.start()
        assert bus.up
        return bus, rec

    async def outage(self) -> None:
        self.proc.kill()

    async def restore(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.proc.start)


class ClusterHarness(Harness):
    """A Redis Cluster of 3 masters and 3 replicas (sharded pub/sub). An outage
    kills every master (no replica can be elected without a majority of masters);
    the restore starts them again. A shared cluster (other tests use it after
    this one) has no outage, and its buses publish on a prefix of their own."""

    kind = "cluster"

    def __init__(self, cluster: RedisClusterProc, shared: bool) -> None:
        self.cluster = cluster
        self.shared = shared
        if shared:
            self.prefix = fresh_prefix()
        self.killed: list[RedisProc] = []

    async def node(self) -> tuple[Bus, Recorder]:
        bus = RedisBus(self.cluster.url, shards=16, prefix=self.prefix)
        rec = Recorder()
        bus.attach(rec)
        await bus.start()
        assert bus.up and bus.health() == {"links": 3, "links_up": 3}
        return bus, rec

    async def outage(self) -> None:
        assert not self.shared, "an outage of the shared cluster: the test takes outage_harness"
        self.killed = [self.cluster.node_on(p) for p in await asyncio.to_thread(self.cluster.master_ports)]
        for node in self.killed:
            node.kill()

    async def restore(self) -> None:
        for node in self.killed:
            await asyncio.get_running_loop().run_in_executor(None, node.start)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A harness whose transport stays up: on a cluster, the run's shared one."""
    async for h in _harness(request, own_cluster=False):
        yield h


@pytest.fixture(params=["memory", "redis", "cluster"])
async def outage_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A harness that may take its transport away: on a cluster, one of the test's own."""
    async for h in _harness(request, own_cluster=True):
        yield h


async def _harness(request: pytest.FixtureRequest, own_cluster: bool) -> AsyncIterator[Harness]:
    h: Harness
    if request.param == "memory":
        h = MemoryHarness()
    elif request.param == "redis":
        h = RedisHarness(request.getfixturevalue("redis_proc"))
    elif own_cluster:
        h = ClusterHarness(request.getfixturevalue("redis_cluster"), shared=False)
    else:
        h = ClusterHarness(request.getfixturevalue("shared_cluster"), shared=True)
    made: list[Bus] = []
    orig = h.node

    async def node() -> tuple[Bus, Recorder]:
        bus, rec = await orig()
        made.append(bus)
        return bus, rec

    h.node = node  # type: ignore[method-assign]
    yield h
    for bus in made:
        await bus.stop()


async def _settle(*buses: Bus, keys: tuple[str, ...] = ()) -> None:
    for bus in buses:
        for key in keys:
            await bus.ready(key)


async def test_interested_node_receives_in_publish_order(harness: Harness) -> None:
    a, _ = await harness.node()
    b, rb = await harness.node()
    b.interest("c:room", 1)
    await _settle(b, keys=("c:room",))
    for i in range(200):
        a.publish("c:room", i.to_bytes(2, "big"))
    await rb.wait_for(lambda: len(rb.got) >= 200)
    assert [int.from_bytes(p, "big") for _, p in rb.got] == list(range(200))
    assert {k for k, _ in rb.got} == {"c:room"}


async def test_no_self_delivery_and_no_delivery_without_interest(harness: Harness) -> None:
    a, ra = await harness.node()
    b, rb = await harness.node()
    a.interest("c:x", 1)
    b.interest("u:bob", 1)
    await _settle(a, keys=("c:x",))
    await _settle(b, keys=("u:bob",))
    a.publish("c:x", b"mine")  # a's own envelope: never back to a
    b.publish("c:x", b"from-b")
    a.publish("u:bob", b"for-bob")
    await ra.wait_for(lambda: ("c:x", b"from-b") in ra.got)
    await rb.wait_for(lambda: ("u:bob", b"for-bob") in rb.got)
    await asyncio.sleep(0.1)
    assert ra.got == [("c:x", b"from-b")]
    # b has no interest in c:x's channel (unless it shares a shard with u:bob: different family)
    assert rb.got == [("u:bob", b"for-bob")]


async def test_interest_is_reference_counted(harness: Harness) -> None:
    a, _ = await harness.node()
    b, rb = await harness.node()
    b.interest("c:k", 1)
    b.interest("c:k", 1)
    b.interest("c:k", -1)  # one holder left: still subscribed
    await _settle(b, keys=("c:k",))
    a.publish("c:k", b"1")
    await rb.wait_for(lambda: len(rb.got) == 1)
    assert b.channel("c:k") == a.channel("c:k")
    p = harness.prefix  # the default, "chatd", but on the shared cluster (a prefix of the test's own)
    assert b.channel("c:k").startswith(f"{p}:c:") and b.channel("u:k").startswith(f"{p}:u:")


async def test_channels_are_bounded_by_shards(harness: Harness) -> None:
    bus, _ = await harness.node()
    for i in range(5000):
        bus.interest(f"c:dm:u{i}:v{i}", 1)
    assert len({bus.channel(f"c:dm:u{i}:v{i}") for i in range(5000)}) <= 16
    await bus.ready("c:dm:u1:v1")
    assert bus.stats()["channels"] <= 16 + 2  # + the node's control and the all-nodes channel (Redis)


async def test_outage_loses_envelopes_then_resets_and_resumes(outage_harness: Harness) -> None:
    harness = outage_harness
    a, ra = await harness.node()
    b, rb = await harness.node()
    b.interest("c:room", 1)
    await _settle(b, keys=("c:room",))
    resets_before = rb.resets
    await harness.outage()
    t0 = time.monotonic()
    await rb.wait_for(lambda: not b.up, within=5)
    a.publish("c:room", b"lost")  # never raises, never blocks
    await harness.restore()
    await rb.wait_for(lambda: rb.resets > resets_before and b.up, within=6)
    await ra.wait_for(lambda: a.up, within=6)
    assert time.monotonic() - t0 < 6.0
    # resubscribed by itself: new envelopes flow again
    a.publish("c:room", b"after")
    await rb.wait_for(lambda: ("c:room", b"after") in rb.got)
    assert ("c:room", b"lost") not in rb.got


async def test_publish_while_down_never_raises(outage_harness: Harness) -> None:
    harness = outage_harness
    a, _ = await harness.node()
    await harness.outage()
    for _ in range(100):
        a.publish("c:z", b"x" * 100)
    await asyncio.sleep(0.05)
    await harness.restore()


async def test_reset_all_resets_every_node(harness: Harness) -> None:
    a, ra = await harness.node()
    _b, rb = await harness.node()
    await asyncio.sleep(1.1)  # past the coalescing window of the first connect's reset (Redis)
    resets_a, resets_b = ra.resets, rb.resets
    a.reset_all("test: a node died")
    await ra.wait_for(lambda: ra.resets > resets_a)
    await rb.wait_for(lambda: rb.resets > resets_b)
    await asyncio.sleep(0.2)
    assert (ra.resets, rb.resets) == (resets_a + 1, resets_b + 1)  # once each
    assert ra.reconnected[-1] is False and rb.reconnected[-1] is False  # the bus itself kept its state
