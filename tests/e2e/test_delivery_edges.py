"""Edges of the delivery guarantees found in review: what a user sees at the seams
(auth in flight, a protocol close with sends in flight, a retry after a state
change, token expiry, reply size)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from chatd_protocol import Reply
from support import read_db, token, url
from websockets.asyncio.client import connect


async def test_conversation_opened_while_auth_reads_memberships_is_pushed(
    server: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    reading = asyncio.Event()
    real = server.store.members.convs_of

    async def slow_user_convs(user: str) -> list[str]:
        if user == "bob":
            reading.set()
            await release.wait()
        return await real(user)

    monkeypatch.setattr(server.store.members, "convs_of", slow_user_convs)
    alice = await clients(server, "alice")
    bob = await clients(server, None)
    auth = bob.start("auth", {"token": token("bob", "owner")})
    await asyncio.wait_for(reading.wait(), 5)
    conv = (await alice.call("dm.open", user="bob"))["conv"]  # commits during bob's auth
    release.set()
    assert isinstance(await asyncio.wait_for(auth, 5), Reply)
    await alice.call("send", conv=conv, cid="m1", text="are you there?")
    msg = await bob.next_msg()
    assert (msg["conv"], msg["text"]) == (conv, "are you there?")


async def test_circle_left_while_auth_reads_memberships_is_not_pushed(
    server: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await clients(server, "owner1")
    conv = (await owner.call("circle.create", name="leaving", category="city"))["conv"]
    bob1 = await clients(server, "bob")
    await bob1.call("circle.join", conv=conv)
    release = asyncio.Event()
    reading = asyncio.Event()
    real = server.store.members.convs_of

    async def slow_user_convs(user: str) -> list[str]:
        convs = await real(user)  # the snapshot still has the circle
        if user == "bob":
            reading.set()
            await release.wait()
        return convs

    monkeypatch.setattr(server.store.members, "convs_of", slow_user_convs)
    bob2 = await clients(server, None)
    auth = bob2.start("auth", {"token": token("bob", "owner")})
    await asyncio.wait_for(reading.wait(), 5)
    await bob1.call("circle.leave", conv=conv)  # bob leaves from his other device
    release.set()
    assert isinstance(await asyncio.wait_for(auth, 5), Reply)
    await owner.call("send", conv=conv, cid="s1", text="not for bob any more")
    await bob2.no_push(0.3, "msg")


async def test_protocol_close_still_acks_sends_already_accepted(server: Any, clients: Any) -> None:
    c = await clients(server, "alice")
    conv = (await c.call("circle.create", name="acks", category="city"))["conv"]
    futs = []
    for k in range(5):
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        c.pending[100 + k] = fut
        futs.append(fut)
        await c.send_frame({"id": 100 + k, "op": "send", "d": {"conv": conv, "cid": f"a{k}", "text": "x"}})
    await c.send_raw(b"\xc1")  # garbage right behind them
    acks = await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert [a.d["seq"] for a in acks] == [2, 3, 4, 5, 6]
    assert await c.closed() == 4200


async def test_retry_after_being_muted_gets_the_original_ack(server: Any, clients: Any) -> None:
    owner = await clients(server, "owner2")
    conv = (await owner.call("circle.create", name="mutes", category="city"))["conv"]
    bob = await clients(server, "bob")
    await bob.call("circle.join", conv=conv)
    first = await bob.call("send", conv=conv, cid="once", text="stored before the mute")
    await owner.call("circle.mute", conv=conv, user="bob", seconds=600)
    retry = await bob.call("send", conv=conv, cid="once", text="stored before the mute")
    assert (retry["seq"], retry["dup"]) == (first["seq"], True)
    await bob.fail("send", "muted", conv=conv, cid="new", text="a new message is refused")


async def test_token_expiry_during_the_session_closes_4102(make_server: Any, clients: Any, fake_clock: Any) -> None:
    app = await make_server(clock=fake_clock)
    c = await clients(app, None)
    await c.auth(token("alice", "owner", ttl=60, now=fake_clock.now / 1000))
    fake_clock.advance(59)  # the server's clock: still valid
    assert "server_time" in await c.call("ping")
    fake_clock.advance(2)
    assert await c.closed(4) == 4102


async def test_json_sync_reply_stays_under_one_mib(make_server: Any, clients: Any) -> None:
    app = await make_server(send_rate=1e6, send_burst=10**6)
    alice = await clients(app, "alice", encoding="json")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    bob = await clients(app, "bob", encoding="json")
    pos = bob.pos
    await bob.close()
    for k in range(64):  # control characters: 1 byte stored, 6 bytes in JSON
        await alice.call("send", conv=conv, cid=f"c{k}", text="\x01" * 4000)
    # a client with websockets' default 1 MiB limit pages through all of it
    async with connect(url(app), subprotocols=["chatd.v1.json"]) as ws:  # type: ignore[list-item]
        await ws.send(orjson.dumps({"id": 1, "op": "auth", "d": {"token": token("bob", "owner")}}).decode())
        await ws.recv()
        got, more, rid = 0, True, 2
        while more:
            await ws.send(orjson.dumps({"id": rid, "op": "sync", "d": {"since": pos}}).decode())
            while True:
                frame = orjson.loads(await ws.recv())
                if frame.get("id") == rid:
                    break
            d = frame["d"]
            got += sum(1 for m in d["messages"] if m["kind"] == "text")
            pos, more, rid = d["pos"], d["more"], rid + 1
    assert got == 64


async def test_a_socket_closed_while_auth_reads_the_head_leaves_nothing_registered(
    redis_proc: Any, make_server: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several processes auth reads the store's head first: a socket gone
    meanwhile must not be registered for pushes afterwards (it would leak, and
    keep the node subscribed to its user)."""
    app = await make_server(redis_url=redis_proc.url, bus_shards=16)
    release, reading = asyncio.Event(), asyncio.Event()
    real = app.store.messages.head

    async def slow_head() -> int:
        reading.set()
        await release.wait()
        return await real()

    monkeypatch.setattr(app.store.messages, "head", slow_head)
    c = await clients(app, None)
    c.start("auth", {"token": token("ghost", "owner")})
    await asyncio.wait_for(reading.wait(), 5)
    await c.close()
    await asyncio.sleep(0.1)
    release.set()
    await asyncio.sleep(0.2)
    assert "ghost" not in app.hub.users and not app.hub.sinks()


@pytest.mark.sqlite_only  # the sqlite: form of a location
async def test_the_store_may_be_named_with_its_engine(make_server: Any, clients: Any, db_path: Any) -> None:
    app = await make_server(db_path=f"sqlite:{db_path}")
    alice = await clients(app, "alice")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    assert (await alice.call("send", conv=conv, cid="s", text="stored"))["seq"] == 1
    assert read_db(db_path, "SELECT COUNT(*) FROM messages") == [(1,)]
