"""The SQLite store on a real file: migrations, group commit, savepoints, seq, idempotency, recall."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chatd_protocol import Err, RequestError
from support import read_db

from chatd.metrics import Metrics
from chatd.output import Output
from chatd.pipeline import Pipeline
from chatd.store import Store, StoreUnavailable, messages
from chatd.store import conversations as convs
from chatd.store.engine import Tx, write_op
from chatd.store.schema import MIGRATIONS, migrate

AUTHOR = {"name": "Alice", "type": "owner", "badges": [], "roles": []}
TS = 1_763_900_000_000


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = Store(str(db_path), sync="normal")
    await s.open()
    yield s
    await s.close()


def text_op(conv: str, sender: str, cid: str | None, text: str = "hi", ts: int = TS) -> Any:
    return write_op(
        messages.append,
        conv=conv,
        sender=sender,
        cid=cid,
        ts=ts,
        kind=messages.TEXT,
        data=messages.pack({"a": AUTHOR, "t": text}),
        savepoint=False,
    )


async def one(store: Store, op: Any) -> Any:
    (result,), _ = await store.run_batch([op])
    if isinstance(result, BaseException):
        raise result
    return result


async def new_circle(store: Store, owner: str = "alice") -> str:
    info, _ = await one(
        store,
        write_op(
            convs.create_circle,
            owner=owner,
            author=AUTHOR,
            name="EV owners",
            category="city",
            description="",
            certified=False,
            ts=TS,
        ),
    )
    return str(info["conv"])


def seqs(db: Path, conv: str) -> list[int]:
    return [r[0] for r in read_db(db, "SELECT seq FROM messages WHERE conv = ? ORDER BY seq", (conv,))]


async def test_migrations_idempotent_on_reopen(db_path: Path) -> None:
    s = Store(str(db_path))
    await s.open()
    conv = await new_circle(s)
    await one(s, text_op(conv, "alice", "m1"))
    await s.close()
    assert read_db(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    for _ in range(2):  # reopening applies nothing twice and keeps the data
        s = Store(str(db_path))
        await s.open()
        await s.close()
    assert read_db(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert seqs(db_path, conv) == [1, 2]
    conn = sqlite3.connect(str(db_path))
    try:
        assert migrate(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)
    finally:
        conn.close()
    assert read_db(db_path, "SELECT value FROM counters WHERE name = 'circle'") == [(1,)]


async def test_wal_mode(store: Store, db_path: Path) -> None:
    assert read_db(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_group_commit_many_ops_one_batch(store: Store, db_path: Path) -> None:
    conv = await new_circle(store)
    ops = [text_op(conv, f"u{i % 7}", f"cid-{i}", f"m{i}") for i in range(500)]
    results, head = await store.run_batch(ops)
    assert all(not isinstance(r, BaseException) for r in results)
    assert [r.seq for r in results] == list(range(2, 502))
    positions = [r.pos for r in results]
    assert positions == sorted(positions) and len(set(positions)) == 500
    assert head == positions[-1]
    assert seqs(db_path, conv) == list(range(1, 502))
    assert read_db(db_path, "SELECT last_seq, last_pos FROM conversations WHERE id = ?", (conv,)) == [(501, head)]


async def test_refused_op_rolls_back_alone(store: Store, db_path: Path) -> None:
    conv = await new_circle(store)

    def half_then_refuse(tx: Tx) -> None:
        # writes something, then refuses: its savepoint must undo the write
        messages.append(tx, conv, "mallory", "evil", TS, messages.TEXT, messages.pack({"a": AUTHOR, "t": "x"}))
        tx.execute("UPDATE conversations SET name = 'hacked' WHERE id = ?", (conv,))
        raise RequestError(Err.FORBIDDEN, "no")

    ops = [
        text_op(conv, "alice", "a1"),
        write_op(half_then_refuse),
        text_op(conv, "alice", "a2"),
        write_op(convs.join, conv="c:999", user="bob", author=AUTHOR, ts=TS),  # not_found
        write_op(convs.join, conv=conv, user="bob", author=AUTHOR, ts=TS),
        text_op(conv, "bob", "b1"),
    ]
    results, _ = await store.run_batch(ops)
    assert isinstance(results[1], RequestError) and results[1].code == Err.FORBIDDEN
    assert isinstance(results[3], RequestError) and results[3].code == Err.NOT_FOUND
    assert results[0].seq == 2 and results[2].seq == 3
    _, join_event = results[4]
    assert join_event.msg["seq"] == 4
    assert results[5].seq == 5
    assert seqs(db_path, conv) == [1, 2, 3, 4, 5]  # gapless: the refused op's seq was reused
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE sender = 'mallory'") == [(0,)]
    assert read_db(db_path, "SELECT name, last_seq FROM conversations WHERE id = ?", (conv,)) == [("EV owners", 5)]
    assert read_db(db_path, "SELECT user FROM members WHERE conv = ? ORDER BY user", (conv,)) == [("alice",), ("bob",)]


async def test_unknown_conversation_refused_without_savepoint(store: Store, db_path: Path) -> None:
    conv = await new_circle(store)
    results, _ = await store.run_batch([text_op("c:404", "alice", "x1"), text_op(conv, "alice", "x2")])
    assert isinstance(results[0], RequestError) and results[0].code == Err.NOT_FOUND
    assert results[1].seq == 2
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid = 'x1'") == [(0,)]


async def test_seq_gapless_under_concurrent_submits(store: Store, db_path: Path) -> None:
    a = await new_circle(store)
    b = await new_circle(store)
    pipeline = Pipeline(store, Metrics(), Output(), max_batch=7)  # many small batches
    pipeline.start()
    try:
        futs = [pipeline.write(text_op(a if i % 3 else b, f"u{i % 5}", f"c{i}")) for i in range(400)]
        results = await asyncio.gather(*futs)
    finally:
        await pipeline.stop()
    for conv in (a, b):
        got = sorted(r.seq for r in results if r.conv == conv)
        assert got == list(range(2, len(got) + 2))
        assert seqs(db_path, conv) == list(range(1, len(got) + 2))
    # commit order: futures resolve with pos strictly increasing in submit order
    positions = [r.pos for r in results]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert pipeline.head == max(positions)


async def test_on_commit_runs_in_commit_order_before_the_future(store: Store) -> None:
    conv = await new_circle(store)
    pipeline = Pipeline(store, Metrics(), Output(), max_batch=3)
    pipeline.start()
    seen: list[int] = []
    try:
        futs = [asyncio.ensure_future(pipeline.write(text_op(conv, "alice", f"o{i}"), lambda r: seen.append(r.seq))) for i in range(10)]
        first = await futs[0]
        assert seen and seen[0] == first.seq
        await asyncio.gather(*futs)
    finally:
        await pipeline.stop()
    assert seen == list(range(2, 12))


async def test_idempotent_append(store: Store, db_path: Path) -> None:
    conv = await new_circle(store)
    first = await one(store, text_op(conv, "alice", "same", "original"))
    assert not first.dup
    again = await one(store, text_op(conv, "alice", "same", "changed text"))
    assert again.dup and (again.conv, again.seq, again.pos, again.ts) == (first.conv, first.seq, first.pos, first.ts)
    # within one batch too, and a dup does not consume a seq
    results, _ = await store.run_batch(
        [text_op(conv, "alice", "twice"), text_op(conv, "alice", "twice"), text_op(conv, "alice", "after")]
    )
    assert [r.dup for r in results] == [False, True, False]
    assert results[0].seq == results[1].seq
    assert results[2].seq == results[0].seq + 1
    # the same cid from another sender is another message
    other = await one(store, text_op(conv, "bob", "same"))
    assert not other.dup
    assert seqs(db_path, conv) == list(range(1, other.seq + 1))
    msgs, _ = await messages.history(store, conv, None, 100)
    assert [m.get("text") for m in msgs if m.get("cid") == "same"] == ["original", "hi"]


async def test_recall_wipes_content_keeps_seq(store: Store, db_path: Path) -> None:
    conv = await new_circle(store)
    secret = "my secret plate number ABC123"
    sent = await one(store, text_op(conv, "alice", "r1", secret))
    later = await one(store, text_op(conv, "alice", "r2", "still here"))
    event = await one(
        store,
        write_op(
            convs.recall, conv=conv, seq=sent.seq, actor="alice", author=AUTHOR, ts=TS + 1000, window_ms=120_000
        ),
    )
    assert event.msg["event"] == {"type": "recall", "seq": sent.seq}
    assert event.msg["seq"] == later.seq + 1
    (data,) = read_db(db_path, "SELECT data FROM messages WHERE conv = ? AND seq = ?", (conv, sent.seq))[0]
    assert b"ABC123" not in data and b"secret" not in data
    raw = b"".join(r[0] for r in read_db(db_path, "SELECT data FROM messages"))
    assert b"ABC123" not in raw
    msgs, _ = await messages.history(store, conv, None, 100)
    by_seq = {m["seq"]: m for m in msgs}
    assert sorted(by_seq) == list(range(1, event.msg["seq"] + 1))
    assert by_seq[sent.seq]["recalled"] is True
    assert "text" not in by_seq[sent.seq] and "mentions" not in by_seq[sent.seq]
    assert by_seq[sent.seq]["author"] == AUTHOR
    assert by_seq[later.seq]["text"] == "still here"
    # twice: refused, nothing written
    results, _ = await store.run_batch(
        [write_op(convs.recall, conv=conv, seq=sent.seq, actor="alice", author=AUTHOR, ts=TS, window_ms=120_000)]
    )
    assert isinstance(results[0], RequestError)
    assert seqs(db_path, conv)[-1] == event.msg["seq"]


async def test_replies_see_the_batch_counters(store: Store) -> None:
    """A write op's reply reflects its own writes (last_seq counts the system message)."""
    info, event = await one(
        store,
        write_op(
            convs.create_circle,
            owner="alice",
            author=AUTHOR,
            name="n",
            category="city",
            description="",
            certified=False,
            ts=TS,
        ),
    )
    assert event.msg["seq"] == 1
    assert info["last_seq"] == 1
    info2, join_event = await one(store, write_op(convs.join, conv=info["conv"], user="bob", author=AUTHOR, ts=TS))
    assert info2["last_seq"] == join_event.msg["seq"] == 2
    assert info2["members"] == 2


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    s = Store(str(db_path))
    await s.open()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.run_batch([text_op("c:1", "alice", "x")])
    with pytest.raises(StoreUnavailable):
        await s.fetchall("SELECT 1")


async def test_pipeline_refuses_after_stop(store: Store) -> None:
    pipeline = Pipeline(store, Metrics(), Output())
    pipeline.start()
    await pipeline.stop()
    with pytest.raises(RequestError) as info:
        pipeline.submit(text_op("c:1", "alice", "x"))
    assert info.value.code == Err.UNAVAILABLE
