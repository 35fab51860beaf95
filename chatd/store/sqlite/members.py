"""Stored membership: members, their roles, read cursors and mutes."""

from __future__ import annotations

from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ..base import AdminCheck, KindCheck, RoleCheck, Write
from ..records import ConvRecord, MemberView, SystemMessage
from .conversations import CONV_COLUMNS, CONV_WIDTH, get, record
from .engine import Reader, Tx
from .messages import kind_of, role_of, system


def join(tx: Tx, conv: str, user: str, author: dict[str, Any], ts: int, check: KindCheck) -> tuple[
    ConvRecord, SystemMessage, int
]:
    check(kind_of(tx, conv) or "")
    if role_of(tx, conv, user) is not None:
        raise RequestError(Err.CONFLICT, f"already a member of {conv}")
    row = tx.execute("SELECT until FROM mutes WHERE conv = ? AND user = ? AND until > ?", (conv, user, ts)).fetchone()
    muted_until = row[0] if row else 0  # a mute still running binds the member again
    tx.execute(
        "INSERT INTO members(conv, user, role, muted_until) VALUES (?, ?, 'member', ?)", (conv, user, muted_until)
    )
    tx.execute("UPDATE conversations SET member_count = member_count + 1 WHERE id = ?", (conv,))
    event = system(tx, conv, user, author, ts, {"type": "join", "user": user})
    tx.execute(
        "UPDATE members SET joined_seq = ?, read_seq = ? WHERE conv = ? AND user = ?",
        (event.msg["seq"], event.msg["seq"], conv, user),
    )
    tx.flush()  # write the batch counters back: the reply's last_seq counts this op's event
    return get(tx, conv), event, muted_until


def leave(tx: Tx, conv: str, user: str, author: dict[str, Any], ts: int, check: RoleCheck) -> SystemMessage:
    check(kind_of(tx, conv) or "", role_of(tx, conv, user))
    event = system(tx, conv, user, author, ts, {"type": "leave", "user": user})
    tx.execute("DELETE FROM members WHERE conv = ? AND user = ?", (conv, user))
    tx.execute("UPDATE conversations SET member_count = member_count - 1 WHERE id = ?", (conv,))
    return event


def set_role(
    tx: Tx, conv: str, actor: str, author: dict[str, Any], user: str, role: str, ts: int, check: AdminCheck
) -> SystemMessage:
    check(kind_of(tx, conv) or "", role_of(tx, conv, actor), role_of(tx, conv, user))
    tx.execute("UPDATE members SET role = ? WHERE conv = ? AND user = ?", (role, conv, user))
    return system(tx, conv, actor, author, ts, {"type": "role", "user": user, "role": role})


def mute(
    tx: Tx, conv: str, actor: str, author: dict[str, Any], user: str, until: int, ts: int, check: AdminCheck
) -> SystemMessage:
    check(kind_of(tx, conv) or "", role_of(tx, conv, actor), role_of(tx, conv, user))
    tx.execute("UPDATE members SET muted_until = ? WHERE conv = ? AND user = ?", (until, conv, user))
    if until:
        tx.execute(
            "INSERT INTO mutes VALUES (?, ?, ?) ON CONFLICT(conv, user) DO UPDATE SET until = excluded.until",
            (conv, user, until),
        )
    else:
        tx.execute("DELETE FROM mutes WHERE conv = ? AND user = ?", (conv, user))
    return system(tx, conv, actor, author, ts, {"type": "mute", "user": user, "until": until})


def mark_read(tx: Tx, conv: str, user: str, seq: int) -> tuple[int, int, bool]:
    before = tx.execute("SELECT read_seq FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone()
    if before is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    row = tx.execute(
        "UPDATE members SET read_seq = MAX(read_seq, MIN(?, (SELECT last_seq FROM conversations WHERE id = ?)))"
        " WHERE conv = ? AND user = ? RETURNING read_seq,"
        " (SELECT last_seq FROM conversations WHERE id = ?)",
        (seq, conv, conv, user, conv),
    ).fetchone()
    return row[0], row[1] - row[0], row[0] != before[0]


def _member(user: str, role: str, muted_until: int, badges: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"user": user, "role": role, "muted_until": muted_until}
    if badges is not None:  # given by a backend (service groups' staff)
        out["badges"] = orjson.loads(badges)
    return out


class SqliteMembers:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def join(
        self, conv: str, user: str, author: dict[str, Any], ts: int, check: KindCheck
    ) -> Write[tuple[ConvRecord, SystemMessage, int]]:
        return Write(join, (conv, user, author, ts, check))

    def leave(self, conv: str, user: str, author: dict[str, Any], ts: int, check: RoleCheck) -> Write[SystemMessage]:
        return Write(leave, (conv, user, author, ts, check))

    def set_role(
        self, conv: str, actor: str, author: dict[str, Any], user: str, role: str, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]:
        return Write(set_role, (conv, actor, author, user, role, ts, check))

    def mute(
        self, conv: str, actor: str, author: dict[str, Any], user: str, until: int, ts: int, check: AdminCheck
    ) -> Write[SystemMessage]:
        return Write(mute, (conv, actor, author, user, until, ts, check))

    def mark_read(self, conv: str, user: str, seq: int) -> Write[tuple[int, int, bool]]:
        return Write(mark_read, (conv, user, seq))

    async def convs_of(self, user: str) -> list[str]:
        rows = await self.db.fetchall("SELECT conv FROM members WHERE user = ?", (user,))
        return [r[0] for r in rows]

    async def joined_seq(self, conv: str, user: str) -> int | None:
        row = await self.db.fetchone("SELECT joined_seq FROM members WHERE conv = ? AND user = ?", (conv, user))
        return None if row is None else int(row[0])

    async def page(self, conv: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        rows = await self.db.fetchall(
            "SELECT user, role, muted_until, badges FROM members WHERE conv = ? AND user > ? ORDER BY user LIMIT ?",
            (conv, after or "", limit + 1),
        )
        out = [_member(*row) for row in rows[:limit]]
        return out, (out[-1]["user"] if len(rows) > limit else None)

    async def view(self, user: str, after: str | None, limit: int) -> tuple[list[MemberView], str | None]:
        rows = await self.db.fetchall(
            f"SELECT {', '.join('c.' + c.strip() for c in CONV_COLUMNS.split(','))},"
            " m.role, m.read_seq, m.muted_until FROM members m JOIN conversations c ON c.id = m.conv"
            " WHERE m.user = ? AND m.conv > ? ORDER BY m.conv LIMIT ?",
            (user, after or "", limit + 1),
        )
        w = CONV_WIDTH
        out = [MemberView(record(r[:w]), r[w], r[w + 1], r[w + 2]) for r in rows[:limit]]
        return out, (out[-1].record.conv if len(rows) > limit else None)
