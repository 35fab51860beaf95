"""Presence and typing, as users see them: one server (in-memory backend), then
two nodes through a real redis-server (see test_workers.py for kill -9)."""

from __future__ import annotations

import asyncio
from typing import Any

from redisproc import RedisProc
from wsclient import WsClient

from chatd.app import App


async def presence_of(c: WsClient, user: str, wait: float = 5.0) -> dict[str, Any]:
    while True:
        p = (await c.next_push(wait, "presence")).d
        if p["user"] == user:
            return p


async def test_subscribe_gets_current_state_and_pushes_on_change(server: App, clients: Any) -> None:
    bob = await clients(server, "bob")
    got = await bob.call("presence.sub", users=["alice"])
    assert got["presence"] == [{"user": "alice", "status": "offline", "on_duty": False}]
    alice = await clients(server, "alice")
    assert (await presence_of(bob, "alice"))["status"] == "online"
    assert await alice.call("presence.set", status="away") == {"status": "away", "on_duty": False}
    away = await presence_of(bob, "alice")
    assert away["status"] == "away" and isinstance(away["last_seen"], int)
    phone = await clients(server, "alice")  # a second device, online: the user is online
    assert (await presence_of(bob, "alice"))["status"] == "online"
    await phone.close()
    assert (await presence_of(bob, "alice"))["status"] == "away"
    await alice.close()
    off = await presence_of(bob, "alice")
    assert off["status"] == "offline" and off["last_seen"] >= away["last_seen"]
    # the current state for a late subscriber includes last seen
    carol = await clients(server, "carol")
    assert (await carol.call("presence.sub", users=["alice"]))["presence"][0]["last_seen"] == off["last_seen"]


async def test_unsubscribe_stops_pushes(server: App, clients: Any) -> None:
    bob = await clients(server, "bob")
    await bob.call("presence.sub", users=["alice", "dave"])
    await bob.call("presence.unsub", users=["alice"])
    await clients(server, "alice")
    await bob.no_push(0.3, "presence")
    await clients(server, "dave")
    assert (await presence_of(bob, "dave"))["status"] == "online"


async def test_staff_on_duty_and_others_refused(server: App, clients: Any) -> None:
    owner = await clients(server, "owner1")
    await owner.call("presence.sub", users=["fellow1"])
    fellow = await clients(server, "fellow1", "staff", roles=["fellow"])
    assert (await presence_of(owner, "fellow1"))["on_duty"] is False
    assert (await fellow.call("presence.set", on_duty=True))["on_duty"] is True
    assert (await presence_of(owner, "fellow1"))["on_duty"] is True
    await owner.fail("presence.set", "forbidden", on_duty=True)


async def test_subscriptions_are_capped_per_connection(make_server: Any, clients: Any) -> None:
    app = await make_server(presence_max_subs=5)
    c = await clients(app, "bob")
    await c.call("presence.sub", users=[f"u{i}" for i in range(5)])
    await c.call("presence.sub", users=["u1", "u2"])  # already counted: fine
    err = await c.fail("presence.sub", "limit", users=["u9"])
    assert "5" in err.message
    await c.call("presence.unsub", users=["u0"])
    await c.call("presence.sub", users=["u9"])


async def test_presence_input_is_checked(server: App, clients: Any) -> None:
    c = await clients(server, "bob")
    await c.fail("presence.sub", "bad_request", users=[])
    await c.fail("presence.sub", "bad_request", users=["not a user id!"])
    await c.fail("presence.sub", "bad_request", users=[f"u{i}" for i in range(101)])
    await c.fail("presence.sub", "bad_request", users="alice")
    await c.fail("presence.set", "bad_request", status="invisible")
    await c.fail("presence.set", "bad_request", status="away", extra=1)
    await c.fail("typing", "bad_request", conv=5)


async def test_typing_is_pushed_to_members_throttled_and_never_stored(server: App, clients: Any) -> None:
    alice = await clients(server, "alice")
    bob = await clients(server, "bob")
    eve = await clients(server, "eve")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    assert (await alice.call("typing", conv=conv)) == {"pushed": True}
    t = (await bob.next_push(2, "typing")).d
    assert t == {"conv": conv, "user": "alice"}
    assert (await alice.call("typing", conv=conv)) == {"pushed": False}  # throttled
    await bob.no_push(0.2, "typing")
    await eve.fail("typing", "not_member", conv=conv)
    await eve.no_push(0.2, "typing")
    hist = await bob.call("history", conv=conv)
    assert hist["messages"] == []
    sync = await bob.call("sync", since=0)
    assert all(m["kind"] != "typing" for m in sync["messages"])


async def test_presence_and_typing_across_two_nodes(make_server: Any, clients: Any, redis_proc: RedisProc) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64)
    bob = await clients(a, "bob")
    await bob.call("presence.sub", users=["alice"])
    alice_b = await clients(b, "alice")
    assert (await presence_of(bob, "alice"))["status"] == "online"
    alice_a = await clients(a, "alice")  # second device, other node: still online, no change pushed
    await alice_b.close()
    await bob.no_push(0.3, "presence")
    await alice_a.close()
    assert (await presence_of(bob, "alice"))["status"] == "offline"

    carol = await clients(b, "carol")
    conv = (await bob.call("dm.open", user="carol"))["conv"]
    await asyncio.sleep(0.1)
    await bob.call("typing", conv=conv)
    assert (await carol.next_push(2, "typing")).d == {"conv": conv, "user": "bob"}


async def test_presence_comes_back_after_a_redis_restart(make_server: Any, clients: Any, redis_proc: RedisProc) -> None:
    a = await make_server(redis_url=redis_proc.url, bus_shards=64)
    b = await make_server(redis_url=redis_proc.url, bus_shards=64)
    bob = await clients(a, "bob")
    await bob.call("presence.sub", users=["alice"])
    alice = await clients(b, "alice")
    assert (await presence_of(bob, "alice"))["status"] == "online"
    for status in ("away", "online", "away", "online"):  # versions grow past what a new Redis starts at
        await alice.call("presence.set", status=status)
        assert (await presence_of(bob, "alice"))["status"] == status
    redis_proc.kill()
    await asyncio.sleep(0.3)
    await asyncio.get_running_loop().run_in_executor(None, redis_proc.start)  # empty: presence is ephemeral
    await asyncio.sleep(1.0)
    # the nodes put their devices back: a new subscriber sees alice online
    dave = await clients(a, "dave")
    for _ in range(50):
        got = (await dave.call("presence.sub", users=["alice"]))["presence"][0]
        if got["status"] == "online":
            break
        await asyncio.sleep(0.1)
    assert got["status"] == "online"
    await alice.close()
    assert (await presence_of(bob, "alice", wait=5))["status"] == "offline"
