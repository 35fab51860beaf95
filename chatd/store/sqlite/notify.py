"""Offline notifications: users' settings, the planner's reads and its one write
per batch, and the notifications the hooks read past their cursors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgpack

from ..base import Write
from ..records import TEXT, HookFailure, Notification, NotifyContext, NotifyPrefs, NotifySource, NotifyState
from .engine import Reader, Tx

PLANNER = "notify"  # the planner's cursor (hook_cursors: 'notify' / 'messages')
CHUNK = 500  # ids per IN (...) list, under SQLite's variable limit

_STATE_COLUMNS = "user, conv, conv_kind, last_at, pending, last_seq, sender, sender_name, preview, reason"
_NOTE_COLUMNS = "key, user, conv, conv_kind, reason, seq, count, sender, sender_name, preview, silent, ts"


def hook_cursor(name: str) -> str:
    return f"notify:{name}"


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def init(tx: Tx, names: Sequence[str]) -> None:
    """First run: the planner starts at the head (no notifications for history)
    and a hook seen for the first time at the newest notification."""
    tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'messages', ?)", (PLANNER, tx.head()))
    last = tx.execute("SELECT COALESCE(MAX(id), 0) FROM notifications").fetchone()[0]
    for name in names:
        tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'notifications', ?)", (hook_cursor(name), last))


def plan(tx: Tx, cursor: int | None, notes: Sequence[Notification], states: Sequence[NotifyState]) -> int:
    """Store what the planner decided: the notifications (once per key), the
    coalescing state, and its cursor, together. Returns notifications added."""
    added = 0
    for n in notes:
        cur = tx.execute(
            f"INSERT OR IGNORE INTO notifications({_NOTE_COLUMNS}) VALUES ({_marks(12)})",
            (n.key, n.user, n.conv, n.conv_kind, n.reason, n.seq, n.count, n.sender, n.sender_name, n.preview,
             int(n.silent), n.ts),
        )
        added += cur.rowcount
    for s in states:
        tx.execute(
            f"INSERT OR REPLACE INTO notify_state({_STATE_COLUMNS}) VALUES ({_marks(10)})",
            (s.user, s.conv, s.conv_kind, s.last_at, s.pending, s.last_seq, s.sender, s.sender_name, s.preview,
             s.reason),
        )
    if cursor is not None:
        tx.execute("UPDATE hook_cursors SET pos = ? WHERE hook = ? AND source = 'messages'", (cursor, PLANNER))
    return added


def delivered(tx: Tx, name: str, last_id: int, failure: HookFailure | None, ts: int) -> None:
    tx.execute(
        "UPDATE hook_cursors SET pos = ? WHERE hook = ? AND source = 'notifications'", (last_id, hook_cursor(name))
    )
    if failure is not None:
        tx.execute(
            "INSERT OR REPLACE INTO hook_failures VALUES (?, ?, ?, ?, ?)",
            (hook_cursor(name), failure.key, failure.attempts, failure.error[:500], ts),
        )


def prune(tx: Tx, before: int, idle_before: int) -> int:
    """Forget notifications older than ``before`` that every hook has had, and
    coalescing state idle since ``idle_before``."""
    cur = tx.execute(
        "DELETE FROM notifications WHERE ts < ? AND id <= COALESCE("
        "(SELECT MIN(pos) FROM hook_cursors WHERE source = 'notifications'), 0)",
        (before,),
    )
    tx.execute("DELETE FROM notify_state WHERE pending = 0 AND last_at < ?", (idle_before,))
    return cur.rowcount


def set_prefs(
    tx: Tx, user: str, muted_until: int | None, quiet: tuple[int, int, int] | None, quiet_off: bool
) -> NotifyPrefs:
    tx.execute("INSERT OR IGNORE INTO notify_prefs(user) VALUES (?)", (user,))
    if muted_until is not None:
        tx.execute("UPDATE notify_prefs SET muted_until = ? WHERE user = ?", (muted_until, user))
    if quiet is not None:
        tx.execute(
            "UPDATE notify_prefs SET quiet_from = ?, quiet_to = ?, utc_offset = ? WHERE user = ?", (*quiet, user)
        )
    elif quiet_off:
        tx.execute("UPDATE notify_prefs SET quiet_from = NULL, quiet_to = NULL WHERE user = ?", (user,))
    row = tx.execute(
        "SELECT muted_until, quiet_from, quiet_to, utc_offset FROM notify_prefs WHERE user = ?", (user,)
    ).fetchone()
    return NotifyPrefs(*row)


def set_conv_mute(tx: Tx, user: str, conv: str, until: int) -> int:
    if until:
        tx.execute(
            "INSERT INTO notify_mutes VALUES (?, ?, ?) ON CONFLICT(user, conv) DO UPDATE SET until = excluded.until",
            (user, conv, until),
        )
    else:
        tx.execute("DELETE FROM notify_mutes WHERE user = ? AND conv = ?", (user, conv))
    return until


class SqliteNotifications:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    # -- the planner ----------------------------------------------------------

    def init(self, names: Sequence[str]) -> Write[None]:
        return Write(init, (tuple(names),))

    async def cursors(self) -> tuple[int, dict[str, int]]:
        rows = await self.db.fetchall(
            "SELECT hook, source, pos FROM hook_cursors WHERE (hook = ? AND source = 'messages')"
            " OR (hook LIKE 'notify:%' AND source = 'notifications')",
            (PLANNER,),
        )
        planner = next((pos for hook, source, pos in rows if source == "messages"), 0)
        return planner, {hook[len("notify:") :]: pos for hook, source, pos in rows if source == "notifications"}

    async def sources(self, after: int, limit: int) -> tuple[int, list[NotifySource]]:
        rows = await self.db.fetchall(
            "SELECT m.pos, m.conv, m.seq, m.sender, m.ts, m.kind, m.recalled, m.data, c.kind"
            " FROM messages m JOIN conversations c ON c.id = m.conv WHERE m.pos > ? ORDER BY m.pos LIMIT ?",
            (after, limit),
        )
        out = []
        for pos, conv, seq, sender, ts, kind, recalled, data, conv_kind in rows:
            if kind != TEXT or recalled:
                continue  # system messages (joins, announcements) and recalled texts notify nobody
            d = msgpack.unpackb(data)
            author = d.get("a") or {}
            out.append(
                NotifySource(
                    pos, conv, conv_kind, seq, sender, str(author.get("name") or sender), ts, d.get("t", ""),
                    tuple(d.get("m") or ()), bool(d.get("ma")),
                )
            )
        return (rows[-1][0] if rows else after), out

    async def audience(self, convs: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {c: {} for c in convs}
        for chunk in _chunks(list(convs)):
            for conv, user, read_seq in await self.db.fetchall(
                f"SELECT conv, user, read_seq FROM members WHERE conv IN ({_marks(len(chunk))})", tuple(chunk)
            ):
                out[conv][user] = read_seq
        return out

    async def context(self, pairs: Sequence[tuple[str, str]], senders: Sequence[tuple[str, str]]) -> NotifyContext:
        """Settings of the users in ``pairs`` (user, conv), their conversation
        mutes and coalescing state, and which (recipient, sender) of ``senders``
        are blocks."""
        ctx = NotifyContext()
        users = sorted({u for u, _ in pairs})
        for chunk in _chunks(users):
            marks, args = _marks(len(chunk)), tuple(chunk)
            for user, *prefs in await self.db.fetchall(
                f"SELECT user, muted_until, quiet_from, quiet_to, utc_offset FROM notify_prefs WHERE user IN ({marks})",
                args,
            ):
                ctx.prefs[user] = NotifyPrefs(*prefs)
            for user, conv, until in await self.db.fetchall(
                f"SELECT user, conv, until FROM notify_mutes WHERE user IN ({marks})", args
            ):
                ctx.conv_mutes[(user, conv)] = until
            for row in await self.db.fetchall(
                f"SELECT {_STATE_COLUMNS} FROM notify_state WHERE user IN ({marks})", args
            ):
                ctx.states[(row[0], row[1])] = NotifyState(*row)
        wanted = set(pairs)
        ctx.conv_mutes = {k: v for k, v in ctx.conv_mutes.items() if k in wanted}
        ctx.states = {k: v for k, v in ctx.states.items() if k in wanted}
        blockers = sorted({r for r, _ in senders})
        pairs_set = set(senders)
        for chunk in _chunks(blockers):
            for blocker, blocked in await self.db.fetchall(
                f"SELECT blocker, blocked FROM blocks WHERE blocker IN ({_marks(len(chunk))})", tuple(chunk)
            ):
                if (blocker, blocked) in pairs_set:
                    ctx.blocked.add((blocker, blocked))
        return ctx

    async def due(self, before: int, limit: int) -> list[tuple[NotifyState, int]]:
        """Coalesced messages whose interval has passed (last emitted before
        ``before``), with the user's read cursor there (-1: no longer a member)."""
        rows = await self.db.fetchall(
            f"SELECT {', '.join('s.' + c for c in _STATE_COLUMNS.split(', '))}, COALESCE(m.read_seq, -1)"
            " FROM notify_state s LEFT JOIN members m ON m.conv = s.conv AND m.user = s.user"
            " WHERE s.pending > 0 AND s.last_at <= ? ORDER BY s.last_at LIMIT ?",
            (before, limit),
        )
        return [(NotifyState(*row[:10]), row[10]) for row in rows]

    def plan(
        self, cursor: int | None, notes: Sequence[Notification], states: Sequence[NotifyState]
    ) -> Write[int]:
        return Write(plan, (cursor, tuple(notes), tuple(states)))

    def prune(self, before: int, idle_before: int) -> Write[int]:
        return Write(prune, (before, idle_before))

    # -- the hooks' side ----------------------------------------------------------

    async def after(self, id: int, limit: int) -> list[Notification]:
        rows = await self.db.fetchall(
            f"SELECT {_NOTE_COLUMNS}, id FROM notifications WHERE id > ? ORDER BY id LIMIT ?", (id, limit)
        )
        return [
            Notification(k, u, c, ck, r, seq, n, s, sn, p, bool(silent), ts, i)
            for k, u, c, ck, r, seq, n, s, sn, p, silent, ts, i in rows
        ]

    def delivered(self, name: str, last_id: int, failure: HookFailure | None, ts: int) -> Write[None]:
        return Write(delivered, (name, last_id, failure, ts))

    # -- a user's settings ------------------------------------------------------

    async def prefs(self, user: str) -> NotifyPrefs:
        row = await self.db.fetchone(
            "SELECT muted_until, quiet_from, quiet_to, utc_offset FROM notify_prefs WHERE user = ?", (user,)
        )
        return NotifyPrefs(*row) if row else NotifyPrefs()

    async def conv_mute(self, user: str, conv: str) -> int:
        row = await self.db.fetchone("SELECT until FROM notify_mutes WHERE user = ? AND conv = ?", (user, conv))
        return int(row[0]) if row else 0

    def set_prefs(
        self, user: str, muted_until: int | None, quiet: tuple[int, int, int] | None, quiet_off: bool
    ) -> Write[NotifyPrefs]:
        return Write(set_prefs, (user, muted_until, quiet, quiet_off))

    def set_conv_mute(self, user: str, conv: str, until: int) -> Write[int]:
        return Write(set_conv_mute, (user, conv, until))
