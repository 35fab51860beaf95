"""Real processes, one service: separate ``chatd serve`` processes on one store and
one Redis, and ``chatd serve --workers 2`` (SO_REUSEPORT), killed with -9."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import Reply
from chatdproc import Proc
from redisproc import RedisProc
from support import eventually, free_port, read_db, sync_all, texts, token
from wsclient import WsClient

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for p in made:
        p.stop()


@pytest.fixture
def make_proc(procs: list[Proc], tmp_path: Path, redis_proc: RedisProc) -> Any:
    def make(*args: str) -> Proc:
        p = Proc(
            tmp_path / "chatd.db", free_port(), tmp_path / f"chatd{len(procs)}.log", "--redis-url", redis_proc.url, *args
        )
        procs.append(p)
        p.start()
        return p

    return make


OPEN: list[WsClient] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().close()


async def connect(port: int, user: str, encoding: str = "msgpack", type_: str = "owner", **claims: Any) -> WsClient:
    """An authenticated socket to the process on ``port``, closed after the test."""
    c = await WsClient.connect(f"ws://127.0.0.1:{port}/", encoding)
    OPEN.append(c)
    await c.auth(token(user, type_, **claims))
    return c


async def test_separate_processes_behave_as_one_server_and_survive_kill9(make_proc: Any) -> None:
    p1 = make_proc()
    p2 = make_proc()
    await asyncio.gather(p1.healthy(), p2.healthy())
    alice = await connect(p1.port, "alice")
    bob = await connect(p2.port, "bob")
    carol = await connect(p2.port, "carol", "json")
    conv = (await alice.call("circle.create", name="ET7 owners", category="interest"))["conv"]
    for c in (bob, carol):
        await c.call("circle.join", conv=conv)
    await asyncio.sleep(0.3)
    for c in (alice, bob, carol):
        c.drain_pushes()

    # both processes write the conversation at once
    n = 60
    fa = [alice.start("send", {"conv": conv, "cid": f"a{i}", "text": f"a{i}"}) for i in range(n)]
    fb = [bob.start("send", {"conv": conv, "cid": f"b{i}", "text": f"b{i}"}) for i in range(n)]
    acks = [r.d for r in await asyncio.gather(*fa, *fb) if isinstance(r, Reply)]
    assert len(acks) == 2 * n
    seqs = sorted(a["seq"] for a in acks)
    assert seqs == list(range(seqs[0], seqs[0] + 2 * n))
    for c in (alice, bob, carol):
        assert [m["seq"] for m in await texts(c, conv, 2 * n, wait=10)] == seqs

    # kill -9 the process alice is on while she sends; every ack survives,
    # bob on the other process gets each acked message, alice resyncs elsewhere
    acked: list[dict[str, Any]] = []

    async def keep_sending() -> None:
        i = 0
        while True:
            try:
                r = await alice.request("send", conv=conv, cid=f"k{i}", text=f"k{i}", wait=2)
            except Exception:  # the socket died with its process
                return
            if not isinstance(r, Reply):
                return
            acked.append(r.d)
            i += 1

    sender = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.5)
    p1.kill9()
    await asyncio.wait_for(sender, 5)
    assert acked, "no message was acknowledged before the kill"
    stored = {row[0] for row in read_db(p1.db, "SELECT cid FROM messages WHERE conv = ? AND sender = 'alice'", (conv,))}
    assert {f"k{i}" for i in range(len(acked))} <= stored
    alice2 = await connect(p2.port, "alice")
    msgs, _ = await sync_all(alice2, alice.pos)
    synced = [m["cid"] for m in msgs if m["conv"] == conv and (m.get("cid") or "").startswith("k")]
    # every acked message, in order (a send committed just before the kill may follow unacked)
    assert synced[: len(acked)] == [f"k{i}" for i in range(len(acked))]

    # bob, live on the surviving process, has every acked message in seq order by the
    # conversation's next message at the latest (a publish the killed process never
    # made is a seq gap there, filled from the store)
    last = await alice2.call("send", conv=conv, cid="after-kill", text="back")
    got: list[dict[str, Any]] = []
    while not got or got[-1]["cid"] != "after-kill":
        got += await texts(bob, conv, 1, wait=10)
    cids = [m["cid"] for m in got]
    assert cids[: len(acked)] == [f"k{i}" for i in range(len(acked))]
    assert [m["seq"] for m in got] == list(range(got[0]["seq"], last["seq"] + 1))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


async def test_workers_share_the_port_and_a_killed_worker_is_replaced(make_proc: Any) -> None:
    p = make_proc("--workers", "2")
    await p.healthy()
    assert p.p is not None
    workers = _children(p.p.pid)
    assert len(workers) == 2
    members = [await connect(p.port, f"u{i}") for i in range(12)]
    conv = (await members[0].call("circle.create", name="NIO House Shanghai", category="city"))["conv"]
    for c in members[1:]:
        await c.call("circle.join", conv=conv)
    await asyncio.sleep(0.3)
    for c in members:
        c.drain_pushes()
    acks = [await members[i % 12].call("send", conv=conv, cid=f"w{i}", text=f"w{i}") for i in range(24)]
    for c in members:  # whichever worker each socket landed on
        assert [m["seq"] for m in await texts(c, conv, 24, wait=10)] == [a["seq"] for a in acks]

    os.kill(workers[0], signal.SIGKILL)

    def replaced() -> bool:
        now = _children(p.p.pid)
        return len(now) == 2 and workers[0] not in now

    await eventually(replaced, within=10, every=0.1, what="the supervisor did not replace the killed worker")
    await p.healthy()
    c = await connect(p.port, "late")
    await c.call("circle.join", conv=conv)
    history = await c.call("history", conv=conv, limit=100)
    assert [m["cid"] for m in history["messages"] if m["kind"] == "text"] == [f"w{i}" for i in range(24)]


async def alice_on_p1_watched_by_bob_on_p2(make_proc: Any) -> tuple[Proc, WsClient]:
    """Two processes with a 1.5 s presence lease; bob (on the second) sees alice
    (on the first) online. Returns the first process and bob."""
    p1 = make_proc("--presence-lease", "1.5")
    p2 = make_proc("--presence-lease", "1.5")
    await asyncio.gather(p1.healthy(), p2.healthy())
    bob = await connect(p2.port, "bob")
    await bob.call("presence.sub", users=["alice"])
    await connect(p1.port, "alice")
    while (await bob.next_push(5, "presence")).d["status"] != "online":
        pass
    return p1, bob


async def test_kill9_takes_the_nodes_users_offline_within_the_lease(make_proc: Any) -> None:
    """Lease 1.5 s here (default 15 s: offline within 20 s; a dead node's users must read offline within 30 s)."""
    p1, bob = await alice_on_p1_watched_by_bob_on_p2(make_proc)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    p1.kill9()
    # the dead node may have committed messages it never published: when its
    # lease is reaped, every node resyncs (bob is told to catch up)
    push: dict[str, Any] | None = None
    resynced = False
    while push is None or not resynced:
        got = await bob.next_push(6)
        if got.type == "presence":
            push, took = got.d, loop.time() - t0
        resynced |= got.type == "resync"
    assert push["user"] == "alice" and push["status"] == "offline"
    assert took < 1.5 + 0.5 + 1.0, f"offline after {took:.2f} s"
    assert push["last_seen"] > 0


async def test_a_clean_stop_takes_users_offline_at_once_and_resyncs_nobody(make_proc: Any) -> None:
    """SIGTERM is no death: the node leaves presence itself (its users go offline
    now, not after the lease) and the other nodes are not made to resync."""
    p1, bob = await alice_on_p1_watched_by_bob_on_p2(make_proc)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await loop.run_in_executor(None, p1.stop)
    push = (await bob.next_push(5, "presence")).d
    assert push["user"] == "alice" and push["status"] == "offline"
    assert loop.time() - t0 < 1.5, "offline only when the lease ran out"
    await bob.no_push(1.5 * 2 + 1.0, "resync")  # past the lease: nobody reaped p1
