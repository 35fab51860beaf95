"""Conversations, members and blocks.

Write operations run on the writer thread inside a batch and check their own
preconditions against the database, so they stay correct when several
processes share one store. They raise RequestError to refuse; the batch rolls
back that operation alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatd_protocol import Err, RequestError

from . import messages
from .engine import Store, Tx

CONV_COLUMNS = "id, kind, name, category, certified, description, announcement, owner, member_count, last_seq"


@dataclass(frozen=True, slots=True)
class Event:
    """A system message appended by a write op, to be pushed after commit."""

    msg: dict[str, Any]


def dm_id(a: str, b: str) -> str:
    x, y = sorted((a, b))
    return f"dm:{x}:{y}"


def conv_wire(row: Any) -> dict[str, Any]:
    cid, kind, name, category, certified, description, announcement, owner, count, last = row
    out: dict[str, Any] = {
        "conv": cid,
        "kind": kind,
        "name": name,
        "members": count,
        "last_seq": last,
    }
    if kind == "circle":
        out.update(
            category=category,
            certified=bool(certified),
            description=description,
            announcement=announcement,
            owner=owner,
        )
    return out


def system(tx: Tx, conv: str, actor: str, author: dict[str, Any], ts: int, event: dict[str, Any]) -> Event:
    a = messages.append(tx, conv, actor, None, ts, messages.SYSTEM, messages.pack({"a": author, "e": event}))
    return Event(messages.wire(conv, a.seq, a.pos, actor, None, ts, messages.SYSTEM, {"a": author, "e": event}))


def _role(tx: Tx, conv: str, user: str) -> str | None:
    row = tx.execute("SELECT role FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone()
    return row[0] if row else None


def _circle(tx: Tx, conv: str) -> Any:
    row = tx.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,)).fetchone()
    if row is None or row[1] != "circle":
        raise RequestError(Err.NOT_FOUND, f"no circle {conv}")
    return row


def _require_admin(tx: Tx, conv: str, user: str) -> str:
    _circle(tx, conv)
    role = _role(tx, conv, user)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    if role not in ("owner", "admin"):
        raise RequestError(Err.FORBIDDEN, "only the circle's owner and admins may do this")
    return role


# -- write ops ---------------------------------------------------------------


def open_dm(tx: Tx, a: str, b: str, ts: int) -> dict[str, Any]:
    conv = dm_id(a, b)
    blocked = tx.execute(
        "SELECT 1 FROM blocks WHERE (blocker = ? AND blocked = ?) OR (blocker = ? AND blocked = ?)",
        (a, b, b, a),
    ).fetchone()
    if blocked:
        raise RequestError(Err.BLOCKED, "this conversation is blocked")
    cur = tx.execute(
        "INSERT OR IGNORE INTO conversations(id, kind, created_ts, member_count) VALUES (?, 'dm', ?, 2)",
        (conv, ts),
    )
    if cur.rowcount:
        tx.conn.executemany(
            "INSERT INTO members(conv, user, role) VALUES (?, ?, 'member')",
            ((conv, a), (conv, b)),
        )
    row = tx.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,)).fetchone()
    return conv_wire(row)


def set_block(tx: Tx, blocker: str, blocked: str, on: bool) -> None:
    if on:
        tx.execute("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (blocker, blocked))
    else:
        tx.execute("DELETE FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked))


def create_circle(
    tx: Tx,
    owner: str,
    author: dict[str, Any],
    name: str,
    category: str,
    description: str,
    certified: bool,
    ts: int,
) -> tuple[dict[str, Any], Event]:
    (n,) = tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'circle' RETURNING value").fetchone()
    conv = f"c:{n}"
    tx.execute(
        "INSERT INTO conversations(id, kind, name, category, certified, description, owner,"
        " created_ts, member_count) VALUES (?, 'circle', ?, ?, ?, ?, ?, ?, 1)",
        (conv, name, category, int(certified), description, owner, ts),
    )
    tx.execute("INSERT INTO members(conv, user, role, joined_seq) VALUES (?, ?, 'owner', 1)", (conv, owner))
    event = system(tx, conv, owner, author, ts, {"type": "created", "name": name})
    tx.flush()  # write the batch counters back: the reply's last_seq counts this op's event
    row = tx.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,)).fetchone()
    return conv_wire(row), event


def join(tx: Tx, conv: str, user: str, author: dict[str, Any], ts: int) -> tuple[dict[str, Any], Event]:
    _circle(tx, conv)
    if _role(tx, conv, user) is not None:
        raise RequestError(Err.CONFLICT, f"already a member of {conv}")
    tx.execute("INSERT INTO members(conv, user, role) VALUES (?, ?, 'member')", (conv, user))
    tx.execute("UPDATE conversations SET member_count = member_count + 1 WHERE id = ?", (conv,))
    event = system(tx, conv, user, author, ts, {"type": "join", "user": user})
    tx.execute(
        "UPDATE members SET joined_seq = ?, read_seq = ? WHERE conv = ? AND user = ?",
        (event.msg["seq"], event.msg["seq"], conv, user),
    )
    tx.flush()  # write the batch counters back: the reply's last_seq counts this op's event
    row = tx.execute(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,)).fetchone()
    return conv_wire(row), event


def leave(tx: Tx, conv: str, user: str, author: dict[str, Any], ts: int) -> Event:
    _circle(tx, conv)
    role = _role(tx, conv, user)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    if role == "owner":
        raise RequestError(Err.CONFLICT, "the owner cannot leave the circle")
    event = system(tx, conv, user, author, ts, {"type": "leave", "user": user})
    tx.execute("DELETE FROM members WHERE conv = ? AND user = ?", (conv, user))
    tx.execute("UPDATE conversations SET member_count = member_count - 1 WHERE id = ?", (conv,))
    return event


def set_role(tx: Tx, conv: str, actor: str, author: dict[str, Any], user: str, role: str, ts: int) -> Event:
    _require_admin(tx, conv, actor)
    current = _role(tx, conv, user)
    if current is None:
        raise RequestError(Err.NOT_MEMBER, f"{user} is not a member of {conv}")
    if current == "owner":
        raise RequestError(Err.FORBIDDEN, "the owner's role cannot change")
    tx.execute("UPDATE members SET role = ? WHERE conv = ? AND user = ?", (role, conv, user))
    return system(tx, conv, actor, author, ts, {"type": "role", "user": user, "role": role})


def announce(tx: Tx, conv: str, actor: str, author: dict[str, Any], text: str, ts: int) -> Event:
    _require_admin(tx, conv, actor)
    tx.execute("UPDATE conversations SET announcement = ? WHERE id = ?", (text, conv))
    return system(tx, conv, actor, author, ts, {"type": "announce", "text": text})


def mute(tx: Tx, conv: str, actor: str, author: dict[str, Any], user: str, until: int, ts: int) -> Event:
    _require_admin(tx, conv, actor)
    role = _role(tx, conv, user)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"{user} is not a member of {conv}")
    if role in ("owner", "admin"):
        raise RequestError(Err.FORBIDDEN, "admins cannot be muted")
    tx.execute("UPDATE members SET muted_until = ? WHERE conv = ? AND user = ?", (until, conv, user))
    return system(tx, conv, actor, author, ts, {"type": "mute", "user": user, "until": until})


def recall(
    tx: Tx,
    conv: str,
    seq: int,
    actor: str,
    author: dict[str, Any],
    ts: int,
    window_ms: int,
) -> Event:
    row = messages.get(tx, conv, seq)
    if row is None or row[6] != messages.TEXT:
        raise RequestError(Err.NOT_FOUND, f"no message {seq} in {conv}")
    role = _role(tx, conv, actor)
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    sender, sent_ts, recalled = row[3], row[5], row[8]
    if recalled:
        raise RequestError(Err.CONFLICT, "already recalled")
    is_admin = role in ("owner", "admin") and conv.startswith("c:")
    if sender != actor and not is_admin:
        raise RequestError(Err.FORBIDDEN, "only the sender or a circle admin may recall")
    if sender == actor and not is_admin and ts - sent_ts > window_ms:
        raise RequestError(Err.RECALL_WINDOW, "the recall window has passed")
    original_author = messages.msgpack.unpackb(row[7]).get("a", {})
    messages.wipe(tx, conv, seq, original_author)
    return system(tx, conv, actor, author, ts, {"type": "recall", "seq": seq})


def mark_read(tx: Tx, conv: str, user: str, seq: int) -> tuple[int, int, bool]:
    """Move ``user``'s read cursor up to ``seq``: (read_seq, unread, whether it moved)."""
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


