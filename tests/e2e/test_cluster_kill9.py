"""The multi-machine shape on one machine: three real ``chatd serve`` processes on
one PostgreSQL database and a Redis Cluster of 3 masters and 3 replicas. DMs, a
circle, a service group, a live session and points run across all three while
one chatd process is killed with -9 and a Redis master is killed (its replica
takes over). Afterwards every acknowledged message is in the store once, every
client has each one after catch-up, no socket was pushed one twice, every
acknowledged question is in the session, and every message earned its points
once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import Reply
from chatdproc import Proc
from pgproc import PgProc
from redisclusterproc import RedisClusterProc
from support import admin_call, eventually, free_port, history_all, http_get, read_db, sync_all
from websockets.exceptions import ConnectionClosed
from wsclient import WsClient

from . import test_workers as workers
from .test_workers import _close_clients  # noqa: F401  (the fixture: sockets closed after the test)

pytestmark = pytest.mark.slow

Acked = list[tuple[str, int, str]]  # (conv, seq, cid)


@pytest.fixture
def procs(tmp_path: Path, pg_server: PgProc, redis_cluster: RedisClusterProc) -> Iterator[list[Proc]]:
    db = pg_server.create_db(migrated=True)
    made = []
    for i in range(3):
        extra = ("--admin-port", str(free_port())) if i == 0 else ()
        p = Proc(db, free_port(), tmp_path / f"chatd{i}.log", "--redis-url", redis_cluster.url, *extra)
        p.admin = int(extra[1]) if extra else 0  # type: ignore[attr-defined]
        made.append(p)
    yield made
    for p in made:
        p.stop()


async def connect(p: Proc, user: str, type_: str = "owner", **claims: Any) -> WsClient:
    return await workers.connect(p.port, user, "msgpack", type_, **claims)


async def pump(c: WsClient, targets: list[str], acked: Acked, stop: asyncio.Event, name: str) -> None:
    """Send into ``targets`` in turn, 4 in flight, until ``stop`` or the socket dies."""
    k = 0
    while not stop.is_set():
        batch = [(targets[(k + j) % len(targets)], f"{name}-{k + j}") for j in range(4)]
        futs = [c.start("send", {"conv": conv, "cid": cid, "text": f"{name} {cid} 你好"}) for conv, cid in batch]
        for (conv, cid), fut in zip(batch, futs, strict=True):
            try:
                r = await asyncio.wait_for(fut, 5)
            except (ConnectionError, TimeoutError):
                return
            if isinstance(r, Reply):
                acked.append((conv, r.d["seq"], cid))
        k += 4
        await asyncio.sleep(0.01)


async def ask(c: WsClient, session: str, asked: list[int], stop: asyncio.Event, name: str) -> None:
    k = 0
    while not stop.is_set():
        try:
            r = await c.request("live.ask", session=session, cid=f"{name}-{k}", text=f"{name} 问题 {k}", wait=5)
        except (ConnectionError, TimeoutError, ConnectionClosed):
            return
        if isinstance(r, Reply):
            asked.append(r.d["question"]["id"])
        k += 1
        await asyncio.sleep(0.05)


def pushed(c: WsClient) -> list[tuple[str, int]]:
    return [(p.d["conv"], p.d["seq"]) for p in c.drain_pushes() if p.type == "msg"]


async def test_three_processes_on_postgresql_and_a_redis_cluster_survive_kill9_of_each(
    procs: list[Proc], redis_cluster: RedisClusterProc
) -> None:
    p0, p1, p2 = procs
    for p in procs:
        p.start()
    await asyncio.gather(*(p.healthy(30) for p in procs))

    alice = await connect(p0, "alice")
    ceo = await connect(p0, "ceo", "staff", roles=["exec"])
    bob = await connect(p1, "bob")
    olivia = await connect(p1, "olivia")
    carol = await connect(p2, "carol")
    fiona = await connect(p2, "fiona", "staff")
    viewers = [await connect(p, f"v{i}", "fan") for i, p in enumerate(procs)]

    circle = (await alice.call("circle.create", name="ET9 车主", category="interest"))["conv"]
    for c in (bob, carol):
        await c.call("circle.join", conv=circle)
    dm = (await alice.call("dm.open", user="bob"))["conv"]
    status, reply = await admin_call(p0.admin, "service.provision", {"owner": "olivia", "fellow": "fiona"})  # type: ignore[attr-defined]
    assert status == 200, reply
    group = reply["ok"]["conv"]
    session = (await ceo.call("live.create", cid="day", title="NIO Day 问答", ask_interval_s=0))["session"]
    await ceo.call("live.state", session=session, state="live")
    for v in viewers:
        await v.call("live.join", session=session)
    await asyncio.sleep(0.5)  # every node follows what it must
    start_pos = {c: c.pos for c in (alice, bob, olivia, carol, fiona)}
    for c in (alice, bob, olivia, carol, fiona):
        c.drain_pushes()

    acked: Acked = []
    asked: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(pump(alice, [circle, dm], acked, stop, "alice")),
        loop.create_task(pump(bob, [circle, dm], acked, stop, "bob")),
        loop.create_task(pump(carol, [circle], acked, stop, "carol")),
        loop.create_task(pump(olivia, [group], acked, stop, "olivia")),
        loop.create_task(pump(fiona, [group], acked, stop, "fiona")),
        *(loop.create_task(ask(v, session, asked, stop, f"v{i}")) for i, v in enumerate(viewers)),
    ]
    await eventually(lambda: len(acked) >= 150, 20, 0.02, "the senders did not get going")
    p1.kill9()  # bob, olivia and v1 lose their node mid-stream
    redis_cluster.kill_master(wait=False)  # and a third of the bus fails over meanwhile
    before = len(acked)
    await eventually(lambda: len(acked) >= before + 150, 30, 0.05, "sending stopped after the kills")
    stop.set()
    await asyncio.gather(*tasks)
    await loop.run_in_executor(None, redis_cluster.wait_ok)

    async def bus_up(p: Proc) -> bool:
        status, body = await http_get(p.port, "/healthz")
        return status == 200 and b'"bus":"up"' in body

    for p in (p0, p2):
        await eventually(lambda p=p: bus_up(p), 20, 0.1, "a surviving node's bus did not come back")
        status, metrics = await http_get(p.port, "/metrics")
        # it followed the failover: a new slot map, 3 masters delivering
        values = dict(line.rsplit(" ", 1) for line in metrics.decode().splitlines() if line.startswith("chatd_bus_"))
        assert float(values["chatd_bus_map_changes_total"]) >= 2  # the first map, then the failover's
        assert float(values["chatd_bus_links_up"]) == float(values["chatd_bus_links"]) == 3

    # 1. the store: every acknowledged message once, seqs gapless
    reader = await connect(p2, "fiona", "staff")
    stored: dict[str, list[dict[str, Any]]] = {}
    for conv, member in ((circle, carol), (dm, alice), (group, fiona)):
        msgs = await history_all(member if conv != group else reader, conv)
        assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1)), conv
        cids = [m["cid"] for m in msgs if m["kind"] == "text"]
        assert len(cids) == len(set(cids)), f"a message stored twice in {conv}"
        stored[conv] = msgs
    have = {(conv, m["seq"], m.get("cid")) for conv, msgs in stored.items() for m in msgs}
    lost = [a for a in acked if a not in have]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"

    # 2. clients: on the surviving nodes, live pushes plus catch-up hold every
    # acknowledged message of their conversations; none was pushed twice
    members = {alice: (circle, dm), carol: (circle,), fiona: (group,)}
    for c, convs in members.items():
        got = pushed(c)
        assert len(got) == len(set(got)), f"{c.user}: a message pushed twice"
        synced, _ = await sync_all(c, start_pos[c])
        seen = set(got) | {(m["conv"], m["seq"]) for m in synced}
        missing = [a for a in acked if a[0] in convs and (a[0], a[1]) not in seen]
        assert not missing, f"{c.user} never got {missing[:5]}"
    # those of the killed node reconnect elsewhere and catch up from where they were
    for old, convs in ((bob, (circle, dm)), (olivia, (group,))):
        got = set(pushed(old))
        again = await connect(p0 if old is bob else p2, "bob" if old is bob else "olivia")
        synced, _ = await sync_all(again, start_pos[old])
        seen = got | {(m["conv"], m["seq"]) for m in synced}
        missing = [a for a in acked if a[0] in convs and (a[0], a[1]) not in seen]
        assert not missing, f"{again.user}: after reconnecting, never got {missing[:5]}"

    # 3. the live session: every acknowledged question is there
    queue = await ceo.call("live.queue", session=session, state="open", limit=200)
    ids = {q["id"] for q in queue["questions"]}
    while queue["next"] is not None:
        queue = await ceo.call("live.queue", session=session, state="open", limit=200, after=queue["next"])
        ids |= {q["id"] for q in queue["questions"]}
    assert asked and set(asked) <= ids

    # 4. points: every message earned its award once (the circle's "post", the DM's
    # and the group's "chat", each with its daily cap), and each sender's daily
    # check-in; the balances are the ledger's sums
    db = p0.db
    texts = [m for msgs in stored.values() for m in msgs if m["kind"] == "text"]
    rules = {circle: ("post", 20), dm: ("chat", 5), group: ("chat", 5)}
    want: dict[tuple[str, str], int] = {}
    for conv, msgs in stored.items():
        rule, _ = rules[conv]
        for m in msgs:
            if m["kind"] == "text":
                want[(m["from"], rule)] = want.get((m["from"], rule), 0) + 1

    def settled() -> bool:
        n = read_db(db, "SELECT COUNT(*) FROM ledger WHERE rule IN ('post', 'chat')")[0][0]
        return bool(n >= len(texts))

    await eventually(settled, 30, 0.2, "the points worker did not catch up")
    await asyncio.sleep(0.5)  # nothing more comes
    rows = read_db(db, "SELECT user, rule, COUNT(*), SUM(amount) FROM ledger WHERE rule IN ('post', 'chat') GROUP BY user, rule")
    caps = {"post": 20, "chat": 5}
    assert sorted(rows) == sorted((u, r, n, min(n, caps[r])) for (u, r), n in want.items())
    checkins = read_db(db, "SELECT user, SUM(amount) FROM ledger WHERE rule = 'checkin' GROUP BY user")
    assert sorted(checkins) == [(u, 5) for u in sorted({u for u, _ in want})]
    for currency in ("points", "cv"):
        sums = dict(read_db(db, "SELECT user, SUM(amount) FROM ledger WHERE currency = ? GROUP BY user", (currency,)))
        balances = dict(read_db(db, "SELECT user, amount FROM balances WHERE currency = ?", (currency,)))
        assert {u: v for u, v in balances.items() if v} == {u: v for u, v in sums.items() if v}, currency
