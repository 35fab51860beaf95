"""The ledger: append-only entries whose id is their idempotency key, balances
that never go negative, daily caps, tips and red packets.

Write functions run on the store's writer thread inside a batch (``Tx``), so
every check and every move of points is one SQLite transaction: concurrent
claims from many sockets and several processes are serialised by SQLite and
can never over-pay. Conservation: the sum of all balances plus the points held
in open red packets equals the sum of all awards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
from chatd_protocol import Err, RequestError

from ..base import Write
from ..records import TEXT, Entry, SystemMessage
from .engine import Reader, Tx
from .events import add_event
from .messages import system

POINTS = "points"  # spendable; 100 points = 10 yuan
CV = "cv"  # contribution value: ranks users, never spendable


def _insert(tx: Tx, e: Entry) -> bool:
    """Append ``e`` unless its key is known. True if it was new."""
    cur = tx.execute(
        "INSERT OR IGNORE INTO ledger(key, user, currency, amount, rule, ref, note, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (e.key, e.user, e.currency, e.amount, e.rule, e.ref, e.note, e.ts),
    )
    return cur.rowcount == 1


CREDIT = (
    "INSERT INTO balances(user, currency, amount) VALUES (?, ?, ?)"
    " ON CONFLICT(user, currency) DO UPDATE SET amount = amount + excluded.amount"
)
NEW_ENTRY = "INSERT INTO ledger(key, user, currency, amount, rule, ref, note, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
COUNT_DAILY = (
    "INSERT INTO daily(user, rule, day, n) VALUES (?, ?, ?, ?) ON CONFLICT(user, rule, day) DO UPDATE SET n = n + excluded.n"
)


def _credit(tx: Tx, user: str, currency: str, amount: int) -> None:
    tx.execute(CREDIT, (user, currency, amount))


def _debit(tx: Tx, user: str, amount: int) -> None:
    cur = tx.execute(
        "UPDATE balances SET amount = amount - ? WHERE user = ? AND currency = 'points' AND amount >= ?",
        (amount, user, amount),
    )
    if cur.rowcount != 1:
        raise RequestError(Err.INSUFFICIENT, f"not enough points (need {amount})")


def apply_awards(tx: Tx, awards: Sequence[Any], ts: int) -> list[Entry]:
    """Apply hook awards; returns the entries that were new (a retried award's
    key is known and is skipped). An award past its rule's daily cap is
    recorded with amount 0 and a note.

    One call is one worker batch (hundreds of awards, a few per user), written as
    sets: the known keys and the day's counts are read with one lookup each, the
    entries inserted, and each (user, currency) credited and each (user, rule,
    day) counted once with its sum. On PostgreSQL each of those is one statement
    whatever the number of awards (``Tx.lookup``, ``Tx.insert_rows``). The batch
    holds the write lock, so no other writer adds a key meanwhile."""
    fresh: dict[str, Any] = {}
    for a in awards:
        if a.currency not in (POINTS, CV) or a.amount < 0:
            raise ValueError(f"award {a.key}: bad currency or negative amount")
        fresh.setdefault(a.key, a)  # a key seen earlier in the call (the day's check-in, once per message)
    known = tx.lookup("ledger", ("key",), ("id",), [(key,) for key in fresh])
    todo = [a for key, a in fresh.items() if (key,) not in known]
    capped = sorted({(a.user, a.rule, a.day) for a in todo if a.daily_cap is not None and a.amount > 0})
    today = {k: int(v[0]) for k, v in tx.lookup("daily", ("user", "rule", "day"), ("n",), capped).items()}
    counted: Counter[tuple[str, str, str]] = Counter()
    credits: Counter[tuple[str, str]] = Counter()
    applied = []
    for a in todo:
        amount, note = a.amount, ""
        if a.daily_cap is not None and a.amount > 0:
            ck = (a.user, a.rule, a.day)
            if today.get(ck, 0) + counted[ck] >= a.daily_cap:
                amount, note = 0, f"daily cap {a.daily_cap} reached"
            else:
                counted[ck] += 1
        entry = Entry(a.key, a.user, a.currency, amount, a.rule, a.ref, note, ts)
        applied.append(entry)
        if amount:
            credits[(a.user, a.currency)] += amount
    tx.insert_rows(NEW_ENTRY, [(e.key, e.user, e.currency, e.amount, e.rule, e.ref, e.note, e.ts) for e in applied])
    tx.insert_rows(CREDIT, [(user, currency, n) for (user, currency), n in credits.items()])
    tx.insert_rows(COUNT_DAILY, [(user, rule, day, n) for (user, rule, day), n in counted.items()])
    return applied


def _member(tx: Tx, conv: str, user: str) -> None:
    if tx.execute("SELECT 1 FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone() is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")


def _unmuted(tx: Tx, conv: str, user: str, ts: int) -> None:
    """A muted member sends nothing into the conversation: no tips, no red packets."""
    row = tx.execute("SELECT until FROM mutes WHERE conv = ? AND user = ?", (conv, user)).fetchone()
    if row is not None and row[0] > ts:
        raise RequestError(Err.MUTED, f"you are muted in {conv}")


def _existing(tx: Tx, key: str) -> Any:
    return tx.execute("SELECT amount, ref, ts FROM ledger WHERE key = ?", (key,)).fetchone()


# -- tips ----------------------------------------------------------------------


def tip(tx: Tx, user: str, tid: str, conv: str, seq: int, amount: int, ts: int) -> dict[str, Any]:
    """Move ``amount`` points from ``user`` to the author of message (conv, seq).
    Idempotent on (user, tid)."""
    key = f"tip:{user}:{tid}"
    old = _existing(tx, key + ":out")
    if old is not None:
        return {"to": old[1].split("|")[0], "amount": -old[0], "dup": True}
    _member(tx, conv, user)
    _unmuted(tx, conv, user, ts)
    row = tx.execute("SELECT sender, kind FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    if row is None or row[1] != TEXT:
        raise RequestError(Err.NOT_FOUND, f"no message {conv}#{seq} to tip")
    to = row[0]
    if to == user:
        raise RequestError(Err.BAD_REQUEST, "you cannot tip your own message")
    _debit(tx, user, amount)
    _credit(tx, to, POINTS, amount)
    ref = f"{to}|{conv}#{seq}"
    _insert(tx, Entry(key + ":out", user, POINTS, -amount, "tip", ref, "", ts))
    _insert(tx, Entry(key + ":in", to, POINTS, amount, "tip", f"{user}|{conv}#{seq}", "", ts))
    add_event(tx, key, "tip.sent", user, conv, ts, {"to": to, "seq": seq, "amount": amount})
    return {"to": to, "amount": amount, "dup": False}


# -- red packets ---------------------------------------------------------------


def send_red_packet(
    tx: Tx,
    user: str,
    author: dict[str, Any],
    rid: str,
    conv: str,
    total: int,
    shares: int,
    split: str,
    amounts_of: Callable[[], list[int]],
    ts: int,
    ttl_ms: int,
) -> tuple[dict[str, Any], SystemMessage | None]:
    key = f"redpacket:{user}:{rid}"
    old = _existing(tx, key)
    if old is not None:
        return {"id": old[1], "dup": True}, None
    _member(tx, conv, user)
    _unmuted(tx, conv, user, ts)
    members = tx.execute("SELECT member_count FROM conversations WHERE id = ?", (conv,)).fetchone()
    if members is None:
        raise RequestError(Err.NOT_FOUND, f"no conversation {conv}")
    amounts = amounts_of()
    _debit(tx, user, total)
    n = tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'red_packet' RETURNING value").fetchone()[0]
    pid = f"rp:{n}"
    expires = ts + ttl_ms
    tx.execute(
        "INSERT INTO red_packets(id, conv, sender, total, shares, split, amounts, held, created_ts, expires_ts, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
        (pid, conv, user, total, shares, split, msgpack.packb(amounts), total, ts, expires),
    )
    _insert(tx, Entry(key, user, POINTS, -total, "redpacket.hold", pid, "", ts))
    add_event(tx, key, "redpacket.sent", user, conv, ts, {"id": pid, "total": total, "shares": shares})
    tx.flush()  # system() allocates a seq through the batch counters
    event = system(
        tx,
        conv,
        user,
        author,
        ts,
        {"type": "redpacket", "id": pid, "total": total, "shares": shares, "split": split, "expires": expires},
    )
    return {"id": pid, "expires": expires, "dup": False}, event


def claim_red_packet(tx: Tx, user: str, pid: str, ts: int) -> dict[str, Any]:
    row = tx.execute(
        "SELECT conv, amounts, expires_ts, state, sender FROM red_packets WHERE id = ?", (pid,)
    ).fetchone()
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no red packet {pid}")
    conv, packed, expires, state, sender = row
    if tx.execute("SELECT 1 FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone() is None:
        # the packet's id is no secret (rp:<n> counts up): the refusal must not name its conversation
        raise RequestError(Err.NOT_MEMBER, "not a member of this red packet's conversation")
    mine = tx.execute("SELECT amount FROM red_claims WHERE packet = ? AND user = ?", (pid, user)).fetchone()
    if mine is not None:
        return {"id": pid, "amount": mine[0], "dup": True}
    if state == "expired" or expires <= ts:
        raise RequestError(Err.CONFLICT, "this red packet has expired")
    amounts: list[int] = msgpack.unpackb(packed)
    if not amounts:
        raise RequestError(Err.CONFLICT, "every share of this red packet is taken")
    amount = amounts.pop(0)
    tx.execute("INSERT INTO red_claims(packet, user, amount, ts) VALUES (?, ?, ?, ?)", (pid, user, amount, ts))
    tx.execute(
        "UPDATE red_packets SET amounts = ?, held = held - ?, state = ? WHERE id = ?",
        (msgpack.packb(amounts), amount, "open" if amounts else "done", pid),
    )
    _credit(tx, user, POINTS, amount)
    key = f"{pid}:claim:{user}"
    _insert(tx, Entry(key, user, POINTS, amount, "redpacket.claim", pid, "", ts))
    add_event(tx, key, "redpacket.claimed", user, conv, ts, {"id": pid, "amount": amount, "from": sender})
    return {"id": pid, "amount": amount, "left": len(amounts), "dup": False}


def expire_red_packets(tx: Tx, now: int, limit: int = 500) -> dict[str, dict[str, Any]]:
    """Refund what expired packets still hold to their senders. Returns, per
    sender refunded, the ``points`` push (``{entries, balance}``)."""
    rows = tx.execute(
        "SELECT id, sender, held FROM red_packets WHERE state = 'open' AND expires_ts <= ? LIMIT ?", (now, limit)
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for pid, sender, held in rows:
        tx.execute("UPDATE red_packets SET held = 0, state = 'expired' WHERE id = ?", (pid,))
        if held:
            entry = Entry(f"{pid}:refund", sender, POINTS, held, "redpacket.refund", pid, "", now)
            _credit(tx, sender, POINTS, held)
            _insert(tx, entry)
            out.setdefault(sender, {"entries": []})["entries"].append(entry.wire())
    for user, d in out.items():
        row = tx.execute("SELECT amount FROM balances WHERE user = ? AND currency = 'points'", (user,)).fetchone()
        d["balance"] = {"points": row[0] if row else 0}
    return out


def balances_push(tx: Tx, entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Per user who got an entry that moved points: ``{"entries": [...], "balance":
    {...}}`` for the push. A 0-point entry (past a daily cap) changes nothing: it
    is in the ledger only."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.amount:
            out.setdefault(e.user, {"entries": []})["entries"].append(e.wire())
    for user, d in out.items():
        d["balance"] = {"points": 0, "cv": 0}
        for currency, amount in tx.execute("SELECT currency, amount FROM balances WHERE user = ?", (user,)):
            d["balance"][currency] = amount
    return out


# -- the repository ----------------------------------------------------------


class SqliteLedger:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def apply_awards(self, awards: Sequence[Any], ts: int) -> Write[list[Entry]]:
        return Write(apply_awards, (awards, ts))

    def tip(self, user: str, tid: str, conv: str, seq: int, amount: int, ts: int) -> Write[dict[str, Any]]:
        return Write(tip, (user, tid, conv, seq, amount, ts))

    def send_red_packet(
        self,
        user: str,
        author: dict[str, Any],
        rid: str,
        conv: str,
        total: int,
        shares: int,
        split: str,
        amounts: Callable[[], list[int]],
        ts: int,
        ttl_ms: int,
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        return Write(send_red_packet, (user, author, rid, conv, total, shares, split, amounts, ts, ttl_ms))

    def claim_red_packet(self, user: str, pid: str, ts: int) -> Write[dict[str, Any]]:
        return Write(claim_red_packet, (user, pid, ts))

    def expire_red_packets(self, now: int) -> Write[dict[str, dict[str, Any]]]:
        return Write(expire_red_packets, (now,))

    async def balance(self, user: str) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT currency, amount FROM balances WHERE user = ?", (user,))
        out = {POINTS: 0, CV: 0}
        out.update({c: a for c, a in rows})
        return out

    async def recent(self, user: str, before: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        rows = await self.db.fetchall(
            "SELECT id, key, user, currency, amount, rule, ref, note, ts FROM ledger"
            " WHERE user = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (user, before if before is not None else 2**62, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        entries = [{**Entry(*r[1:]).wire(), "id": r[0]} for r in rows]
        return entries, (rows[-1][0] if more else None)

    async def leaderboard(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT user, amount FROM balances WHERE currency = 'cv' AND amount > 0 ORDER BY amount DESC, user LIMIT ?",
            (limit,),
        )
        return [{"rank": i + 1, "user": u, "cv": a} for i, (u, a) in enumerate(rows)]
