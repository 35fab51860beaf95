"""Messages: the one table every conversation event lands in.

Write functions here run on the writer thread inside a batch (``fn(tx, ...)``,
see engine.py); the repository's methods wrap them in a
:class:`~chatd.store.base.Write`. Reads are coroutines on the reader.
"""

from __future__ import annotations

from typing import Any

from chatd_protocol import Err, RequestError

from ..base import RecallCheck, Write
from ..records import (
    SENDER_READS,
    SYSTEM,
    TEXT,
    Appended,
    ConvCursor,
    Effect,
    ServiceClock,
    SystemMessage,
    message_wire,
    pack,
    unpack,
)
from .clocks import on_text
from .engine import Reader, Tx

COLUMNS = "conv, seq, pos, sender, cid, ts, kind, data, recalled"
SENT = "SELECT conv, seq, pos, ts FROM messages WHERE sender = ? AND cid = ?"
NEW_MESSAGE = "INSERT INTO messages(pos, conv, seq, sender, cid, ts, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def row_to_wire(row: Any) -> dict[str, Any]:
    conv, seq, pos, sender, cid, ts, kind, data, recalled = row
    return message_wire(conv, seq, pos, sender, cid, ts, kind, unpack(data), bool(recalled))


def append(
    tx: Tx,
    conv: str,
    sender: str,
    cid: str | None,
    ts: int,
    kind: int,
    data: bytes,
    effects: tuple[Effect, ...] = (SENDER_READS,),
) -> Appended:
    """Append one message with the next seq and pos of this transaction.

    Idempotent on (sender, cid): the unique index refuses a known pair, and the
    original position comes back with ``dup=True``; nothing is written. Writes
    nothing before it can fail with RequestError (a ``savepoint=False`` op).
    """
    seq, pos = tx.alloc(conv)
    # ON CONFLICT DO NOTHING, not an exception: on PostgreSQL a failed statement
    # aborts the whole batch's transaction, and this op runs without a savepoint
    cur = tx.execute(
        NEW_MESSAGE + " ON CONFLICT DO NOTHING",
        (pos, conv, seq, sender, cid, ts, kind, data),
    )
    if cur.rowcount == 0:
        tx.unalloc(conv)
        row = None
        if cid is not None:
            row = tx.execute(SENT, (sender, cid)).fetchone()
        if row is None:  # a (conv, seq) or pos conflict: the counters are wrong, never a client's retry
            raise RuntimeError(f"message {conv}/{seq} at {pos} conflicts with a stored one")
        return Appended(row[0], row[1], row[2], row[3], True)
    _effects(tx, conv, sender, seq, ts, effects)
    return Appended(conv, seq, pos, ts, False)


def append_many(tx: Tx, calls: list[tuple[Any, ...]]) -> list[Appended | RequestError]:
    """``append`` for a run of texts (its args each), with the same results: the
    retries among them are found with one read, the new ones written with one
    INSERT, then each one's effects run in order. The batch holds the write lock
    (BEGIN IMMEDIATE, or PostgreSQL's position row), so no other writer can store
    one of these cids meanwhile; a retry of a text earlier in the same run is a
    duplicate of it, as it would be one by one."""
    pairs = [(call[1], call[2]) for call in calls if call[2] is not None]
    sent = {
        key: Appended(row[0], row[1], row[2], row[3], True)
        for key, row in tx.lookup("messages", ("sender", "cid"), ("conv", "seq", "pos", "ts"), pairs).items()
    }
    results: list[Appended | RequestError] = []
    rows: list[tuple[Any, ...]] = []
    new: list[tuple[str, str, int, int, tuple[Effect, ...]]] = []
    for conv, sender, cid, ts, kind, data, *rest in calls:
        if cid is not None:
            known = sent.get((sender, cid))
            if known is not None:
                results.append(known)
                continue
        try:
            seq, pos = tx.alloc(conv)
        except RequestError as exc:
            results.append(exc)
            continue
        rows.append((pos, conv, seq, sender, cid, ts, kind, data))
        if cid is not None:
            sent[(sender, cid)] = Appended(conv, seq, pos, ts, True)
        new.append((conv, sender, seq, ts, rest[0] if rest else (SENDER_READS,)))
        results.append(Appended(conv, seq, pos, ts, False))
    tx.insert_rows(NEW_MESSAGE, rows)
    for conv, sender, seq, ts, effects in new:
        _effects(tx, conv, sender, seq, ts, effects)
    return results


