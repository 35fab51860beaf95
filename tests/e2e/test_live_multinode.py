"""Live sessions on two chatd processes (two servers in this process) sharing one
SQLite file and a real redis-server: votes from many sockets on both, the
lifecycle, the answer and the chat crossing the bus, viewer counts summed over both,
and a bus loss that the sessions recover from. The servers' clock is a FakeClock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import FakeClock, eventually, read_db


async def pushes_of(c: Any, kind: str, wait: float = 0.3) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            p = await c.next_push(wait, kind)
        except TimeoutError:
            return out
        out.append(p.d)


@pytest.fixture
async def nodes(redis_proc: Any, make_server: Any, fake_clock: FakeClock) -> tuple[Any, Any]:
    """Two servers on one Redis (set up after it, so stopped before it)."""
    kw = {"clock": fake_clock, "redis_url": redis_proc.url, "send_rate": 1e4, "send_burst": 10_000}
    a = await make_server(admin_port=0, **kw)
    b = await make_server(**kw)
    return a, b


async def test_votes_from_many_sockets_on_two_processes_count_once_and_rank_exactly(
    nodes: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    a, b = nodes
    host = await clients(a, "ceo", "staff", roles=["exec"])
    sid = (await host.call("live.create", cid="s", title="NIO Day", ask_interval_s=0))["session"]
    await host.call("live.state", session=sid, state="live")
    askers = [await clients(a if i % 2 else b, f"asker{i}", "owner") for i in range(4)]
    ids = [(await c.call("live.ask", session=sid, cid="q", text=f"问题 {i}"))["question"]["id"]
           for i, c in enumerate(askers)]
    on_a = await clients(a, "view.a", "fan")
    on_b = await clients(b, "view.b", "fan")
    views = {}
    for c in (on_a, on_b):
        snap = await c.call("live.join", session=sid)
        views[c] = {q["id"]: q["votes"] for q in snap["questions"]}
    # 16 voters, half on each process, each on two sockets (one per process): every
    # voter votes for every question from both sockets at once, then withdraws one
    voters = []
    for i in range(16):
        voters.append((await clients(a, f"v{i}", "fan"), await clients(b, f"v{i}", "fan")))
    await asyncio.gather(*(s.call("live.vote", session=sid, id=q) for pair in voters for s in pair for q in ids))
    await asyncio.gather(*(
        pair[i % 2].call("live.vote", session=sid, id=ids[i % 4], on=False) for i, pair in enumerate(voters)
    ))
    stored = dict(read_db(db_path, "SELECT id, votes FROM live_questions WHERE session = ?", (sid,)))
    rows = dict(read_db(db_path, "SELECT question, COUNT(*) FROM live_votes GROUP BY question"))
    assert stored == rows == {q: 16 - 4 for q in ids}  # four voters withdrew from each question
    for c, view in views.items():
        got: list[dict[str, Any]] = []
        for _ in range(8):
            fake_clock.advance(0.25)
            got += await pushes_of(c, "live.rank", 0.15)
        assert got and len(got) <= 8  # at most 4 a second
        for push in got:
            view.update(dict(push["votes"]))
        assert view == stored, (c.user, got)


async def test_the_lifecycle_answer_chat_and_counts_cross_processes(
    nodes: Any, clients: Any, fake_clock: FakeClock
) -> None:
    a, b = nodes
    host = await clients(a, "ceo", "staff", roles=["exec"])
    follower = await clients(b, "fan1", "fan")
    sid = (await host.call("live.create", cid="s", title="用户面对面", moderators=["mod"]))["session"]
    await follower.call("live.follow", session=sid)
    await host.call("live.state", session=sid, state="live")
    assert (await follower.next_push(kind="live.started")).d["session"] == sid  # across the bus
    viewers_b = [await clients(b, f"vb{i}", "fan") for i in range(3)]
    viewers_a = [await clients(a, f"va{i}", "fan") for i in range(2)]
    for c in viewers_a + viewers_b:
        await c.call("live.join", session=sid)
    mod = await clients(b, "mod", "staff")
    await mod.call("live.join", session=sid)
    # the count is the sum over both processes, pushed to the viewers of each
    for _ in range(3):
        fake_clock.advance(1.0)
        await asyncio.sleep(0.1)
    for c in (viewers_a[0], viewers_b[0]):
        counts = [p["viewers"] for p in await pushes_of(c, "live.viewers")]
        assert counts and counts[-1] == 6, (c.user, counts)
    # a question asked on b, answered on a: every viewer on both hears it at once
    asker = await clients(b, "olivia", "owner")
    q = (await asker.call("live.ask", session=sid, cid="q1", text="换电站?", anonymous=False))["question"]
    await host.call("live.answer", session=sid, id=q["id"], text="明年")
    for c in viewers_a + viewers_b:
        pushes = await pushes_of(c, "live.question")
        assert [p["state"] for p in pushes] == ["open", "answered"], (c.user, pushes)
    staff = await pushes_of(mod, "live.mod")
    assert [p["asker"] for p in staff] == ["olivia", "olivia"]
    # a chat line on b reaches the room's viewers on a
    await viewers_b[0].call("live.chat", session=sid, cid="l1", text="大家好")
    line = await viewers_a[0].next_push(kind="msg")
    assert line.d["text"] == "大家好" and line.d["conv"] == f"{sid}.main"
    # the session ends on b: the viewers on a are told
    await mod.fail("live.state", "forbidden", session=sid, state="ended")
    status = await host.call("live.state", session=sid, state="ended")
    assert status["changed"]
    told = await viewers_b[1].next_push(kind="live.session")
    assert told.d["state"] == "ended"
    arch = await viewers_a[1].call("live.archive", session=sid)
    assert arch["figures"]["peak_viewers"] == 6 and [x["answer"] for x in arch["answered"]] == ["明年"]


async def test_after_a_bus_loss_each_process_reloads_its_sessions(
    nodes: Any, clients: Any, fake_clock: FakeClock
) -> None:
    a, b = nodes
    host = await clients(a, "ceo", "staff", roles=["exec"])
    sid = (await host.call("live.create", cid="s", title="t", ask_interval_s=0))["session"]
    await host.call("live.state", session=sid, state="live")
    asker = await clients(a, "olivia", "owner")
    q = (await asker.call("live.ask", session=sid, cid="q1", text="?"))["question"]
    viewer = await clients(b, "viewer", "fan")
    await viewer.call("live.join", session=sid)
    # b misses envelopes: its state listener is bypassed while votes go in on a
    listener, b.fanout.state_listener = b.fanout.state_listener, None
    voters = [await clients(a, f"v{i}", "fan") for i in range(5)]
    for v in voters:
        await v.call("live.vote", session=sid, id=q["id"])
    assert b.live.rooms[sid].open[q["id"]]["votes"] == 0
    b.fanout.state_listener = listener
    b.fanout.bus_reset()  # what a lost envelope leads to
    await eventually(lambda: b.live.rooms[sid].open[q["id"]]["votes"] == 5)
    fake_clock.advance(0.25)
    await asyncio.sleep(0.3)
    pushes = viewer.drain_pushes()
    assert {"reason": "bus"} in [p.d for p in pushes if p.type == "resync"]  # the app rejoins on it
    ranks = [p.d for p in pushes if p.type == "live.rank"]
    assert ranks and dict(ranks[-1]["votes"])[q["id"]] == 5
