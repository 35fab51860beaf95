"""RedisBus failure modes beyond the shared contract, against a real redis-server:
a Redis that stalls without closing, interest regained while unsubscribing, and
envelopes that are not ours."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redisproc import RedisProc

from chatd.bus.redis import RedisBus, _Link
from chatd.bus.resp import RespConnection

from .test_contract import Recorder


def link(bus: RedisBus) -> _Link:
    """The bus's link to its one Redis server."""
    found = bus.route(bus.channel("c:k"))
    assert found is not None
    return found


async def node(url: str) -> tuple[RedisBus, Recorder]:
    bus = RedisBus(url, shards=16)
    rec = Recorder()
    bus.attach(rec)
    await bus.start()
    assert bus.up
    return bus, rec


Pair = tuple[RedisBus, Recorder, RedisBus, Recorder, aioredis.Redis]


@pytest.fixture
async def pair(redis_proc: RedisProc) -> AsyncIterator[Pair]:
    """Two nodes on one real redis-server, and a plain redis-py client to it."""
    a, ra = await node(redis_proc.url)
    b, rb = await node(redis_proc.url)
    admin = aioredis.Redis.from_url(redis_proc.url)
    try:
        yield a, ra, b, rb, admin
    finally:
        await admin.aclose()
        await a.stop()
        await b.stop()


async def test_a_stalled_redis_is_noticed_and_the_bus_resets_after(pair: Pair, redis_proc: RedisProc) -> None:
    a, _, b, rb, _admin = pair
    b.interest("c:room", 1)
    await b.ready("c:room")
    resets = rb.resets
    assert redis_proc.pid is not None
    os.kill(redis_proc.pid, signal.SIGSTOP)  # the connection stays open; nothing answers
    t0 = time.monotonic()
    try:
        await rb.wait_for(lambda: not b.up, within=10)
        noticed = time.monotonic() - t0
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
    assert noticed < 8, f"stall noticed after {noticed:.1f} s"
    await rb.wait_for(lambda: b.up and rb.resets > resets, within=10)
    await rb.wait_for(lambda: a.up, within=10)
    a.publish("c:room", b"after the stall")
    await rb.wait_for(lambda: ("c:room", b"after the stall") in rb.got)


async def test_interest_regained_while_unsubscribing_is_subscribed_again(pair: Pair) -> None:
    a, _, b, rb, _admin = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    b.interest("c:k", -1)
    channel = b.channel("c:k")
    link(b).unsubscribe(channel)  # what the sweep does: the UNSUBSCRIBE goes out ...
    b.interest("c:k", 1)  # ... and interest comes back before its confirmation
    await b.ready("c:k")
    for _ in range(50):
        a.publish("c:k", b"x")
        await asyncio.sleep(0.02)
        if rb.got:
            break
    assert rb.got, "the channel stayed unsubscribed"
    assert channel in b.confirmed


async def test_foreign_envelopes_are_dropped_without_a_reset(pair: Pair) -> None:
    a, _, b, rb, r = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    resets = b.resets
    for junk in (b"", b"x", b"12345678\x00", b"12345678\xff\xffshort"):
        await r.publish(b.channel("c:k"), junk)
    a.publish("c:k", b"real")
    await rb.wait_for(lambda: ("c:k", b"real") in rb.got)
    assert b.resets == resets and b.up
    assert b.malformed >= 3


async def test_a_password_in_the_url_is_used_and_a_wrong_one_keeps_the_bus_down(redis_proc: RedisProc) -> None:
    admin = aioredis.Redis.from_url(redis_proc.url)
    await admin.config_set("requirepass", "s3cret")
    good = redis_proc.url.replace("redis://", "redis://:s3cret@")
    bad = redis_proc.url.replace("redis://", "redis://:wrong@")
    a, _ = await node(good)
    b, rb = await node(good)
    c = RedisBus(bad, shards=16)
    c.attach(Recorder())
    try:
        await c.start(wait=0.5)
        assert not c.up
        b.interest("c:k", 1)
        await b.ready("c:k")
        a.publish("c:k", b"with auth")
        await rb.wait_for(lambda: ("c:k", b"with auth") in rb.got)
    finally:
        await c.stop()
        await a.stop()
        await b.stop()
        await admin.execute_command("AUTH", "s3cret")
        await admin.config_set("requirepass", "")
        await admin.aclose()