def _effects(tx: Tx, conv: str, sender: str, seq: int, ts: int, effects: tuple[Effect, ...]) -> None:
    for effect in effects:
        if effect is SENDER_READS:
            tx.mark_read(conv, sender, seq)  # deferred: one UPDATE per member and batch
        elif isinstance(effect, ServiceClock):
            on_text(tx, conv, sender, seq, ts, effect.policy)
        else:
            raise ValueError(f"unknown effect {effect.name!r}")


def system(tx: Tx, conv: str, actor: str, author: dict[str, Any], ts: int, event: dict[str, Any]) -> SystemMessage:
    """A system message (joins, roles, recalls...); it counts as read for its actor."""
    a = append(tx, conv, actor, None, ts, SYSTEM, pack({"a": author, "e": event}))
    return SystemMessage(message_wire(conv, a.seq, a.pos, actor, None, ts, SYSTEM, {"a": author, "e": event}))


def role_of(tx: Tx, conv: str, user: str) -> str | None:
    row = tx.execute("SELECT role FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone()
    return row[0] if row else None


def kind_of(tx: Tx, conv: str) -> str | None:
    row = tx.execute("SELECT kind FROM conversations WHERE id = ?", (conv,)).fetchone()
    return row[0] if row else None


def recall(
    tx: Tx, conv: str, seq: int, actor: str, author: dict[str, Any], ts: int, check: RecallCheck
) -> SystemMessage:
    row = tx.execute(f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    if row is None or row[6] != TEXT:
        raise RequestError(Err.NOT_FOUND, f"no message {seq} in {conv}")
    role = role_of(tx, conv, actor)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    sender, sent_ts, recalled = row[3], row[5], row[8]
    if recalled:
        raise RequestError(Err.CONFLICT, "already recalled")
    check(kind_of(tx, conv) or "", role, sender == actor, ts - sent_ts)
    original_author = unpack(row[7]).get("a", {})
    # the content is gone from the store; the seq stays
    tx.execute(
        "UPDATE messages SET recalled = 1, data = ? WHERE conv = ? AND seq = ?",
        (pack({"a": original_author}), conv, seq),
    )
    return system(tx, conv, actor, author, ts, {"type": "recall", "seq": seq})


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


class SqliteMessages:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def append(
        self, conv: str, sender: str, cid: str | None, ts: int, data: bytes, effects: tuple[Effect, ...]
    ) -> Write[Appended]:
        return Write(append, (conv, sender, cid, ts, TEXT, data, effects), savepoint=False, many=append_many)

    def recall(
        self, conv: str, seq: int, actor: str, author: dict[str, Any], ts: int, check: RecallCheck
    ) -> Write[SystemMessage]:
        return Write(recall, (conv, seq, actor, author, ts, check))

    async def history(self, conv: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        bound = before if before is not None else 2**62
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (conv, bound, limit + 1),
        )
        rows, more = _within_budget(rows, limit)
        rows.reverse()
        return [row_to_wire(r) for r in rows], more

    async def find(self, sender: str, cid: str) -> Appended | None:
        row = await self.db.fetchone(SENT, (sender, cid))
        return None if row is None else Appended(row[0], row[1], row[2], row[3], True)

    async def head(self) -> int:
        row = await self.db.fetchone("SELECT value FROM counters WHERE name = 'pos'")
        return int(row[0])

    async def epoch(self) -> str:
        row = await self.db.fetchone("SELECT value FROM meta WHERE name = 'epoch'")
        return str(row[0])

    async def since(self, user: str, pos: int, limit: int) -> tuple[list[dict[str, Any]], list[ConvCursor], bool]:
        """The cheaper of two plans, by what it visits: the messages committed since
        ``pos`` (positions are gapless, so there are head - pos of them), or the
        user's memberships. A staff member in 5,000 groups who missed 3 messages
        visits 3 rows, not 5,000; a user in 10 conversations after a busy minute
        visits 10. Both give the same answer."""
        # memberships counted only up to head - pos + 1, which decides the same: a
        # user in 5,000 conversations who missed 3 messages counts 4 rows, not 5,000
        # (200 µs of this read before)
        head, memberships = await self.db.fetchone(
            "SELECT (SELECT value FROM counters WHERE name = 'pos'), (SELECT COUNT(*) FROM"
            " (SELECT 1 FROM members WHERE user = ? LIMIT MAX((SELECT value FROM counters WHERE name = 'pos') - ?, 0) + 1)"
            " bounded)",
            (user, pos),
        )
        if int(head) - pos < memberships:
            return await self._since_by_pos(user, pos, limit)
        return await self._since_by_membership(user, pos, limit)

    async def _since_by_pos(
        self, user: str, pos: int, limit: int
    ) -> tuple[list[dict[str, Any]], list[ConvCursor], bool]:
        # CROSS JOIN pins the order: the messages past pos, then the membership of each
        changed = await self.db.fetchall(
            "SELECT c.id, c.last_seq, mb.read_seq FROM (SELECT DISTINCT conv FROM messages WHERE pos > ?) d"
            " CROSS JOIN members mb CROSS JOIN conversations c WHERE mb.conv = d.conv AND mb.user = ? AND c.id = d.conv",
            (pos, user),
        )
        if not changed:
            return [], [], False
        rows = await self.db.fetchall(
            "SELECT m.conv, m.seq, m.pos, m.sender, m.cid, m.ts, m.kind, m.data, m.recalled"
            " FROM messages m CROSS JOIN members mb"
            " WHERE m.pos > ? AND mb.conv = m.conv AND mb.user = ? AND m.seq >= mb.joined_seq"
            " ORDER BY m.pos LIMIT ?",
            (pos, user, limit + 1),
        )
        rows, more = _within_budget(rows, limit)
        return [row_to_wire(r) for r in rows], [ConvCursor(c, last, read) for c, last, read in changed], more

    async def _since_by_membership(
        self, user: str, pos: int, limit: int
    ) -> tuple[list[dict[str, Any]], list[ConvCursor], bool]:
        """Only conversations whose ``last_pos`` moved are visited (one index probe
        per membership, no rows for the others); for each, the messages come from
        the (conv, pos) index."""
        changed = await self.db.fetchall(
            "SELECT c.id, c.last_seq, m.read_seq, m.joined_seq FROM members m"
            " JOIN conversations c ON c.id = m.conv"
            " WHERE m.user = ? AND c.last_pos > ?",
            (user, pos),
        )
        if not changed:
            return [], [], False
        # CROSS JOIN pins the join order: memberships first, then the (conv, pos) index.
        rows = await self.db.fetchall(
            "SELECT m.conv, m.seq, m.pos, m.sender, m.cid, m.ts, m.kind, m.data, m.recalled"
            " FROM members mb CROSS JOIN conversations c CROSS JOIN messages m"
            " WHERE mb.user = ? AND c.id = mb.conv AND c.last_pos > ?"
            " AND m.conv = mb.conv AND m.pos > ? AND m.seq >= mb.joined_seq"
            " ORDER BY m.pos LIMIT ?",
            (user, pos, pos, limit + 1),
        )
        rows, more = _within_budget(rows, limit)
        return [row_to_wire(r) for r in rows], [ConvCursor(c, last, read) for c, last, read, _ in changed], more

    async def between(self, conv: str, after: int, before: int) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? ORDER BY seq LIMIT 1000",
            (conv, after, before),
        )
        return [row_to_wire(r) for r in rows]
