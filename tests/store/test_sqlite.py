"""What is particular to the SQLite engine, checked on the file itself:
migrations, WAL, savepoints, the counters on disk, recalled bytes gone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from chatd_protocol import Err, RequestError
from storekit import AUTHOR, TS, concurrent_sends, join, new_circle, one, sqlite_engine, text
from support import read_db

from chatd.store import Store, StoreUnavailable, Write
from chatd.store.records import TEXT, pack
from chatd.store.sqlite import SqliteStore
from chatd.store.sqlite.engine import Tx
from chatd.store.sqlite.messages import append
from chatd.store.sqlite.schema import MIGRATIONS, migrate


@pytest.fixture
def engine() -> Callable[[Path, str], Store]:
    """This module is about the SQLite engine alone (store: tests/store/conftest.py)."""
    return sqlite_engine


def seqs(db: Path, conv: str) -> list[int]:
    return [r[0] for r in read_db(db, "SELECT seq FROM messages WHERE conv = ? ORDER BY seq", (conv,))]


async def test_migrations_idempotent_on_reopen(db_path: Path) -> None:
    s = SqliteStore(str(db_path))
    await s.open()
    conv = await new_circle(s)
    await one(s, text(s, conv, "alice", "m1"))
    await s.close()
    assert read_db(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    for _ in range(2):  # reopening applies nothing twice and keeps the data
        s = SqliteStore(str(db_path))
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


async def test_wal_mode(store: SqliteStore, db_path: Path) -> None:
    assert read_db(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_one_batch_writes_the_counters_once(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)
    results, head = await store.run_batch([text(store, conv, f"u{i % 7}", f"cid-{i}", f"m{i}") for i in range(500)])
    assert [r.seq for r in results] == list(range(2, 502))
    assert seqs(db_path, conv) == list(range(1, 502))
    assert read_db(db_path, "SELECT last_seq, last_pos FROM conversations WHERE id = ?", (conv,)) == [(501, head)]
    assert read_db(db_path, "SELECT value FROM counters WHERE name = 'pos'") == [(head,)]


async def test_a_refused_op_rolls_back_alone_from_its_savepoint(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)

    def half_then_refuse(tx: Tx) -> None:
        # writes something, then refuses: its savepoint must undo the write
        append(tx, conv, "mallory", "evil", TS, TEXT, pack({"a": AUTHOR, "t": "x"}))
        tx.execute("UPDATE conversations SET name = 'hacked' WHERE id = ?", (conv,))
        raise RequestError(Err.FORBIDDEN, "no")

    ops = [
        text(store, conv, "alice", "a1"),
        Write(half_then_refuse),
        text(store, conv, "alice", "a2"),
        join(store, "c:999", "bob"),  # not_found
        join(store, conv, "bob"),
        text(store, conv, "bob", "b1"),
    ]
    results, _ = await store.run_batch(ops)
    assert isinstance(results[1], RequestError) and results[1].code == Err.FORBIDDEN
    assert isinstance(results[3], RequestError) and results[3].code == Err.NOT_FOUND
    assert results[0].seq == 2 and results[2].seq == 3
    _, join_event, _ = results[4]
    assert join_event.msg["seq"] == 4
    assert results[5].seq == 5
    assert seqs(db_path, conv) == [1, 2, 3, 4, 5]  # gapless: the refused op's seq was reused
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE sender = 'mallory'") == [(0,)]
    assert read_db(db_path, "SELECT name, last_seq FROM conversations WHERE id = ?", (conv,)) == [("EV owners", 5)]
    assert read_db(db_path, "SELECT user FROM members WHERE conv = ? ORDER BY user", (conv,)) == [("alice",), ("bob",)]


async def test_unknown_conversation_refused_without_savepoint(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)
    results, _ = await store.run_batch([text(store, "c:404", "alice", "x1"), text(store, conv, "alice", "x2")])
    assert isinstance(results[0], RequestError) and results[0].code == Err.NOT_FOUND
    assert results[1].seq == 2
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid = 'x1'") == [(0,)]


async def test_concurrent_submits_leave_the_file_gapless(store: SqliteStore, db_path: Path) -> None:
    a, b, results, _ = await concurrent_sends(store)
    for conv in (a, b):
        n = sum(1 for r in results if r.conv == conv)
        assert seqs(db_path, conv) == list(range(1, n + 2))


async def test_a_duplicate_takes_no_seq_on_disk(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)
    results, _ = await store.run_batch(
        [text(store, conv, "alice", "twice"), text(store, conv, "alice", "twice"), text(store, conv, "alice", "after")]
    )
    assert [r.dup for r in results] == [False, True, False]
    assert seqs(db_path, conv) == [1, 2, 3]
    assert read_db(db_path, "SELECT COUNT(*) FROM messages WHERE cid = 'twice'") == [(1,)]


async def test_recalled_content_is_gone_from_the_file(store: SqliteStore, db_path: Path) -> None:
    import functools

    from storekit import KINDS

    conv = await new_circle(store)
    sent = await one(store, text(store, conv, "alice", "r1", "my secret plate number ABC123"))
    check = functools.partial(KINDS.circle.check_recall, 120_000)
    await one(store, store.messages.recall(conv, sent.seq, "alice", AUTHOR, TS + 1000, check))
    (data,) = read_db(db_path, "SELECT data FROM messages WHERE conv = ? AND seq = ?", (conv, sent.seq))[0]
    assert b"ABC123" not in data and b"secret" not in data
    raw = b"".join(r[0] for r in read_db(db_path, "SELECT data FROM messages"))
    assert b"ABC123" not in raw


# -- where a batch runs: statements on the loop, COMMIT on the writer thread -----------


async def test_a_batch_is_staged_on_the_loop_and_committed_durably(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)
    engine = store.engine
    staged = engine.staged
    results, head = await store.run_batch([text(store, conv, "alice", f"s{i}") for i in range(3)])
    assert engine.staged == staged + 1 and engine.handed == 0
    assert [r.seq for r in results] == [2, 3, 4]
    # committed: another connection sees it
    assert seqs(db_path, conv) == [1, 2, 3, 4] and head == results[-1].pos


async def test_a_batch_waits_on_the_writer_thread_while_another_process_holds_the_lock(
    store: SqliteStore, db_path: Path
) -> None:
    """Several processes on one file: BEGIN IMMEDIATE on the loop must not wait
    (it would stall every socket); the batch goes to the writer thread, which
    waits for the lock there, and commits once the other writer is done."""
    conv = await new_circle(store)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's batch holds the write lock
    try:
        task = asyncio.ensure_future(store.run_batch([text(store, conv, "alice", "waited")]))
        ticks = 0
        while ticks < 20:  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done() and ticks == 20
    finally:
        other.execute("COMMIT")
        other.close()
    results, _ = await asyncio.wait_for(task, 10)
    assert results[0].seq == 2
    assert store.engine.handed == 1
    assert seqs(db_path, conv) == [1, 2]
    # and the next batch is staged on the loop again
    results, _ = await store.run_batch([text(store, conv, "alice", "after")])
    assert results[0].seq == 3 and store.engine.handed == 1


async def test_a_caller_that_stops_waiting_leaves_the_commit_whole(store: SqliteStore, db_path: Path) -> None:
    """The pipeline cancelled while a COMMIT is on the writer thread: that batch
    still commits, and the next batch starts only after it."""
    conv = await new_circle(store)
    task = asyncio.ensure_future(store.run_batch([text(store, conv, "alice", f"c{i}") for i in range(50)]))
    await asyncio.sleep(0)  # staged, COMMIT handed over
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    results, _ = await store.run_batch([text(store, conv, "alice", "next")])
    assert results[0].seq == 52  # the cancelled batch's 50 committed first
    assert seqs(db_path, conv) == list(range(1, 53))


async def test_a_batch_that_fails_while_staged_commits_nothing(store: SqliteStore, db_path: Path) -> None:
    conv = await new_circle(store)

    def boom(tx: Tx) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreUnavailable):
        await store.run_batch([text(store, conv, "alice", "lost"), Write(boom, (), savepoint=False)])
    assert seqs(db_path, conv) == [1]
    results, _ = await store.run_batch([text(store, conv, "alice", "fine")])
    assert results[0].seq == 2  # the connection is usable again, no transaction left open
