"""The store contract (chatd/store/base.py): the same checks on every engine,
through the repository interfaces only (no SQL, no engine internals)."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import Err, RequestError
from storekit import AUTHOR, KINDS, TS, concurrent_sends, join, new_circle, one, seqs, text

from chatd.points import Award
from chatd.points.split import split_amounts
from chatd.store import Store, StoreUnavailable, Write
from chatd.store.records import Appended, HookFailure

CIRCLE = KINDS.circle
DM = KINDS.dm


def recall_check(window_ms: int = 120_000) -> Any:
    return functools.partial(CIRCLE.check_recall, window_ms)


# -- messages: seq, pos, idempotency (invariants 1-6) ---------------------------


async def test_group_commit_many_ops_one_batch(store: Store) -> None:
    conv = await new_circle(store)
    results, head = await store.run_batch([text(store, conv, f"u{i % 7}", f"cid-{i}", f"m{i}") for i in range(500)])
    assert all(isinstance(r, Appended) for r in results)
    assert [r.seq for r in results] == list(range(2, 502))
    positions = [r.pos for r in results]
    assert positions == sorted(positions) and len(set(positions)) == 500
    assert head == positions[-1] == await store.messages.head()
    msgs, more = await store.messages.history(conv, None, 50)  # the newest page, oldest first
    assert more and [m["seq"] for m in msgs] == list(range(452, 502))
    older, more = await store.messages.history(conv, 452, 100)
    assert more and [m["seq"] for m in older] == list(range(352, 452))


async def test_refused_writes_leave_no_gap(store: Store) -> None:
    conv = await new_circle(store)
    results, _ = await store.run_batch(
        [
            text(store, conv, "alice", "a1"),
            text(store, "c:404", "alice", "x1"),  # no such conversation
            text(store, conv, "alice", "a2"),
            join(store, "c:999", "bob"),  # not_found
            join(store, conv, "bob"),
            join(store, conv, "bob"),  # conflict: already a member
            text(store, conv, "bob", "b1"),
        ]
    )
    assert isinstance(results[1], RequestError) and results[1].code == Err.NOT_FOUND
    assert isinstance(results[3], RequestError) and results[3].code == Err.NOT_FOUND
    assert isinstance(results[5], RequestError) and results[5].code == Err.CONFLICT
    assert (results[0].seq, results[2].seq, results[4][1].msg["seq"], results[6].seq) == (2, 3, 4, 5)
    assert await seqs(store, conv) == [1, 2, 3, 4, 5]
    assert await store.messages.find("alice", "x1") is None


async def test_seq_gapless_and_pos_in_commit_order_under_concurrent_submits(store: Store) -> None:
    a, b, results, head = await concurrent_sends(store)
    for conv in (a, b):
        got = sorted(r.seq for r in results if r.conv == conv)
        assert got == list(range(2, len(got) + 2))
    positions = [r.pos for r in results]  # futures resolve with pos strictly increasing in submit order
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert head == max(positions) == await store.messages.head()


async def test_idempotent_append(store: Store) -> None:
    conv = await new_circle(store)
    first = await one(store, text(store, conv, "alice", "same", "original"))
    assert not first.dup
    again = await one(store, text(store, conv, "alice", "same", "changed text"))
    assert again.dup and (again.conv, again.seq, again.pos, again.ts) == (first.conv, first.seq, first.pos, first.ts)
    # within one batch too, and a dup does not consume a seq
    results, _ = await store.run_batch(
        [text(store, conv, "alice", "twice"), text(store, conv, "alice", "twice"), text(store, conv, "alice", "after")]
    )
    assert [r.dup for r in results] == [False, True, False]
    assert results[0].seq == results[1].seq and results[2].seq == results[0].seq + 1
    other = await one(store, text(store, conv, "bob", "same"))  # another sender's cid is another message
    assert not other.dup
    assert await seqs(store, conv) == list(range(1, other.seq + 1))
    msgs, _ = await store.messages.history(conv, None, 100)
    assert [m.get("text") for m in msgs if m.get("cid") == "same"] == ["original", "hi"]
    assert await store.messages.find("alice", "same") == Appended(conv, first.seq, first.pos, first.ts, True)


async def test_idempotency_survives_a_reopen(engine: Callable[[Path, str], Store], tmp_path: Path) -> None:
    s = engine(tmp_path, "reopen.db")
    await s.open()
    conv = await new_circle(s)
    first = await one(s, text(s, conv, "alice", "k"))
    await s.close()
    s = engine(tmp_path, "reopen.db")
    await s.open()
    try:
        again = await one(s, text(s, conv, "alice", "k"))
        assert again.dup and again.seq == first.seq
        assert await seqs(s, conv) == [1, 2]
    finally:
        await s.close()


async def test_recall_wipes_the_content_and_keeps_the_seq(store: Store) -> None:
    conv = await new_circle(store)
    sent = await one(store, text(store, conv, "alice", "r1", "my plate number ABC123"))
    later = await one(store, text(store, conv, "alice", "r2", "still here"))
    event = await one(store, store.messages.recall(conv, sent.seq, "alice", AUTHOR, TS + 1000, recall_check()))
    assert event.msg["event"] == {"type": "recall", "seq": sent.seq} and event.msg["seq"] == later.seq + 1
    by_seq = {m["seq"]: m for m in (await store.messages.history(conv, None, 100))[0]}
    assert sorted(by_seq) == list(range(1, event.msg["seq"] + 1))
    assert by_seq[sent.seq]["recalled"] is True and "text" not in by_seq[sent.seq]
    assert by_seq[sent.seq]["author"] == AUTHOR and by_seq[later.seq]["text"] == "still here"
    (again,), _ = await store.run_batch(
        [store.messages.recall(conv, sent.seq, "alice", AUTHOR, TS, recall_check())]
    )
    assert isinstance(again, RequestError) and again.code == Err.CONFLICT
    await one(store, join(store, conv, "bob"))
    late = await one(store, text(store, conv, "bob", "r3", "old news"))
    (refused,), _ = await store.run_batch(  # a member's own message, past the window
        [store.messages.recall(conv, late.seq, "bob", AUTHOR, TS + 121_000, recall_check())]
    )
    assert isinstance(refused, RequestError) and refused.code == Err.RECALL_WINDOW
    (others,), _ = await store.run_batch([store.messages.recall(conv, later.seq, "bob", AUTHOR, TS, recall_check())])
    assert isinstance(others, RequestError) and others.code == Err.FORBIDDEN  # someone else's
    assert (await seqs(store, conv))[-1] == late.seq  # the refusals appended nothing
    admin = await one(store, store.messages.recall(conv, late.seq, "alice", AUTHOR, TS + 10**9, recall_check()))
    assert admin.msg["event"]["seq"] == late.seq  # an admin recalls any message, any time


async def test_replies_see_the_batch_counters(store: Store) -> None:
    rec, created = await one(
        store, store.conversations.create(CIRCLE.name, CIRCLE.prefix, "alice", AUTHOR, "n", {"category": "city"}, TS)
    )
    assert created.msg["seq"] == rec.last_seq == 1
    rec2, joined, _ = await one(store, join(store, rec.conv, "bob"))
    assert rec2.last_seq == joined.msg["seq"] == 2 and rec2.members == 2


async def test_since_answers_the_same_from_every_position_whichever_way_it_reads(store: Store) -> None:
    """A user in several conversations, messages before and after their joins: from
    every position, ``since`` returns exactly the messages past it in the user's
    conversations (from each join on) and the conversations that changed. Close to
    the head it reads the few new messages, further back the memberships."""
    rng = random.Random(11)
    convs = [await new_circle(store, name=f"c{i}") for i in range(8)]
    joined: dict[str, int] = {}
    for step in range(60):
        conv = rng.choice(convs)
        if conv not in joined and rng.random() < 0.3 and conv != convs[0]:
            _, event, _ = await one(store, join(store, conv, "bob"))
            joined[conv] = event.msg["seq"]
        else:
            await one(store, text(store, conv, "alice", f"m{step}"))
    head = await store.messages.head()
    everything = [m for c in convs for m in (await store.messages.history(c, None, 100))[0]]
    for since in range(head + 1):
        msgs, cursors, more = await store.messages.since("bob", since, 1000)
        want = sorted((m for m in everything if m["pos"] > since and m["conv"] in joined
                       and m["seq"] >= joined[m["conv"]]), key=lambda m: m["pos"])
        assert [(m["conv"], m["seq"], m["pos"]) for m in msgs] == [(m["conv"], m["seq"], m["pos"]) for m in want]
        changed = {m["conv"] for m in everything if m["pos"] > since and m["conv"] in joined}
        assert {c.conv for c in cursors} == changed and not more, since


async def test_since_returns_what_changed_after_a_position_from_each_join(store: Store) -> None:
    a = await new_circle(store, name="a")
    b = await new_circle(store, name="b")
    await one(store, text(store, a, "alice", "before-bob"))
    await one(store, join(store, a, "bob"))
    await one(store, join(store, b, "bob"))
    pos = await store.messages.head()
    m1 = await one(store, text(store, a, "alice", "after-1"))
    m2 = await one(store, text(store, a, "alice", "after-2"))
    msgs, cursors, more = await store.messages.since("bob", pos, 100)
    assert [(m["conv"], m["seq"]) for m in msgs] == [(a, m1.seq), (a, m2.seq)] and not more
    assert [c.conv for c in cursors] == [a]  # b did not change: not listed
    full, _, _ = await store.messages.since("bob", 0, 100)
    assert "before-bob" not in {m.get("cid") for m in full}  # sync starts at one's join
    page, _, more = await store.messages.since("bob", pos, 1)
    assert len(page) == 1 and more
    assert [m["seq"] for m in await store.messages.between(a, 1, m2.seq)] == list(range(2, m2.seq))


async def test_no_committed_message_is_missed_by_a_reader_following_pos(
    engine: Callable[[Path, str], Store], tmp_path: Path
) -> None:
    """Four stores on one database (four processes, each its own connections)
    write concurrently into three shared circles, texts mixed with joins (which
    write the conversation rows the texts' counters live in), while a reader
    follows ``pos`` the way sync and the points worker do: every committed message
    is seen exactly once, in pos order (invariant 2), and each circle's seqs are
    gapless with pos rising with seq (invariants 1 and 3)."""
    writers = [engine(tmp_path, "shared.db") for _ in range(4)]
    reader = engine(tmp_path, "shared.db")
    for s in (*writers, reader):
        await s.open()
    try:
        convs = [await new_circle(writers[0], name=f"c{i}") for i in range(3)]
        done = asyncio.Event()
        seen: list[int] = []

        async def follow() -> None:
            cursor = 0
            while True:
                finished = done.is_set()  # before the read: a read that began earlier may miss the last commits
                rows = await reader.outbox.messages_after(cursor, 100)
                seen.extend(r.pos for r in rows)
                if rows:
                    cursor = rows[-1].pos
                elif finished:
                    return
                await asyncio.sleep(0)

        async def write(w: int) -> list[int]:
            s = writers[w]
            out = []
            for batch in range(15):
                ops: list[Write[Any]] = [
                    text(s, convs[(w + batch + i) % 3], f"w{w}", f"w{w}.{batch}.{i}") for i in range(8)
                ]
                ops.insert(4, join(s, convs[(w + batch) % 3], f"j{w}.{batch}"))
                results, _ = await s.run_batch(ops)
                for r in results:
                    assert not isinstance(r, BaseException), r
                    out.append(r.pos if isinstance(r, Appended) else r[1].msg["pos"])
            return out

        follower = asyncio.create_task(follow())
        written = await asyncio.gather(*(write(w) for w in range(4)))
        done.set()
        await asyncio.wait_for(follower, 30)
        committed = sorted(p for ps in written for p in ps)
        assert len(committed) == 4 * 15 * 9
        assert [p for p in seen if p in set(committed)] == committed
        assert seen == sorted(seen) and len(seen) == len(set(seen))
        total = 0
        for conv in convs:
            every = await reader.messages.between(conv, 0, 10**9)
            assert [m["seq"] for m in every] == list(range(1, len(every) + 1))  # gapless
            assert [m["pos"] for m in every] == sorted(m["pos"] for m in every)  # pos rises with seq
            total += len(every) - 1  # the circle's creation message
        assert total == len(committed)
    finally:
        for s in (*writers, reader):
            await s.close()


async def test_a_closed_store_is_unavailable(engine: Callable[[Path, str], Store], tmp_path: Path) -> None:
    s = engine(tmp_path, "closed.db")
    await s.open()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.run_batch([text(s, "c:1", "alice", "x")])
    with pytest.raises(StoreUnavailable):
        await s.messages.head()


# -- conversations, members, blocks -------------------------------------------


async def test_membership_roles_and_read_cursors(store: Store) -> None:
    conv = await new_circle(store)
    await one(store, join(store, conv, "bob"))
    assert set(await store.members.convs_of("bob")) == {conv}
    assert await store.members.joined_seq(conv, "alice") == 1  # the circle's creation is seq 1
    assert await store.members.joined_seq(conv, "bob") == 2  # bob's join event
    assert await store.members.joined_seq(conv, "eve") is None
    snap = await store.conversations.load(conv)
    assert snap is not None and snap.kind == CIRCLE.name and snap.members == {"alice": "owner", "bob": "member"}
    role_check = functools.partial(CIRCLE.check_role_change, conv, "bob")
    await one(store, store.members.set_role(conv, "alice", AUTHOR, "bob", "admin", TS, role_check))
    mute_check = functools.partial(CIRCLE.check_mute, conv, "bob")
    (refused,), _ = await store.run_batch([store.members.mute(conv, "alice", AUTHOR, "bob", TS + 1, TS, mute_check)])
    assert isinstance(refused, RequestError) and refused.code == Err.FORBIDDEN  # admins cannot be muted
    last = await one(store, text(store, conv, "alice", "m"))
    assert await one(store, store.members.mark_read(conv, "bob", 10**9)) == (last.seq, 0, True)  # never past the end
    assert await one(store, store.members.mark_read(conv, "bob", 1)) == (last.seq, 0, False)  # never back
    (outsider,), _ = await store.run_batch([store.members.mark_read(conv, "eve", 1)])
    assert isinstance(outsider, RequestError) and outsider.code == Err.NOT_MEMBER
    leave_check = functools.partial(CIRCLE.check_leave, conv)
    (owner_leaves,), _ = await store.run_batch([store.members.leave(conv, "alice", AUTHOR, TS, leave_check)])
    assert isinstance(owner_leaves, RequestError) and owner_leaves.code == Err.CONFLICT
    await one(store, store.members.leave(conv, "bob", AUTHOR, TS, leave_check))
    assert await store.members.convs_of("bob") == []
    page, nxt = await store.members.page(conv, None, 10)
    assert [m["user"] for m in page] == ["alice"] and nxt is None
    rec = await store.conversations.get(conv)
    assert rec is not None and rec.members == 1


async def test_direct_conversations_and_blocks(store: Store) -> None:
    conv = DM.conv_id("alice", "bob")
    rec = await one(store, store.conversations.open_dm(conv, DM.name, "alice", "bob", TS))
    again = await one(store, store.conversations.open_dm(conv, DM.name, "bob", "alice", TS))
    assert rec == again and rec.kind == DM.name and rec.members == 2
    await one(store, store.blocks.set("bob", "alice", True))
    assert await store.blocks.between("alice", "bob") and await store.blocks.between("bob", "alice")
    other = DM.conv_id("alice", "carol")
    await one(store, store.blocks.set("carol", "alice", True))
    (blocked,), _ = await store.run_batch([store.conversations.open_dm(other, DM.name, "alice", "carol", TS)])
    assert isinstance(blocked, RequestError) and blocked.code == Err.BLOCKED
    await one(store, store.blocks.set("bob", "alice", False))
    assert not await store.blocks.between("alice", "bob")
    views, _ = await store.members.view("alice", None, 10)
    assert [v.record.conv for v in views] == [conv]


async def test_listing_pages_by_id(store: Store) -> None:
    convs = [await new_circle(store, name=f"c{i}") for i in range(5)]
    page, nxt = await store.conversations.listing(CIRCLE.name, "city", None, 3)
    assert [r.conv for r in page] == sorted(convs)[:3] and nxt == page[-1].conv
    rest, nxt2 = await store.conversations.listing(CIRCLE.name, None, nxt, 3)
    assert [r.conv for r in rest] == sorted(convs)[3:] and nxt2 is None
    assert (await store.conversations.listing(CIRCLE.name, "family", None, 3)) == ([], None)


# -- ledger: conservation (invariant 8) -----------------------------------------


async def fund(store: Store, user: str, amount: int) -> None:
    await one(store, store.ledger.apply_awards([Award(user, "points", amount, "grant", f"grant:{user}")], TS))


async def test_awards_apply_once_per_key_with_daily_caps(store: Store) -> None:
    award = Award("alice", "points", 5, "post", "post:1", daily_cap=1, day="2026-12-01")
    assert len(await one(store, store.ledger.apply_awards([award, award], TS))) == 1  # same key twice: once
    assert await one(store, store.ledger.apply_awards([award], TS)) == []  # a retry applies nothing
    second = Award("alice", "points", 5, "post", "post:2", daily_cap=1, day="2026-12-01")
    capped = await one(store, store.ledger.apply_awards([second], TS))
    assert [(e.amount, e.note) for e in capped] == [(0, "daily cap 1 reached")]
    assert await store.ledger.balance("alice") == {"points": 5, "cv": 0}
    entries, _ = await store.ledger.recent("alice", None, 10)
    assert [e["key"] for e in entries] == ["post:2", "post:1"]


async def test_tips_and_red_packets_conserve_points(store: Store) -> None:
    conv = await new_circle(store)
    for user in ("bob", "carol"):
        await one(store, join(store, conv, user))
    await fund(store, "alice", 100)
    msg = await one(store, text(store, conv, "bob", "tip-me"))
    tip = await one(store, store.ledger.tip("alice", "t1", conv, msg.seq, 30, TS))
    assert tip == {"to": "bob", "amount": 30, "dup": False}
    assert (await one(store, store.ledger.tip("alice", "t1", conv, msg.seq, 30, TS)))["dup"] is True
    (broke,), _ = await store.run_batch([store.ledger.tip("carol", "t2", conv, msg.seq, 1, TS)])
    assert isinstance(broke, RequestError) and broke.code == Err.INSUFFICIENT
    amounts = functools.partial(split_amounts, 50, 2, "equal", random.Random(1))
    out, event = await one(
        store, store.ledger.send_red_packet("alice", AUTHOR, "r1", conv, 50, 2, "equal", amounts, TS, 60_000)
    )
    assert event is not None and event.msg["event"]["id"] == out["id"]
    assert (await one(store, store.ledger.claim_red_packet("bob", out["id"], TS)))["amount"] == 25
    assert (await one(store, store.ledger.claim_red_packet("bob", out["id"], TS)))["dup"] is True
    (outsider,), _ = await store.run_batch([store.ledger.claim_red_packet("eve", out["id"], TS)])
    assert isinstance(outsider, RequestError) and outsider.code == Err.NOT_MEMBER
    refunds = await one(store, store.ledger.expire_red_packets(TS + 60_000))
    assert refunds["alice"]["entries"][0]["amount"] == 25
    (late,), _ = await store.run_batch([store.ledger.claim_red_packet("carol", out["id"], TS + 61_000)])
    assert isinstance(late, RequestError) and late.code == Err.CONFLICT
    total = 0
    for u in ("alice", "bob", "carol"):
        total += (await store.ledger.balance(u))["points"]
    assert total == 100  # every point that was awarded, no more, no less
    top = await store.ledger.leaderboard(5)
    assert top == []  # no contribution value awarded


# -- outbox and cursors (invariant 7) -------------------------------------------


async def test_outbox_events_and_consumer_cursors(store: Store) -> None:
    await one(store, store.outbox.init_cursors(["h"]))
    start = await store.outbox.cursors("h")
    conv = await new_circle(store)
    await one(store, join(store, conv, "bob"))
    await one(store, text(store, conv, "bob", "m"))
    await fund(store, "bob", 10)
    rows = await store.outbox.messages_after(start["messages"], 100)
    kinds = [(r.seq, r.text, (r.event or {}).get("type")) for r in rows]
    assert kinds == [(1, False, "created"), (2, False, "join"), (3, True, None)]
    assert all(r.conv_kind == CIRCLE.name for r in rows)
    msg = await one(store, text(store, conv, "alice", "tip-me"))
    await one(store, store.ledger.tip("bob", "t", conv, msg.seq, 1, TS))
    events = await store.outbox.events_after(start["events"], 100)
    assert [(e.kind, e.key, e.user) for e in events] == [("tip.sent", "tip:bob:t", "bob")]
    award = Award("bob", "cv", 2, "post", "post:x")
    cursors = {"messages": rows[-1].pos, "events": events[-1].id}
    pushes = await one(store, store.outbox.commit("h", [award], cursors, TS, HookFailure("k", 10, "boom")))
    assert pushes["bob"]["balance"]["cv"] == 2
    assert await store.outbox.cursors("h") == cursors
    again = await one(store, store.outbox.commit("h", [award], cursors, TS, None))
    assert again == {} and (await store.ledger.balance("bob"))["cv"] == 2  # exactly once
    await one(store, store.outbox.init_cursors(["h", "late"]))
    assert await store.outbox.cursors("h") == cursors  # a known consumer keeps its place
    late = await store.outbox.cursors("late")
    assert late["messages"] == await store.messages.head()  # a new one starts at the head


# -- leases (invariant 9) ---------------------------------------------------------


async def test_a_lease_has_one_holder(store: Store) -> None:
    assert await one(store, store.leases.take("job", "n1", TS, 10_000)) == (True, TS + 10_000)
    assert await one(store, store.leases.take("job", "n2", TS + 1, 10_000)) == (False, TS + 10_000)
    assert await one(store, store.leases.take("job", "n1", TS + 5_000, 10_000)) == (True, TS + 15_000)
    assert (await one(store, store.leases.take("job", "n2", TS + 15_001, 10_000)))[0]  # ran out: taken over
    assert not (await one(store, store.leases.take("job", "n1", TS + 15_002, 10_000)))[0]


# -- users and quotas (invariant 10) ----------------------------------------------


async def test_users_seen_and_dms_to_known_users_only(store: Store) -> None:
    assert not await store.users.known("bob")
    conv = DM.conv_id("alice", "bob")
    (refused,), _ = await store.run_batch([store.conversations.open_dm(conv, DM.name, "alice", "bob", TS, True)])
    assert isinstance(refused, RequestError) and refused.code == Err.NOT_FOUND
    await one(store, store.users.seen("bob", "owner", "Bob", TS))
    await one(store, store.users.seen("bob", "owner", "Bobby", TS + 1))  # idempotent; the profile follows
    assert await store.users.known("bob")
    assert (await one(store, store.conversations.open_dm(conv, DM.name, "alice", "bob", TS, True))).conv == conv


async def test_a_revocation_only_moves_forward(store: Store) -> None:
    assert await store.users.sign_outs("alice") == (0, 0)
    assert await one(store, store.users.revoke("alice", 1_000)) == 1_000
    assert await one(store, store.users.revoke("alice", 500)) == 1_000  # an earlier time undoes nothing
    assert await one(store, store.users.revoke("alice", 2_000)) == 2_000
    assert await one(store, store.users.kick("alice", 9_000)) == 9_000
    assert await one(store, store.users.kick("alice", 8_000)) == 9_000
    assert await store.users.sign_outs("alice") == (2_000, 9_000)
    assert await store.users.sign_outs("bob") == (0, 0)
    assert await one(store, store.users.kick("bob", 5)) == 5
    assert await store.users.sign_outs("bob") == (0, 5)


async def test_a_quota_counts_per_window(store: Store) -> None:
    from chatd.store.records import Quota

    quota = Quota("fan", "circles", 2, 3_600_000)

    def create(ts: int) -> Any:
        return store.conversations.create(CIRCLE.name, CIRCLE.prefix, "fan", AUTHOR, "n", {"category": "city"}, ts, quota)

    start = TS - TS % 3_600_000
    await one(store, create(start + 1))
    await one(store, create(start + 2))
    (over,), _ = await store.run_batch([create(start + 3)])
    assert isinstance(over, RequestError) and over.code == Err.RATE_LIMITED
    assert over.retry_after_ms == 3_600_000 - 3
    assert (await one(store, create(start + 3_600_000)))[0].owner == "fan"  # a new window
    listed, _ = await store.conversations.listing(CIRCLE.name, None, None, 10)
    assert len(listed) == 3


async def test_a_read_started_after_a_commit_sees_it_while_other_reads_run(store: Store) -> None:
    """Invariant 6 under concurrent reads: a read issued once a batch committed sees
    the batch, whatever other reads are in flight (a read that joined an older
    read's snapshot made sync answer a position past messages it had not returned)."""
    conv = await new_circle(store)
    stop = False
    stale: list[tuple[int, int]] = []

    async def reader() -> None:
        while not stop:
            await store.messages.history(conv, None, 100)
            await store.messages.head()

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    try:
        for i in range(150):
            (ack,), _ = await store.run_batch([text(store, conv, "alice", f"m{i}")])
            assert isinstance(ack, Appended)
            seen = await store.messages.head()
            if seen < ack.pos:
                stale.append((ack.pos, seen))
            msgs, _, _ = await store.messages.since("alice", ack.pos - 1, 10)
            if not any(m["pos"] == ack.pos for m in msgs):
                stale.append((ack.pos, -1))
    finally:
        stop = True
        await asyncio.gather(*readers)
    assert not stale, f"reads after a commit that did not see it (pos, seen): {stale[:10]} of {len(stale)}"
