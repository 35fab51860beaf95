"""Hostile and sloppy input on every op: a clear error, the socket stays up, no data leaks,
and the server never answers ``internal``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import pytest
from chatd_protocol import OPS, RULES, ErrorReply, Scope
from support import url
from wsclient import WsClient

from chatd.app import App

WRONG_TYPES: list[Any] = [None, True, 1.5, -1, 2**53, "", "x" * 5000, [], [1], {}, {"a": 1}]


def internal_errors(app: App) -> float:
    for metric in app.metrics.errors.collect():
        for sample in metric.samples:
            if sample.labels.get("code") == "internal" and sample.name.endswith("_total"):
                return sample.value
    return 0.0


@pytest.mark.parametrize("op", sorted(set(OPS) - {"auth"}))
async def test_every_op_refuses_unknown_and_wrongly_typed_fields(
    server: App, connect: Any, op: str, encoding: str
) -> None:
    c = await connect("alice", encoding=encoding)
    if RULES[op].scope is Scope.ADMIN:  # the scope is checked first: a user learns nothing more
        await c.fail(op, "forbidden", zzz=1)
        c = await connect("crm", "bot", scopes=["admin"], encoding=encoding)
    elif RULES[op].scope in (Scope.STAFF, Scope.BOT):
        await c.fail(op, "forbidden", zzz=1)
        c = await connect("sam", RULES[op].scope.value, encoding=encoding)
    await c.fail(op, "bad_request", zzz=1)
    for name in OPS[op]:
        for value in WRONG_TYPES:
            if OPS[op][name].kind == "bool" and isinstance(value, bool):
                continue  # the right type (a flag alone may be a valid request: notify.set quiet_off)
            reply = await c.request(op, **{name: value})
            assert isinstance(reply, ErrorReply), (op, name, value, reply)
            assert reply.code in ("bad_request", "not_found", "not_member", "forbidden"), (op, name, value, reply)
    assert (await c.call("ping"))["server_time"] > 0
    assert internal_errors(server) == 0


async def test_msgpack_bin_is_not_a_string(connect: Any) -> None:
    c = await connect("alice")
    conv = (await c.call("circle.create", name="n", category="city"))["conv"]
    frame = {"id": 5, "op": "send", "d": {"conv": conv, "cid": "x", "text": b"bytes, not str"}}
    fut = c.pending[5] = asyncio.get_running_loop().create_future()
    await c.send_raw(msgpack.packb(frame, use_bin_type=True))
    reply = await asyncio.wait_for(fut, 5)
    assert isinstance(reply, ErrorReply) and reply.code == "bad_request"


async def test_json_floats_and_huge_numbers(connect: Any) -> None:
    c = await connect("alice", encoding="json")
    conv = (await c.call("circle.create", name="n", category="city"))["conv"]
    for rid, raw in (
        (1, '{"id":1,"op":"read","d":{"conv":"CONV","seq":1.0}}'),
        (2, '{"id":2,"op":"read","d":{"conv":"CONV","seq":99999999999999999999}}'),
        (3, '{"id":3,"op":"history","d":{"conv":"CONV","limit":1e2}}'),
    ):
        fut = c.pending[rid] = asyncio.get_running_loop().create_future()
        await c.send_raw(raw.replace("CONV", conv))
        reply = await asyncio.wait_for(fut, 5)
        assert isinstance(reply, ErrorReply) and reply.code == "bad_request", raw
    # an id that is a float (or too big, which JSON turns into one) cannot be answered
    await c.send_raw('{"id":99999999999999999999,"op":"ping"}')
    assert await c.closed() == 4200


@pytest.mark.parametrize("depth", [100, 5000])
async def test_deep_nesting(connect: Any, encoding: str, depth: int) -> None:
    c = await connect("alice", encoding=encoding)
    if encoding == "json":
        raw: str | bytes = '{"id":1,"op":"ping","d":{"x":' + "[" * depth + "]" * depth + "}}"
    else:
        raw = msgpack.packb({"id": 1, "op": "ping"})[: -0 or None]
        raw = b"\x83\xa2id\x01\xa2op\xa4ping\xa1d\x81\xa1x" + b"\x91" * depth + b"\x90"
    fut = c.pending[1] = asyncio.get_running_loop().create_future()
    await c.send_raw(raw)
    if depth <= 100:
        reply = await asyncio.wait_for(fut, 5)
        assert isinstance(reply, ErrorReply) and reply.code == "bad_request"
    else:
        assert await c.closed() == 4200
    other = await connect("bob")
    assert (await other.call("ping"))["server_time"] > 0


async def test_random_garbage_never_takes_the_server_down(server: App, connect: Any) -> None:
    rng = random.Random(1234)
    socks = []
    for i in range(30):
        c = await connect(None if i % 3 == 0 else f"g{i}", encoding="json" if i % 2 else "msgpack")
        socks.append(c)
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        if i % 5 == 0:
            await c.send_raw(blob.decode("latin-1"))
        else:
            await c.send_raw(blob)
    codes = await asyncio.gather(*(c.closed() for c in socks))
    assert all(code in (4200, 4201, 4103, 4101) for code in codes), codes
    fine = await connect("alice")
    assert (await fine.call("ping"))["server_time"] > 0
    assert internal_errors(server) == 0


async def test_unauthenticated_socket_gets_no_pushes(server: App, connect: Any) -> None:
    alice = await connect("alice")
    lurker = await WsClient.connect(url(server))
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=conv, cid="x", text="private")
    await lurker.no_push(0.2)
    await lurker.close()


async def test_other_devices_of_the_sender_get_the_message(connect: Any) -> None:
    phone = await connect("alice")
    laptop = await connect("alice", encoding="json")
    conv = (await phone.call("dm.open", user="bob"))["conv"]
    ack = await phone.call("send", conv=conv, cid="multi", text="from my phone")
    for c in (phone, laptop):
        msg = await c.next_msg()
        assert (msg["seq"], msg["text"]) == (ack["seq"], "from my phone")


async def test_read_receipts_only_for_small_conversations(make_server: Any, clients: Any) -> None:
    app = await make_server(read_receipt_max_members=2)
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    carol = await clients(app, "carol")
    conv = (await alice.call("circle.create", name="big", category="city"))["conv"]
    for c in (bob, carol):
        await c.call("circle.join", conv=conv)
    await alice.call("send", conv=conv, cid="1", text="hi")
    await bob.call("read", conv=conv, seq=4)
    await alice.no_push(0.2, kind="read")
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=dm, cid="2", text="hi")
    await bob.call("read", conv=dm, seq=1)
    assert (await alice.next_push(kind="read")).d == {"conv": dm, "user": "bob", "seq": 1}


async def test_left_member_sees_nothing_new(connect: Any) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = (await alice.call("circle.create", name="c", category="city"))["conv"]
    await bob.call("circle.join", conv=conv)
    pos = (await bob.call("sync", since=0))["pos"]
    await bob.call("circle.leave", conv=conv)
    await alice.call("send", conv=conv, cid="after", text="after bob left")
    d = await bob.call("sync", since=pos)
    assert all(m.get("cid") != "after" for m in d["messages"])
    assert all(c["conv"] != conv for c in d["convs"])
    assert all(c["conv"] != conv for c in (await bob.call("convs"))["convs"])
