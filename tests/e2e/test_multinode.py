"""Two chatd nodes, one service: two servers (in this process) on one SQLite file,
fanning out through a real redis-server. Real processes: test_workers.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redisproc import RedisProc
from support import circle, eventually, http_get, texts
from wsclient import WsClient

from chatd.app import App

Nodes = tuple[App, App]


@pytest.fixture
async def nodes(make_server: Any, redis_proc: RedisProc) -> Nodes:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64, send_rate=1e4, send_burst=10_000)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64, send_rate=1e4, send_burst=10_000)
    assert a.bus.up and b.bus.up
    return a, b


async def test_message_sent_on_one_node_reaches_members_on_the_other(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    carol = await clients(b, "carol", encoding="json")
    conv = await circle(alice, bob, carol, drain=False)
    ack = await alice.call("send", conv=conv, cid="m1", text="charging at the new swap station?")
    for c in (bob, carol):
        m = (await texts(c, conv, 1))[0]
        assert (m["seq"], m["text"], m["from"]) == (ack["seq"], "charging at the new swap station?", "alice")
    ack2 = await bob.call("send", conv=conv, cid="m2", text="yes, 3 minutes")
    m = (await texts(alice, conv, 1, frm="bob"))[0]
    assert m["seq"] == ack2["seq"] == ack["seq"] + 1


async def test_dm_opened_on_one_node_is_followed_by_the_peer_on_the_other(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    await eventually(lambda: conv in b.hub.topics)
    await alice.call("send", conv=conv, cid="d1", text="hi bob")
    assert (await texts(bob, conv, 1))[0]["text"] == "hi bob"


def slow_membership_reads(app: App, delay: float) -> None:
    """The node's store check of a remote follow takes ``delay`` seconds: the
    window in which the other node's first messages cross the bus unseen."""
    read = app.fanout.members.joined_seq

    async def slow(conv: str, user: str) -> int | None:
        await asyncio.sleep(delay)
        return await read(conv, user)

    app.fanout.members.joined_seq = slow  # type: ignore[method-assign]


