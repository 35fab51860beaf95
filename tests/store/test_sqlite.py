"""What is particular to the SQLite engine, checked on the file itself:
migrations, WAL, savepoints, the counters on disk, recalled bytes gone."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from chatd_protocol import Err, RequestError
from storekit import AUTHOR, TS, concurrent_sends, join, new_circle, one, sqlite_engine, text
from support import read_db

from chatd.store import Store, Write
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