# -- reads -------------------------------------------------------------------


@dataclass(slots=True)
class ConvState:
    """What the hot path needs to know about a conversation, cached in memory."""

    id: str
    kind: str
    members: dict[str, str]  # user -> role
    muted: dict[str, int]  # user -> muted until (ms)
    blocked: bool  # DM only: one side blocked the other

    def role(self, user: str) -> str | None:
        return self.members.get(user)


async def load_state(store: Store, conv: str) -> ConvState | None:
    row = await store.fetchone("SELECT kind FROM conversations WHERE id = ?", (conv,))
    if row is None:
        return None
    rows = await store.fetchall("SELECT user, role, muted_until FROM members WHERE conv = ?", (conv,))
    members = {u: r for u, r, _ in rows}
    muted = {u: m for u, _, m in rows if m}
    blocked = False
    if row[0] == "dm" and len(members) == 2:
        a, b = members
        blocked = (
            await store.fetchone(
                "SELECT 1 FROM blocks WHERE (blocker = ? AND blocked = ?) OR (blocker = ? AND blocked = ?)",
                (a, b, b, a),
            )
            is not None
        )
    return ConvState(conv, row[0], members, muted, blocked)


async def user_convs(store: Store, user: str) -> list[str]:
    rows = await store.fetchall("SELECT conv FROM members WHERE user = ?", (user,))
    return [r[0] for r in rows]


