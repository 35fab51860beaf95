"""Messages: durable acks, gapless seq, idempotency, limits, history, read cursors, catch-up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from chatd_protocol import ErrorReply, Reply
from support import circle, history_all, read_db, sync_all


async def test_ack_only_after_store(connect: Any, db_path: Path, encoding: str) -> None:
    alice = await connect("alice", encoding=encoding, name="Alice", badges=["EP Club"], roles=[])
    bob = await connect("bob", encoding=encoding)
    conv = await circle(alice, bob)
    for i in range(5):
        ack = await alice.call("send", conv=conv, cid=f"k{i}", text=f"hello {i} 你好")
        # a fresh connection to the file sees the row the moment the ack arrives
        rows = read_db(
            db_path, "SELECT seq, pos, sender, cid, ts FROM messages WHERE conv = ? AND seq = ?", (conv, ack["seq"])
        )
        assert rows == [(ack["seq"], ack["pos"], "alice", f"k{i}", ack["ts"])]
        assert ack["conv"] == conv and ack["dup"] is False
    msgs = [await bob.next_msg() for _ in range(5)]
    assert [m["text"] for m in msgs] == [f"hello {i} 你好" for i in range(5)]
    m = msgs[0]
    assert set(m) == {"conv", "seq", "pos", "ts", "from", "author", "kind", "text", "cid"}
    assert m["author"] == {"name": "Alice", "type": "owner", "badges": ["EP Club"], "roles": []}
    assert m["kind"] == "text" and m["from"] == "alice"


async def test_seq_gapless_with_concurrent_senders(make_server: Any, clients: Any) -> None:
    app = await make_server(send_rate=1000.0, send_burst=1000)
    owner = await clients(app, "owner")
    senders = [await clients(app, f"s{i:02d}", encoding="json" if i % 2 else "msgpack") for i in range(20)]
    watcher = await clients(app, "watcher", encoding="json")
    conv = await circle(owner, *senders, watcher)
    per = 10

    async def burst(c: Any, i: int) -> list[dict[str, Any]]:
        futs = [c.start("send", {"conv": conv, "cid": f"{i}-{k}", "text": f"{i}/{k}"}) for k in range(per)]
        replies = await asyncio.gather(*futs)
        assert all(isinstance(r, Reply) for r in replies), replies
        return [r.d for r in replies]

    acks = [a for batch in await asyncio.gather(*(burst(c, i) for i, c in enumerate(senders))) for a in batch]
    seqs = sorted(a["seq"] for a in acks)
    first = seqs[0]
    assert seqs == list(range(first, first + 20 * per))
    assert len({a["pos"] for a in acks}) == len(acks)
    # each sender's own acks come in send order
    for i in range(20):
        mine = [a["seq"] for a in acks][i * per : (i + 1) * per]
        assert mine == sorted(mine)
    # every member sees the conversation in seq order, without gaps or duplicates
    for c in (watcher, senders[3], senders[4]):
        got = [(await c.next_msg())["seq"] for _ in range(20 * per)]
        assert got == list(range(first, first + 20 * per))
        await c.no_push(0.05)
    hist = await history_all(watcher, conv)
    assert [m["seq"] for m in hist] == list(range(1, first + 20 * per))


async def test_idempotent_retry(connect: Any, db_path: Path) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    conv = await circle(alice, bob)
    first = await alice.call("send", conv=conv, cid="retry-me", text="once")
    again = await alice.call("send", conv=conv, cid="retry-me", text="once")
    assert again["dup"] is True
    assert {k: again[k] for k in ("conv", "seq", "pos", "ts")} == {k: first[k] for k in ("conv", "seq", "pos", "ts")}
    # even from another device of the same user, and concurrently
    alice2 = await connect("alice", encoding="json")
    replies = await asyncio.gather(*(c.request("send", conv=conv, cid="race", text="r") for c in (alice, alice2) * 3))
    assert len({r.d["seq"] for r in replies}) == 1 and sum(not r.d["dup"] for r in replies) == 1
    texts = [m.get("text") for m in (await bob.call("history", conv=conv))["messages"] if m["kind"] == "text"]
    assert texts == ["once", "r"]
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid IN ('retry-me', 'race')") == [(2,)]
    pushed = [m["cid"] for m in [await bob.next_msg() for _ in range(2)]]
    assert pushed == ["retry-me", "race"]
    await bob.no_push(0.1)


async def test_too_long(connect: Any, make_server: Any, clients: Any) -> None:
    alice = await connect("alice")
    conv = await circle(alice)
    await alice.call("send", conv=conv, cid="ok", text="x" * 4000)
    await alice.call("send", conv=conv, cid="ok2", text="好" * 4000)  # characters, not bytes
    err = await alice.fail("send", "too_long", conv=conv, cid="no", text="x" * 4001)
    assert err.temporary is False
    assert [m["cid"] for m in (await alice.call("history", conv=conv))["messages"][1:]] == ["ok", "ok2"]


async def test_send_bad_input(connect: Any) -> None:
    alice = await connect("alice")
    conv = await circle(alice)
    for bad in (
        {"conv": conv, "cid": "a"},
        {"conv": conv, "text": "x"},
        {"cid": "a", "text": "x"},
        {"conv": conv, "cid": "a", "text": ""},
        {"conv": conv, "cid": "", "text": "x"},
        {"conv": conv, "cid": "c" * 65, "text": "x"},
        {"conv": conv, "cid": 5, "text": "x"},
        {"conv": conv, "cid": "a", "text": ["x"]},
        {"conv": conv, "cid": "a", "text": {"t": "x"}},
        {"conv": conv, "cid": "a", "text": "x", "mention_all": "yes"},
        {"conv": conv, "cid": "a", "text": "x", "seq": 5},
        {"conv": "c 1", "cid": "a", "text": "x"},
    ):
        await alice.fail("send", "bad_request", **bad)
    assert len((await alice.call("history", conv=conv))["messages"]) == 1


async def test_rate_limited(make_server: Any, clients: Any) -> None:
    app = await make_server(send_rate=5.0, send_burst=3)
    alice = await clients(app, "alice")
    alice_phone = await clients(app, "alice")
    conv = await circle(alice)
    for i in range(3):
        await alice.call("send", conv=conv, cid=f"b{i}", text="burst")
    err = await alice.fail("send", "rate_limited", conv=conv, cid="b3", text="too fast")
    assert err.temporary is True and err.retry_after_ms is not None and 0 < err.retry_after_ms <= 250
    # per user, not per socket
    await alice_phone.fail("send", "rate_limited", conv=conv, cid="b3", text="too fast")
    await asyncio.sleep(err.retry_after_ms / 1000 + 0.02)
    ack = await alice.call("send", conv=conv, cid="b3", text="now")
    assert ack["seq"] == 5  # the refused attempts took no seq
    # other users are not affected
    bob = await clients(app, "bob")
    dm = (await bob.call("dm.open", user="alice"))["conv"]
    await bob.call("send", conv=dm, cid="x", text="hi")


async def test_not_member_and_not_found(connect: Any) -> None:
    alice = await connect("alice")
    eve = await connect("eve")
    conv = await circle(alice)
    await alice.call("send", conv=conv, cid="secret", text="members only")
    await eve.fail("send", "not_member", conv=conv, cid="x", text="let me in")
    await eve.fail("history", "not_member", conv=conv)
    await eve.fail("read", "not_member", conv=conv, seq=1)
    await eve.fail("recall", "not_member", conv=conv, seq=2)
    for op, d in (
        ("send", {"cid": "x", "text": "x"}),
        ("history", {}),
        ("read", {"seq": 1}),
        ("recall", {"seq": 1}),
        ("members", {}),
    ):
        await eve.fail(op, "not_found", conv="c:31337", **d)  # circles are listed: no secret
        await eve.fail(op, "not_member", conv="dm:eve:nobody", **d)  # a DM's existence is never told
    # eve's sync never shows the circle
    sync = await eve.call("sync", since=0)
    assert sync["messages"] == [] and sync["convs"] == []


async def test_history_paging_backwards(connect: Any) -> None:
    alice = await connect("alice")
    conv = await circle(alice)
    for i in range(25):
        await alice.call("send", conv=conv, cid=f"h{i}", text=f"m{i}")
    page = await alice.call("history", conv=conv, limit=10)
    assert [m["seq"] for m in page["messages"]] == list(range(17, 27)) and page["more"] is True
    page = await alice.call("history", conv=conv, limit=10, before=17)
    assert [m["seq"] for m in page["messages"]] == list(range(7, 17)) and page["more"] is True
    page = await alice.call("history", conv=conv, limit=10, before=7)
    assert [m["seq"] for m in page["messages"]] == list(range(1, 7)) and page["more"] is False
    page = await alice.call("history", conv=conv, before=1)
    assert page == {"messages": [], "more": False}
    assert len((await alice.call("history", conv=conv))["messages"]) == 26  # default 50
    for bad in ({"limit": 0}, {"limit": 101}, {"before": 0}, {"before": -5}, {"before": "3"}, {"limit": True}):
        await alice.fail("history", "bad_request", conv=conv, **bad)


async def test_read_cursors_unread_and_receipts(connect: Any) -> None:
    amy = await connect("amy")
    zed = await connect("zed")
    conv = (await amy.call("dm.open", user="zed"))["conv"]
    for i in range(5):
        await amy.call("send", conv=conv, cid=f"r{i}", text=f"{i}")
    zed.drain_pushes()
    amy.drain_pushes()

    async def view(c: Any) -> dict[str, Any]:
        (v,) = [x for x in (await c.call("convs"))["convs"] if x["conv"] == conv]
        return v

    assert (await view(zed))["unread"] == 5 and (await view(zed))["read_seq"] == 0
    assert (await view(amy))["unread"] == 0  # own messages count as read
    assert await zed.call("read", conv=conv, seq=3) == {"read_seq": 3, "unread": 2}
    receipt = await amy.next_push(kind="read")
    assert receipt.d == {"conv": conv, "user": "zed", "seq": 3}
    # never moves back
    assert await zed.call("read", conv=conv, seq=1) == {"read_seq": 3, "unread": 2}
    # clamped to the last message
    assert await zed.call("read", conv=conv, seq=10_000) == {"read_seq": 5, "unread": 0}
    assert (await amy.next_push(kind="read")).d["seq"] == 5
    assert (await view(zed))["unread"] == 0
    await zed.fail("read", "bad_request", conv=conv, seq=-1)
    await zed.fail("read", "bad_request", conv=conv, seq=True)
    await zed.fail("read", "bad_request", conv=conv)


async def test_read_receipt_only_when_the_cursor_moves(connect: Any) -> None:
    amy = await connect("amy")
    zed = await connect("zed")
    conv = (await amy.call("dm.open", user="zed"))["conv"]
    for i in range(3):
        await amy.call("send", conv=conv, cid=f"r{i}", text=f"{i}")
    await zed.call("read", conv=conv, seq=3)
    assert (await amy.next_push(kind="read")).d["seq"] == 3
    await zed.call("read", conv=conv, seq=2)  # does not move: nothing to tell
    await zed.call("read", conv=conv, seq=3)
    await amy.no_push(0.2, kind="read")


async def test_sync_after_reconnect(connect: Any, encoding: str) -> None:
    alice = await connect("alice", encoding=encoding)
    bob = await connect("bob", encoding=encoding)
    conv = await circle(alice, bob)
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    await alice.call("send", conv=conv, cid="seen", text="seen live")
    await bob.next_msg()
    pos = (await bob.call("sync", since=bob.pos))["pos"]
    await bob.close()
    missed = []
    missed.append(await alice.call("send", conv=conv, cid="m1", text="while away 1"))
    missed.append(await alice.call("send", conv=dm, cid="m2", text="while away 2"))
    missed.append(await alice.call("send", conv=conv, cid="m3", text="while away 3"))
    other = await circle(alice)  # bob is no member: not in his sync
    await alice.call("send", conv=other, cid="m4", text="not for bob")
    bob = await connect("bob", encoding=encoding)
    d = await bob.call("sync", since=pos)
    assert [(m["conv"], m["seq"], m["cid"]) for m in d["messages"]] == [
        (a["conv"], a["seq"], c) for a, c in zip(missed, ("m1", "m2", "m3"), strict=True)
    ]
    assert [m["pos"] for m in d["messages"]] == sorted(m["pos"] for m in d["messages"])
    assert d["more"] is False
    assert d["pos"] >= missed[-1]["pos"]
    assert sorted((c["conv"], c["last_seq"], c["unread"]) for c in d["convs"]) == sorted(
        [(conv, missed[2]["seq"], 3), (dm, missed[1]["seq"], 1)]
    )
    # nothing new since: empty, same pos
    again = await bob.call("sync", since=d["pos"])
    assert again["messages"] == [] and again["convs"] == [] and again["pos"] == d["pos"]
    # and what the next message brings is exactly it
    ack = await alice.call("send", conv=dm, cid="m5", text="live")
    assert (await bob.next_msg())["cid"] == "m5"
    d2 = await bob.call("sync", since=d["pos"])
    assert [m["cid"] for m in d2["messages"]] == ["m5"] and d2["pos"] == ack["pos"]
    await bob.fail("sync", "bad_request")
    await bob.fail("sync", "bad_request", since=-1)
    await bob.fail("sync", "bad_request", since=0, limit=1001)


async def test_sync_paging_with_more(make_server: Any, clients: Any) -> None:
    app = await make_server(send_rate=1000.0, send_burst=1000)
    alice = await clients(app, "alice")
    bob = await clients(app, "bob")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    start = (await bob.call("sync", since=0))["pos"]
    acks = [await alice.call("send", conv=conv, cid=f"p{i}", text=f"{i}") for i in range(10)]
    got: list[int] = []
    pos = start
    rounds = []
    while True:
        d = await bob.call("sync", since=pos, limit=4)
        got += [m["seq"] for m in d["messages"]]
        rounds.append((len(d["messages"]), d["more"]))
        assert d["pos"] > pos
        pos = d["pos"]
        if not d["more"]:
            break
    assert rounds == [(4, True), (4, True), (2, False)]
    assert got == [a["seq"] for a in acks]
    assert pos == acks[-1]["pos"]


async def test_sync_cost_is_what_changed(make_server: Any, clients: Any) -> None:
    """A user in 300 conversations who missed 3 messages gets exactly those 3."""
    app = await make_server(send_rate=10_000.0, send_burst=10_000, request_burst=2000)
    hub = await clients(app, "hub", "staff")
    peers = [f"p{i:03d}" for i in range(300)]
    opened = await asyncio.gather(*(hub.request("dm.open", user=p) for p in peers))
    convs = [r.d["conv"] for r in opened]
    sent = await asyncio.gather(*(hub.request("send", conv=c, cid=f"hi-{c}", text="hi") for c in convs))
    assert all(isinstance(r, Reply) for r in sent)
    pos = (await hub.call("sync", since=hub.pos, limit=1000))["pos"]
    await hub.close()
    lucky = [peers[7], peers[150], peers[299]]
    acks = []
    for p in lucky:
        c = await clients(app, p)
        acks.append(await c.call("send", conv=f"dm:hub:{p}", cid="reply", text=f"hello from {p}"))
        await c.close()
    hub = await clients(app, "hub", "staff")
    d = await hub.call("sync", since=pos)
    assert [(m["conv"], m["seq"]) for m in d["messages"]] == [(a["conv"], a["seq"]) for a in acks]
    assert sorted(c["conv"] for c in d["convs"]) == sorted(a["conv"] for a in acks)
    assert all(c["unread"] == 1 for c in d["convs"])
    assert d["more"] is False


async def test_error_reply_echoes_string_ids(connect: Any) -> None:
    alice = await connect("alice")
    fut = alice.start("history", {"conv": "c:404"}, rid="req-ü-1")
    reply = await asyncio.wait_for(fut, 5)
    assert isinstance(reply, ErrorReply) and reply.id == "req-ü-1" and reply.code == "not_found"


async def test_pushes_after_auth_pos_are_complete_under_load(make_server: Any, clients: Any) -> None:
    """A socket that authenticates mid-flood is pushed exactly the messages after its auth pos."""
    app = await make_server(send_rate=10_000.0, send_burst=10_000, request_rate=100_000.0, request_burst=100_000)
    alice = await clients(app, "alice")
    conv = (await alice.call("dm.open", user="bob"))["conv"]
    stop = asyncio.Event()

    async def flood() -> int:
        k = 0
        while not stop.is_set():
            replies = await asyncio.gather(
                *(alice.request("send", conv=conv, cid=f"f{k + j}", text="x") for j in range(10))
            )
            assert all(isinstance(r, Reply) for r in replies), [r for r in replies if not isinstance(r, Reply)]
            k += 10
        return k

    task = asyncio.get_running_loop().create_task(flood())
    await asyncio.sleep(0.05)
    bob = await clients(app, "bob")
    await asyncio.sleep(0.1)
    stop.set()
    total = await task
    assert total > 20
    hist = await history_all(alice, conv)
    expected = [m["seq"] for m in hist if m["pos"] > bob.pos]
    assert expected, "bob should have connected during the flood"
    got = [p.d["seq"] for p in bob.drain_pushes() if p.type == "msg"]
    while len(got) < len(expected):
        got.append((await bob.next_msg(2))["seq"])
    assert got == expected


async def test_reconnect_loop_sees_every_message_once(make_server: Any, clients: Any) -> None:
    """Loses nothing, duplicates nothing: reconnecting during a flood, sync + pushes + dedup by (conv, seq) give
    every message exactly once, with no gap."""
    app = await make_server(send_rate=10_000.0, send_burst=10_000, request_rate=100_000.0, request_burst=100_000)
    alice = await clients(app, "alice")
    convs = [(await alice.call("dm.open", user="bob"))["conv"]]
    circle_id = (await alice.call("circle.create", name="c", category="city"))["conv"]
    bob = await clients(app, "bob")
    await bob.call("circle.join", conv=circle_id)
    convs.append(circle_id)
    seen: dict[tuple[str, int], str | None] = {}
    since = (await bob.call("sync", since=0))["pos"]
    for m in (await bob.call("sync", since=0))["messages"]:
        seen[(m["conv"], m["seq"])] = m.get("cid")
    await bob.close()
    stop = asyncio.Event()

    async def flood() -> None:
        k = 0
        while not stop.is_set():
            replies = await asyncio.gather(
                *(alice.request("send", conv=convs[j % 2], cid=f"m{k + j}", text="x") for j in range(10))
            )
            assert all(isinstance(r, Reply) for r in replies)
            k += 10

    task = asyncio.get_running_loop().create_task(flood())

    def take(m: dict[str, Any]) -> None:
        seen.setdefault((m["conv"], m["seq"]), m.get("cid"))

    for cycle in range(6):
        c = await clients(app, "bob", encoding="json" if cycle % 2 else "msgpack")
        for m in (await sync_all(c, since, limit=50))[0]:
            take(m)
        await asyncio.sleep(0.03)
        for p in c.drain_pushes():
            if p.type == "msg":
                take(p.d)
        since = c.pos  # pushes of this session may be lost at close: sync from its auth pos
        await c.close()
    stop.set()
    await task
    final = await clients(app, "bob")
    for m in (await sync_all(final, since))[0]:
        take(m)
    for conv in convs:
        last = next(c for c in (await final.call("convs"))["convs"] if c["conv"] == conv)["last_seq"]
        mine = sorted(s for (cv, s) in seen if cv == conv)
        first = 1 if conv.startswith("dm:") else 2  # bob joined the circle at seq 2
        assert mine == list(range(first, last + 1)), conv
