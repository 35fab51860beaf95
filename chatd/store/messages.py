"""Messages: the one table every conversation event lands in.

Write operations here are plain functions of a ``sqlite3.Connection`` that run on
the writer thread inside a batch (see engine.py). Reads are coroutines on the
reader.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from .engine import Store, Tx

TEXT = 0
SYSTEM = 1
_KIND_NAMES = ("text", "system")

COLUMNS = "conv, seq, pos, sender, cid, ts, kind, data, recalled"


@dataclass(frozen=True, slots=True)
class Appended:
    """What the store says about one appended (or deduplicated) message."""

    conv: str
    seq: int
    pos: int
    ts: int
    dup: bool


_local = threading.local()  # msgpack Packers are not thread-safe; one per thread


def pack(data: dict[str, Any]) -> bytes:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(data)


def wire(
    conv: str,
    seq: int,
    pos: int,
    sender: str,
    cid: str | None,
    ts: int,
    kind: int,
    data: dict[str, Any],
    recalled: bool = False,
) -> dict[str, Any]:
    """The wire form of a message (protocol/README.md §4). Empty fields are absent."""
    msg: dict[str, Any] = {
        "conv": conv,
        "seq": seq,
        "pos": pos,
        "ts": ts,
        "from": sender,
        "author": data.get("a", {}),
        "kind": _KIND_NAMES[kind],
    }
    if kind == TEXT:
        if recalled:
            msg["recalled"] = True
        else:
            msg["text"] = data.get("t", "")
            if data.get("m"):
                msg["mentions"] = data["m"]
            if data.get("ma"):
                msg["mention_all"] = True
        if cid is not None:
            msg["cid"] = cid
    else:
        msg["event"] = data.get("e", {})
    return msg


def row_to_wire(row: Any) -> dict[str, Any]:
    conv, seq, pos, sender, cid, ts, kind, data, recalled = row
    return wire(conv, seq, pos, sender, cid, ts, kind, msgpack.unpackb(data), bool(recalled))


def append(
    tx: Tx,
    conv: str,
    sender: str,
    cid: str | None,
    ts: int,
    kind: int,
    data: bytes,
) -> Appended:
    """Append one message with the next seq and pos of this transaction.

    Idempotent on (sender, cid): the unique index refuses a known pair, and the
    original position comes back with ``dup=True``; nothing is written. Writes
    nothing before it can fail with RequestError (a ``savepoint=False`` op).
    """
    seq, pos = tx.alloc(conv)
    try:
        tx.execute(
            "INSERT INTO messages(pos, conv, seq, sender, cid, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pos, conv, seq, sender, cid, ts, kind, data),
        )
    except sqlite3.IntegrityError:
        tx.unalloc(conv)
        row = None
        if cid is not None:
            row = tx.execute(
                "SELECT conv, seq, pos, ts FROM messages WHERE sender = ? AND cid = ?", (sender, cid)
            ).fetchone()
        if row is None:
            raise
        return Appended(row[0], row[1], row[2], row[3], True)
    tx.mark_read(conv, sender, seq)  # what one wrote or did oneself counts as read
    return Appended(conv, seq, pos, ts, False)


def get(tx: Tx, conv: str, seq: int) -> Any:
    return tx.execute(f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()


def wipe(tx: Tx, conv: str, seq: int, author: dict[str, Any]) -> None:
    """Recall: the content is gone from the store; the seq stays."""
    tx.execute(
        "UPDATE messages SET recalled = 1, data = ? WHERE conv = ? AND seq = ?",
        (pack({"a": author}), conv, seq),
    )


# -- reads ------------------------------------------------------------------

# A history or sync reply stops adding messages past this many stored bytes and
# says ``more``: a reply stays well under 1 MiB whatever the message sizes.
REPLY_BUDGET = 256 * 1024


def _within_budget(rows: list[Any], limit: int) -> tuple[list[Any], bool]:
    """The first rows that fit both ``limit`` and REPLY_BUDGET, and whether more remain."""
    used = 0
    for i, row in enumerate(rows):
        used += len(row[7]) + 64
        if i == limit or (used > REPLY_BUDGET and i > 0):
            return rows[:i], True
    return rows, False


async def history(store: Store, conv: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` messages with seq < before, returned oldest first."""
    bound = before if before is not None else 2**62
    rows = await store.fetchall(
        f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        (conv, bound, limit + 1),
    )
    rows, more = _within_budget(rows, limit)
    rows.reverse()
    return [row_to_wire(r) for r in rows], more


async def find(store: Store, sender: str, cid: str) -> Appended | None:
    """The message ``sender`` sent with client id ``cid``, if stored."""
    row = await store.fetchone("SELECT conv, seq, pos, ts FROM messages WHERE sender = ? AND cid = ?", (sender, cid))
    return None if row is None else Appended(row[0], row[1], row[2], row[3], True)


async def head(store: Store) -> int:
    row = await store.fetchone("SELECT value FROM counters WHERE name = 'pos'")
    return int(row[0])


async def since(
    store: Store, user: str, pos: int, limit: int
) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]], bool]:
    """Catch-up: messages of the user's conversations committed after ``pos``.

    Only conversations whose ``last_pos`` moved are visited (one index probe per
    membership, no rows for the others); for each, the messages come from the
    (conv, pos) index. Returns (messages ordered by pos, [(conv, last_seq,
    read_seq)] of the changed conversations, more).
    """
    changed = await store.fetchall(
        "SELECT c.id, c.last_seq, m.read_seq, m.joined_seq FROM members m"
        " JOIN conversations c ON c.id = m.conv"
        " WHERE m.user = ? AND c.last_pos > ?",
        (user, pos),
    )
    if not changed:
        return [], [], False
    # CROSS JOIN pins the join order: memberships first, then the (conv, pos) index.
    rows = await store.fetchall(
        "SELECT m.conv, m.seq, m.pos, m.sender, m.cid, m.ts, m.kind, m.data, m.recalled"
        " FROM members mb CROSS JOIN conversations c CROSS JOIN messages m"
        " WHERE mb.user = ? AND c.id = mb.conv AND c.last_pos > ?"
        " AND m.conv = mb.conv AND m.pos > ? AND m.seq >= mb.joined_seq"
        " ORDER BY m.pos LIMIT ?",
        (user, pos, pos, limit + 1),
    )
    rows, more = _within_budget(rows, limit)
    return [row_to_wire(r) for r in rows], [(c, last, read) for c, last, read, _ in changed], more


async def between(store: Store, conv: str, after: int, before: int) -> list[dict[str, Any]]:
    """Messages of ``conv`` with ``after < seq < before``, oldest first (the fan-out
    layer fills a seq gap with them)."""
    rows = await store.fetchall(
        f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT 1000",
        (conv, after, before),
    )
    return [row_to_wire(r) for r in rows]
