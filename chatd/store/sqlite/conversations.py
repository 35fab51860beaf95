"""Conversations and blocks.

Write functions run on the writer thread inside a batch and check their own
preconditions against the database, so they stay correct when several
processes share one store; what the conversation's kind allows is asked of the
``check`` the caller passes (``chatd.kinds``). They raise RequestError to
refuse; the batch rolls back that write alone.
"""

from __future__ import annotations

from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ..base import AdminCheck, Write
from ..records import ConvRecord, ConvSnapshot, Quota, SystemMessage
from .engine import Reader, Tx
from .messages import kind_of, role_of, system
from .quotas import charge

CONV_COLUMNS = (
    "id, kind, name, category, certified, description, announcement, owner, member_count, last_seq, fellow, tags"
)
CONV_WIDTH = CONV_COLUMNS.count(",") + 1


def record(row: Any) -> ConvRecord:
    cid, kind, name, category, certified, description, announcement, owner, count, last, fellow, tags = row
    attrs = {
        "category": category,
        "certified": bool(certified),
        "description": description,
        "announcement": announcement,
    }
    if fellow is not None:  # a service group's
        attrs["fellow"] = fellow
        attrs["tags"] = orjson.loads(tags) if tags else {}
    return ConvRecord(cid, kind, name, count, last, owner, attrs)


def get(tx: Tx, conv: str) -> ConvRecord:
    return record(tx.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,)).fetchone())


def blocked(tx: Tx, a: str, b: str) -> bool:
    row = tx.execute(
        "SELECT 1 FROM blocks WHERE (blocker = ? AND blocked = ?) OR (blocker = ? AND blocked = ?)", (a, b, b, a)
    ).fetchone()
    return row is not None


def open_dm(
    tx: Tx, conv: str, kind: str, a: str, b: str, ts: int, known_peer: bool, quota: Quota | None
) -> ConvRecord:
    if blocked(tx, a, b):
        raise RequestError(Err.BLOCKED, "this conversation is blocked")
    exists = tx.execute("SELECT 1 FROM conversations WHERE id = ?", (conv,)).fetchone() is not None
    if not exists:
        if known_peer and tx.execute("SELECT 1 FROM users WHERE id = ?", (b,)).fetchone() is None:
            raise RequestError(Err.NOT_FOUND, f"no user {b}")
        if quota is not None:
            charge(tx, quota, ts)
        tx.execute("INSERT INTO conversations(id, kind, created_ts, member_count) VALUES (?, ?, ?, 2)", (conv, kind, ts))
        tx.executemany("INSERT INTO members(conv, user, role) VALUES (?, ?, 'member')", ((conv, a), (conv, b)))
    return get(tx, conv)


def create(
    tx: Tx,
    kind: str,
    prefix: str,
    owner: str,
    author: dict[str, Any],
    name: str,
    attrs: dict[str, Any],
    ts: int,
    quota: Quota | None,
) -> tuple[ConvRecord, SystemMessage]:
    if quota is not None:
        charge(tx, quota, ts)
    row = tx.execute("UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", (kind,)).fetchone()
    if row is None:  # a kind's first conversation
        tx.execute("INSERT INTO counters VALUES (?, 1)", (kind,))
        row = (1,)
    conv = f"{prefix}{row[0]}"
    tx.execute(
        "INSERT INTO conversations(id, kind, name, category, certified, description, owner,"
        " created_ts, member_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
        (
            conv,
            kind,
            name,
            attrs.get("category"),
            int(bool(attrs.get("certified"))),
            attrs.get("description", ""),
            owner,
            ts,
        ),
    )
    tx.execute("INSERT INTO members(conv, user, role, joined_seq) VALUES (?, ?, 'owner', 1)", (conv, owner))
    event = system(tx, conv, owner, author, ts, {"type": "created", "name": name})
    tx.flush()  # write the batch counters back: the reply's last_seq counts this op's event
    return get(tx, conv), event


def announce(
    tx: Tx, conv: str, actor: str, author: dict[str, Any], text: str, ts: int, check: AdminCheck
) -> SystemMessage:
    check(kind_of(tx, conv) or "", role_of(tx, conv, actor), None)
    tx.execute("UPDATE conversations SET announcement = ? WHERE id = ?", (text, conv))
    return system(tx, conv, actor, author, ts, {"type": "announce", "text": text})