async def list_circles(
    store: Store, category: str | None, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    sql = f"SELECT {CONV_COLUMNS} FROM conversations WHERE kind = 'circle'"
    args: list[Any] = []
    if category is not None:
        sql += " AND category = ?"
        args.append(category)
    if after is not None:
        sql += " AND id > ?"
        args.append(after)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit + 1)
    rows = await store.fetchall(sql, args)
    more = len(rows) > limit
    out = [conv_wire(r) for r in rows[:limit]]
    return out, (out[-1]["conv"] if more else None)


async def member_view(
    store: Store, user: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    rows = await store.fetchall(
        f"SELECT {', '.join('c.' + c.strip() for c in CONV_COLUMNS.split(','))},"
        " m.role, m.read_seq, m.muted_until FROM members m JOIN conversations c ON c.id = m.conv"
        " WHERE m.user = ? AND m.conv > ? ORDER BY m.conv LIMIT ?",
        (user, after or "", limit + 1),
    )
    more = len(rows) > limit
    out = []
    for r in rows[:limit]:
        conv = conv_wire(r[:10])
        role, read_seq, muted_until = r[10:]
        conv.update(role=role, read_seq=read_seq, unread=conv["last_seq"] - read_seq, muted_until=muted_until)
        if conv["kind"] == "dm":
            a, b = conv["conv"].split(":")[1:]
            conv["peer"] = b if a == user else a
        out.append(conv)
    return out, (out[-1]["conv"] if more else None)


async def members_page(
    store: Store, conv: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    rows = await store.fetchall(
        "SELECT user, role, muted_until FROM members WHERE conv = ? AND user > ? ORDER BY user LIMIT ?",
        (conv, after or "", limit + 1),
    )
    more = len(rows) > limit
    out = [{"user": u, "role": r, "muted_until": m} for u, r, m in rows[:limit]]
    return out, (out[-1]["user"] if more else None)


async def conversation(store: Store, conv: str) -> dict[str, Any] | None:
    row = await store.fetchone(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conv,))
    return conv_wire(row) if row else None