async def test_first_messages_of_a_dm_opened_on_another_node_are_pushed_live(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    slow_membership_reads(b, 0.3)
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    for i in range(3):  # before bob's node follows the DM
        await alice.call("send", conv=conv, cid=f"d{i}", text=f"hi {i}")
    got = await texts(bob, conv, 3, wait=3)
    assert [m["text"] for m in got] == ["hi 0", "hi 1", "hi 2"]
    await alice.call("send", conv=conv, cid="d3", text="hi 3")
    assert [m["text"] for m in await texts(bob, conv, 1)] == ["hi 3"]
    await bob.no_push(0.3, "msg")  # nothing twice


async def test_messages_right_after_a_join_on_another_node_are_pushed_live(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    slow_membership_reads(b, 0.3)
    alice = await clients(a, "alice")
    conv = (await alice.call("circle.create", name="ES8 owners", category="interest"))["conv"]
    await alice.call("send", conv=conv, cid="old", text="before bob joined")
    bob_elsewhere = await clients(a, "bob")  # bob joins from his phone on node a ...
    bob = await clients(b, "bob")  # ... while his desktop is on node b
    await bob_elsewhere.call("circle.join", conv=conv)
    await alice.call("send", conv=conv, cid="new", text="welcome bob")
    got = await texts(bob, conv, 1, wait=3)
    assert [m["text"] for m in got] == ["welcome bob"]  # not what was said before the join
    await bob.no_push(0.3, "msg")


async def test_two_nodes_writing_one_circle_keep_seq_gapless_and_in_order(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    watchers = [await clients(a, "w1"), await clients(b, "w2"), await clients(b, "w3", encoding="json")]
    conv = await circle(alice, bob, *watchers, drain=False)
    for w in watchers:  # the join messages of later members
        w.drain_pushes()
    await asyncio.sleep(0.2)
    for w in watchers:
        w.drain_pushes()
    n = 150

    async def burst(c: WsClient, tag: str) -> list[int]:
        futs = [c.start("send", {"conv": conv, "cid": f"{tag}{i}", "text": f"{tag} {i}"}) for i in range(n)]
        return [r.d["seq"] for r in await asyncio.gather(*futs)]  # type: ignore[union-attr]

    sa, sb = await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
    seqs = sorted(sa + sb)
    assert seqs == list(range(seqs[0], seqs[0] + 2 * n)), "seq has a gap or a duplicate"
    for w in watchers:
        got = await texts(w, conv, 2 * n, wait=10)
        assert [m["seq"] for m in got] == seqs, "pushes out of seq order, missing or doubled"
        await w.no_push(0.3, "msg")


async def test_leave_on_one_node_stops_the_users_other_device(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob_a = await clients(a, "bob")
    bob_b = await clients(b, "bob")
    conv = await circle(alice, bob_b, drain=False)
    await eventually(lambda: any(s in a.hub.users.get("bob", ()) for s in a.hub.topics.get(conv, (set(), set()))[0]))
    await alice.call("send", conv=conv, cid="1", text="before")
    assert (await texts(bob_a, conv, 1))[0]["text"] == "before"
    await bob_b.call("circle.leave", conv=conv)
    # bob's device on node a stops following, and node a's cache forgets bob
    await eventually(lambda: not any(s in a.hub.users.get("bob", ()) for s in a.hub.topics.get(conv, (set(), set()))[0]))
    await alice.call("send", conv=conv, cid="2", text="after")
    await bob_a.no_push(0.3, "msg")
    await bob_a.fail("send", "not_member", conv=conv, cid="x", text="still here?")


async def test_mute_on_one_node_applies_on_the_other(nodes: Nodes, clients: Any) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob_b = await clients(b, "bob")
    conv = await circle(alice, bob_b, drain=False)
    await bob_b.call("send", conv=conv, cid="ok", text="warm cache on b")
    await alice.call("circle.mute", conv=conv, user="bob", seconds=600)

    async def refused() -> bool:
        r = await bob_b.request("send", conv=conv, cid=f"t{time.monotonic()}", text="x")
        return getattr(r, "code", None) == "muted"

    await eventually(refused, within=3, every=0.05)


async def test_redis_restart_keeps_acks_reports_health_and_resyncs(
    nodes: Nodes, clients: Any, redis_proc: RedisProc
) -> None:
    a, b = nodes
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    conv = await circle(alice, bob, drain=False)
    await alice.call("send", conv=conv, cid="0", text="before the outage")
    first = (await texts(bob, conv, 1))[0]

    redis_proc.kill()
    await eventually(lambda: not a.bus.up and not b.bus.up)
    assert (await http_get(a.port, "/healthz"))[0] == 503
    assert b"chatd_bus_up 0.0" in (await http_get(a.port, "/metrics"))[1]
    # acknowledged and stored while Redis is away
    acks = [await alice.call("send", conv=conv, cid=f"o{i}", text=f"during {i}") for i in range(5)]
    assert [x["seq"] for x in acks] == list(range(first["seq"] + 1, first["seq"] + 6))
    assert (await alice.call("history", conv=conv, limit=5))["messages"][-1]["text"] == "during 4"

    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, redis_proc.start)
    await eventually(lambda: a.bus.up and b.bus.up, within=5)
    assert time.monotonic() - t0 < 5.0
    assert (await http_get(b.port, "/healthz"))[0] == 200
    metrics = (await http_get(b.port, "/metrics"))[1]
    assert b"chatd_bus_up 1.0" in metrics and b"chatd_bus_resets_total 2.0" in metrics
    await bob.next_push(5, "resync")  # told to catch up
    got = await bob.call("sync", since=bob.pos)
    assert [m["text"] for m in got["messages"] if m["conv"] == conv and m["kind"] == "text"][-5:] == [f"during {i}" for i in range(5)]
    # and fan-out works again (subscriptions came back)
    ack = await alice.call("send", conv=conv, cid="back", text="after")
    m = (await texts(bob, conv, 1, frm="alice"))[0]
    assert (m["text"], m["seq"]) == ("after", ack["seq"])


async def test_healthz_not_ready_while_redis_is_unreachable_at_start(make_server: Any, redis_proc: RedisProc) -> None:
    redis_proc.kill()
    app = await make_server(redis_url=redis_proc.url)
    assert (await http_get(app.port, "/healthz"))[0] == 503
    await asyncio.get_running_loop().run_in_executor(None, redis_proc.start)
    await eventually(lambda: app.bus.up, within=5)
    assert (await http_get(app.port, "/healthz"))[0] == 200


async def test_order_gate_fills_a_gap_from_the_store(nodes: Nodes, clients: Any) -> None:
    """A message that arrives ahead of an earlier one (lost on the bus) is held
    while the missing ones are read from the store: the socket sees seq order."""
    a, b = nodes
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    conv = await circle(alice, bob, drain=False)
    await alice.call("send", conv=conv, cid="s", text="start")
    await texts(bob, conv, 1)
    # drop node b's bus input for two messages
    real = b.fanout.bus_message
    b.fanout.bus_message = lambda key, payload: None  # type: ignore[method-assign]
    await alice.call("send", conv=conv, cid="g1", text="lost 1")
    await alice.call("send", conv=conv, cid="g2", text="lost 2")
    await asyncio.sleep(0.2)
    b.fanout.bus_message = real  # type: ignore[method-assign]
    await alice.call("send", conv=conv, cid="g3", text="arrives")
    got = await texts(bob, conv, 3)
    assert [m["text"] for m in got] == ["lost 1", "lost 2", "arrives"]
    assert got[0]["seq"] + 2 == got[2]["seq"]
    assert b.fanout.gaps_filled >= 1


async def test_resync_that_cannot_read_a_users_memberships_leaks_nothing(
    nodes: Nodes, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = nodes
    alice = await clients(a, "alice")
    mallory = await clients(a, "mallory")
    private = (await alice.call("dm.open", user="bob"))["conv"]
    from chatd.store import StoreUnavailable

    real = a.store.members.convs_of

    async def flaky(user: str) -> list[str]:
        if user == "mallory":
            raise StoreUnavailable("database is locked")
        return await real(user)

    monkeypatch.setattr(a.store.members, "convs_of", flaky)
    a.fanout.bus_reset()
    await mallory.next_push(5, "resync")
    assert private not in a.hub.follows(next(iter(a.hub.users["mallory"])))
    await alice.call("send", conv=private, cid="p", text="for bob only")
    await mallory.no_push(0.3, "msg")
