"""The outbox's read side and its consumers' cursors: interaction events are
read past a cursor kept per consumer (points hook); a consumer's awards and its
cursors commit in one transaction. The one writer of event rows is
``events.add_event``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ..base import Write
from ..records import TEXT, EventRow, HookFailure, MessageRow
from .engine import Reader, Tx
from .ledger import apply_awards, balances_push


def init_cursors(tx: Tx, names: Sequence[str]) -> None:
    """A consumer seen for the first time starts at the current head: it is not
    run over history that predates it."""
    head = tx.head()
    last_event = tx.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    for name in names:
        tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'messages', ?)", (name, head))
        tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'events', ?)", (name, last_event))


def commit(
    tx: Tx, name: str, awards: Sequence[Any], cursors: dict[str, int], ts: int, failure: HookFailure | None
) -> dict[str, dict[str, Any]]:
    entries = apply_awards(tx, awards, ts)
    for source, pos in cursors.items():
        tx.execute("UPDATE hook_cursors SET pos = ? WHERE hook = ? AND source = ?", (pos, name, source))
    if failure is not None:
        tx.execute(
            "INSERT OR REPLACE INTO hook_failures VALUES (?, ?, ?, ?, ?)",
            (name, failure.key, failure.attempts, failure.error[:500], ts),
        )
    return balances_push(tx, entries)


class SqliteOutbox:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    async def messages_after(self, pos: int, limit: int) -> list[MessageRow]:
        rows = await self.db.fetchall(
            "SELECT m.pos, m.conv, m.seq, m.sender, m.ts, m.kind, CASE WHEN m.kind = 1 THEN m.data END, c.kind"
            " FROM messages m JOIN conversations c ON c.id = m.conv WHERE m.pos > ? ORDER BY m.pos LIMIT ?",
            (pos, limit),
        )
        out = []
        for p, conv, seq, sender, ts, kind, data, conv_kind in rows:
            event = (msgpack.unpackb(data).get("e") or {}) if data is not None else None
            out.append(MessageRow(p, conv, conv_kind, seq, sender, ts, kind == TEXT, event))
        return out

    async def events_after(self, id: int, limit: int) -> list[EventRow]:
        rows = await self.db.fetchall(
            "SELECT id, key, kind, user, conv, ts, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (id, limit)
        )
        return [EventRow(i, k, kind, u, c, ts, msgpack.unpackb(d)) for i, k, kind, u, c, ts, d in rows]

    def init_cursors(self, names: Sequence[str]) -> Write[None]:
        return Write(init_cursors, (tuple(names),))

    async def cursors(self, name: str) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT source, pos FROM hook_cursors WHERE hook = ?", (name,))
        return {source: pos for source, pos in rows}

    def commit(
        self, name: str, awards: Sequence[Any], cursors: dict[str, int], ts: int, failure: HookFailure | None
    ) -> Write[dict[str, dict[str, Any]]]:
        return Write(commit, (name, awards, cursors, ts, failure))