async def test_garbage_from_the_server_drops_the_connection_and_the_bus_stays_down() -> None:
    """Not Redis at all on the other end: the bus never counts as up, keeps
    reconnecting, and stops cleanly."""
    accepted = 0

    writers: list[asyncio.StreamWriter] = []

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.append(writer)
        await reader.read(100)
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(liar, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = RedisBus(f"redis://127.0.0.1:{port}", shards=16)
    bus.attach(Recorder())
    try:
        await bus.start(wait=0.5)
        await asyncio.sleep(0.6)
        assert not bus.up
        assert accepted >= 2, "the bus did not try again after the garbage"
        bus.publish("c:k", b"x")  # dropped, not raised
        assert bus.stats()["dropped"] >= 1
    finally:
        await bus.stop()
        server.close()
        await close_all(writers)
        await server.wait_closed()


async def test_publishing_costs_redis_no_replies(pair: Pair) -> None:
    """The publishing connection turns replies off (CLIENT REPLY OFF): Redis
    writes nothing back per PUBLISH, and envelopes still arrive in order."""
    a, _, b, rb, admin = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    for i in range(200):
        a.publish("c:k", str(i).encode())
    await rb.wait_for(lambda: len(rb.got) == 200)
    assert [p for _, p in rb.got] == [str(i).encode() for i in range(200)]
    assert link(a).pub is not None and not link(a).pub.replies and link(a).pub.unanswered == 0
    assert link(a).pub.written == 200
    publishers = [c for c in await admin.client_list() if c.get("cmd") == "publish"]
    assert len(publishers) == 1 and publishers[0]["obl"] == "0"  # nothing queued back to us


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    """The fake servers' side of their connections (3.11's Server.close leaves them open)."""
    for w in writers:
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()


async def kill_publishers(admin: aioredis.Redis) -> int:
    killed = 0
    for c in await admin.client_list():
        if c.get("cmd", "").lower() in ("publish", "client|reply"):
            killed += await admin.client_kill_filter(_id=c["id"])
    return killed


async def test_a_publishing_connection_killed_in_use_makes_every_node_resync(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, b, rb, admin = pair
    monkeypatch.setattr(RespConnection, "checkpoint", lambda self: None)  # nothing gets confirmed
    b.interest("c:k", 1)
    await b.ready("c:k")
    a.publish("c:k", b"first")
    await rb.wait_for(lambda: ("c:k", b"first") in rb.got)
    resets = rb.resets
    # Redis drops the publishing connection before it confirmed the envelope
    # (as on a CLIENT KILL or a proxy restart): the other node may have missed
    # it, so it is told to resync
    a.publish("c:k", b"maybe lost")
    await asyncio.sleep(0)
    assert link(a).pub is not None and link(a).pub.unconfirmed > 0
    assert await kill_publishers(admin) == 1
    await rb.wait_for(lambda: rb.resets > resets)
    assert a.up and b.up
    a.publish("c:k", b"after")
    await rb.wait_for(lambda: ("c:k", b"after") in rb.got)


async def test_a_confirmed_publisher_lost_while_idle_resyncs_nobody(pair: Pair) -> None:
    """Checkpoints confirm what was published: losing an idle publishing
    connection (Redis' idle timeout, a proxy) is no loss, and the next publish
    reconnects."""
    a, ra, b, rb, admin = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    a.publish("c:k", b"one")
    await rb.wait_for(lambda: ("c:k", b"one") in rb.got)
    await rb.wait_for(lambda: link(a).pub is not None and link(a).pub.unconfirmed == 0, within=3.0)
    resets_a, resets_b = ra.resets, rb.resets
    assert await kill_publishers(admin) == 1
    await asyncio.sleep(1.5)
    a.publish("c:k", b"two")
    await rb.wait_for(lambda: ("c:k", b"two") in rb.got)
    assert (ra.resets, rb.resets) == (resets_a, resets_b)
    assert a.stats()["dropped"] == 0


async def test_what_a_node_published_while_its_bus_was_down_makes_the_others_resync(pair: Pair) -> None:
    a, ra, b, rb, admin = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    resets_b = rb.resets
    assert link(a).sub is not None and link(a).sub.transport is not None
    host, port = link(a).sub.transport.get_extra_info("sockname")[:2]
    assert await admin.client_kill_filter(addr=f"{host}:{port}") == 1  # only a's subscriber
    await ra.wait_for(lambda: not a.up, within=2.0)
    a.publish("c:k", b"while down")  # dropped: b never sees it ...
    await ra.wait_for(lambda: a.up, within=5.0)
    await rb.wait_for(lambda: rb.resets > resets_b)  # ... so b is told to resync
    assert ("c:k", b"while down") not in rb.got and b.up


async def test_a_unix_socket_url_works() -> None:
    rp = RedisProc()
    sock = rp.dir / "redis.sock"
    rp.extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    await asyncio.get_running_loop().run_in_executor(None, rp.start)
    a, _ = await node(f"unix://{sock}")
    b, rb = await node(f"unix://{sock}")
    try:
        b.interest("c:k", 1)
        await b.ready("c:k")
        a.publish("c:k", b"over a unix socket")
        await rb.wait_for(lambda: ("c:k", b"over a unix socket") in rb.got)
    finally:
        await a.stop()
        await b.stop()
        rp.close()


async def test_what_is_published_just_before_stop_arrives(pair: Pair) -> None:
    a, _, b, rb, _admin = pair
    b.interest("c:k", 1)
    await b.ready("c:k")
    for i in range(100):
        a.publish("c:k", b"last %d" % i)
    await a.stop()  # same loop turn: nothing was written yet
    await rb.wait_for(lambda: len(rb.got) == 100)
    assert rb.got[-1] == ("c:k", b"last 99")


async def test_a_reset_owed_at_stop_is_still_sent(pair: Pair) -> None:
    a, _, _b, rb, _admin = pair
    resets = rb.resets
    a._lost(1, "test: an envelope lost just before the deploy")
    await a.stop()  # before the watcher's next round
    await rb.wait_for(lambda: rb.resets > resets)


async def test_a_server_that_answers_client_reply_off_keeps_replies_on() -> None:
    """A Redis-like proxy that answers every command (REPLY OFF included): the
    publisher keeps replies on and counts them, and nothing loops."""
    from chatd.bus import resp

    writers: list[asyncio.StreamWriter] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        buf = b""
        while True:
            data = await reader.read(65536)
            if not data:
                break
            buf += data
            while True:
                cmd, end = resp.parse(buf, 0)
                if cmd is resp._NEED:
                    break
                buf = buf[end:]
                name = cmd[0].upper()
                writer.write(b"+PONG\r\n" if name == b"PING" else b":0\r\n" if name == b"PUBLISH" else b"+OK\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await resp.connect(f"redis://127.0.0.1:{port}")
        assert await conn.replies_off() is False and conn.replies
        conn.write(resp.pack("PUBLISH", "x", b"y") * 3, 3)
        await conn.confirm()
        assert conn.unconfirmed == 0 and conn.is_open
        conn.close()
    finally:
        server.close()
        await close_all(writers)
        await server.wait_closed()
