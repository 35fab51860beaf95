"""Writes of many rows at once, on both engines.

A run of texts in one batch (``Write.many``, messages.append_many): the engines
write it at once or one by one, and either way every text gets what it would get
alone. Both ways run on both engines (``RUNS_MANY`` is what picks the way).

A call of points awards (ledger.apply_awards) is written as sets (``Tx.lookup``,
``Tx.insert_rows``: one statement each on PostgreSQL) with the results of applying
the awards one after the other."""

from __future__ import annotations

import pytest
from chatd_protocol import Err, RequestError
from storekit import TS, join, new_circle, one, seqs, text

from chatd.points import Award
from chatd.store import Store
from chatd.store.postgres.engine import PgTx
from chatd.store.records import Appended
from chatd.store.sqlite.engine import Tx


@pytest.fixture(params=["one by one", "at once"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    at_once = request.param == "at once"
    monkeypatch.setattr(Tx, "RUNS_MANY", at_once)
    monkeypatch.setattr(PgTx, "RUNS_MANY", at_once)
    return str(request.param)


async def test_a_run_of_texts_gets_what_each_would_get_alone(store: Store, way: str) -> None:
    conv = await new_circle(store)
    await one(store, join(store, conv, "bob"))
    stored = await one(store, text(store, conv, "alice", "s1", "stored before"))
    n = stored.seq
    results, head = await store.run_batch(
        [
            text(store, conv, "alice", "s1", "a retry of a stored one"),
            text(store, conv, "bob", "b1", "new"),
            text(store, conv, "alice", "a1", "new"),
            text(store, "c:404", "alice", "x1"),  # no such conversation: refused alone
            text(store, conv, "bob", "b1", "a retry within the run"),
            text(store, conv, "alice", None, "no cid"),
            text(store, conv, "alice", None, "no cid"),  # without a cid, never a duplicate
            text(store, conv, "bob", "b2", "new"),
        ]
    )
    retry, b1, a1, missing, b1_again, plain1, plain2, b2 = results
    assert isinstance(retry, Appended) and retry == Appended(conv, n, stored.pos, stored.ts, True)
    assert isinstance(missing, RequestError) and missing.code == Err.NOT_FOUND
    new = [b1, a1, plain1, plain2, b2]
    assert all(isinstance(r, Appended) and not r.dup for r in new)
    assert [r.seq for r in new] == list(range(n + 1, n + 6))
    assert [r.pos for r in new] == list(range(stored.pos + 1, stored.pos + 6)) and head == b2.pos
    assert isinstance(b1_again, Appended) and b1_again.dup and (b1_again.seq, b1_again.pos) == (b1.seq, b1.pos)
    assert await seqs(store, conv) == list(range(1, n + 6))
    msgs, _ = await store.messages.history(conv, None, 100)
    assert [m["text"] for m in msgs[-6:]] == ["stored before", "new", "new", "no cid", "no cid", "new"]
    assert await store.messages.find("alice", "x1") is None
    # each sender has read up to their own last text of the run
    _, cursors, _ = await store.messages.since("alice", 0, 100)
    assert [(c.conv, c.last_seq, c.read_seq) for c in cursors] == [(conv, n + 5, n + 4)]
    _, cursors, _ = await store.messages.since("bob", 0, 100)
    assert [(c.conv, c.last_seq, c.read_seq) for c in cursors] == [(conv, n + 5, n + 5)]
    # and the next batch continues the counters
    after = await one(store, text(store, conv, "bob", "b3"))
    assert (after.seq, after.pos) == (n + 6, b2.pos + 1)


async def test_a_call_of_awards_is_written_as_sets_with_what_one_by_one_gives(store: Store) -> None:
    day = "2026-12-01"

    def award(user: str, key: str, amount: int = 5, cap: int | None = 2, currency: str = "points") -> Award:
        return Award(user, currency, amount, "post", key, daily_cap=cap, day=day)

    first = await one(store, store.ledger.apply_awards([award("alice", "p0")], TS))
    assert [(e.key, e.amount) for e in first] == [("p0", 5)]
    call = [
        award("alice", "p0"),  # known from the first call: skipped
        award("alice", "p1"),  # the day's second: paid
        award("alice", "p1"),  # the same key again in the call: once
        award("alice", "p2"),  # past the cap of 2: recorded with 0
        award("bob", "b1"),
        award("bob", "b2"),
        award("bob", "b3"),  # bob's third: capped too
        award("bob", "cv1", 7, None, "cv"),  # no cap
        award("carol", "zero", 3, 0),  # a cap of 0 pays nothing
    ]
    entries = await one(store, store.ledger.apply_awards(call, TS))
    assert [(e.key, e.amount, e.note) for e in entries] == [
        ("p1", 5, ""),
        ("p2", 0, "daily cap 2 reached"),
        ("b1", 5, ""),
        ("b2", 5, ""),
        ("b3", 0, "daily cap 2 reached"),
        ("cv1", 7, ""),
        ("zero", 0, "daily cap 0 reached"),
    ]
    assert await store.ledger.balance("alice") == {"points": 10, "cv": 0}
    assert await store.ledger.balance("bob") == {"points": 10, "cv": 7}
    assert await store.ledger.balance("carol") == {"points": 0, "cv": 0}
    # the day's counts were written: the next call is capped from the start
    later = await one(store, store.ledger.apply_awards([award("alice", "p3"), award("bob", "b4", cap=3)], TS))
    assert [(e.key, e.amount) for e in later] == [("p3", 0), ("b4", 5)]
    # a bad award refuses the whole call, and nothing of it is written
    (refused,), _ = await store.run_batch(
        [store.ledger.apply_awards([award("dave", "d1"), award("dave", "d2", amount=-1)], TS)]
    )
    assert isinstance(refused, ValueError)
    assert await store.ledger.balance("dave") == {"points": 0, "cv": 0}
    page, _ = await store.ledger.recent("dave", None, 10)
    assert page == []
    again = await one(store, store.ledger.apply_awards([award("dave", "d1")], TS))
    assert [(e.key, e.amount) for e in again] == [("d1", 5)]