def set_block(tx: Tx, blocker: str, blocked: str, on: bool) -> None:
    if on:
        tx.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (blocker, blocked))
    else:
        tx.execute("DELETE FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked))


class SqliteConversations:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def open_dm(
        self,
        conv: str,
        kind: str,
        a: str,
        b: str,
        ts: int,
        known_peer: bool = False,
        quota: Quota | None = None,
    ) -> Write[ConvRecord]:
        return Write(open_dm, (conv, kind, a, b, ts, known_peer, quota))

    def create(
        self,
        kind: str,
        prefix: str,
        owner: str,
        author: dict[str, Any],
        name: str,
        attrs: dict[str, Any],
        ts: int,
        quota: Quota | None = None,
    ) -> Write[tuple[ConvRecord, SystemMessage]]:
        return Write(create, (kind, prefix, owner, author, name, attrs, ts, quota))

    def announce(
        self, conv: str, actor: str, author: dict[str, Any], text: str, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]:
        return Write(announce, (conv, actor, author, text, ts, check))

    async def get(self, conv: str) -> ConvRecord | None:
        row = await self.db.fetchone(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,))
        return record(row) if row else None

    async def load(self, conv: str) -> ConvSnapshot | None:
        row = await self.db.fetchone("SELECT kind FROM conversations WHERE id = ?", (conv,))
        if row is None:
            return None
        rows = await self.db.fetchall("SELECT user, role, muted_until FROM members WHERE conv = ?", (conv,))
        return ConvSnapshot(row[0], {u: r for u, r, _ in rows}, {u: m for u, _, m in rows if m})

    async def listing(
        self, kind: str, category: str | None, after: str | None, limit: int
    ) -> tuple[list[ConvRecord], str | None]:
        sql = f"SELECT {CONV_COLUMNS} FROM conversations WHERE kind = ?"
        args: list[Any] = [kind]
        if category is not None:
            sql += " AND category = ?"
            args.append(category)
        if after is not None:
            sql += " AND id > ?"
            args.append(after)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit + 1)
        rows = await self.db.fetchall(sql, args)
        out = [record(r) for r in rows[:limit]]
        return out, (out[-1].conv if len(rows) > limit else None)


def user_seen(tx: Tx, user: str, type: str, name: str, ts: int) -> None:
    tx.execute(
        "INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET type = excluded.type,"
        " name = excluded.name WHERE users.type != excluded.type OR users.name != excluded.name",
        (user, type, name, ts),
    )


def revoke(tx: Tx, user: str, before: int) -> int:
    row = tx.execute(
        "INSERT INTO revocations(user, before) VALUES (?, ?)"
        " ON CONFLICT(user) DO UPDATE SET before = MAX(before, excluded.before) RETURNING before",
        (user, before),
    ).fetchone()
    return int(row[0])


def kick(tx: Tx, user: str, at_ms: int) -> int:
    row = tx.execute(
        "INSERT INTO revocations(user, kicked) VALUES (?, ?)"
        " ON CONFLICT(user) DO UPDATE SET kicked = MAX(kicked, excluded.kicked) RETURNING kicked",
        (user, at_ms),
    ).fetchone()
    return int(row[0])


class SqliteUsers:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def revoke(self, user: str, before: int) -> Write[int]:
        return Write(revoke, (user, before))

    def kick(self, user: str, at_ms: int) -> Write[int]:
        return Write(kick, (user, at_ms))

    async def sign_outs(self, user: str) -> tuple[int, int]:
        row = await self.db.fetchone("SELECT before, kicked FROM revocations WHERE user = ?", (user,))
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def seen(self, user: str, type: str, name: str, ts: int) -> Write[None]:
        return Write(user_seen, (user, type, name, ts))

    async def known(self, user: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM users WHERE id = ?", (user,)) is not None


class SqliteBlocks:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def set(self, blocker: str, blocked: str, on: bool) -> Write[None]:
        return Write(set_block, (blocker, blocked, on))

    async def between(self, a: str, b: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM blocks WHERE (blocker = ? AND blocked = ?) OR (blocker = ? AND blocked = ?)", (a, b, b, a)
        )
        return row is not None
