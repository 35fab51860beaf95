"""Care campaigns (docs/service-groups.md, "Care campaigns"): a backend's claimable
card posted into every service group matching some tags, and the owners' claims.

Making a campaign stores it and counts its targets; the posts go out in chunks
(``post_chunk``, run by a scheduler job under its lease), each chunk one
transaction that appends one system message per group and moves the
campaign's cursor, so a crash resumes where the last committed chunk ended and
no group gets it twice. A claim is the owner's, once; at most ``stock`` claims
succeed in all (one conditional UPDATE decides), and the points a claim credits
go through the ledger with the claim in one transaction: claims times points is
exactly what was credited.
"""

from __future__ import annotations

from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ..base import Write
from ..records import Entry, SystemMessage
from .engine import Reader, Tx
from .events import add_event
from .ledger import POINTS, _credit, _insert, balances_push
from .messages import system

COLUMNS = "id, cid, card, tags, stock, points, targets, posted, claimed, created_ts, done_ts"


def wire(row: Any) -> dict[str, Any]:
    cid_, cid, card, tags, stock, points, targets, posted, claimed, created, done = row
    return {"id": cid_, "cid": cid, "card": orjson.loads(card), "tags": orjson.loads(tags), "stock": stock,
            "points": points, "targets": targets, "posted": posted, "claimed": claimed,
            "left": None if stock is None else stock - claimed, "created_ts": created, "done": done is not None,
            "done_ts": done}


def _matching(tx: Tx, tags: dict[str, str], after: str, limit: int | None) -> list[str] | int:
    """The service groups carrying every tag, in id order after ``after``: their
    ids (``limit``), or how many there are (``limit`` None)."""
    items = sorted(tags.items())
    if not items:
        base, args = "SELECT id FROM conversations WHERE kind = 'service' AND id > ?", [after]
        col = "id"
    else:
        (k0, v0), rest = items[0], items[1:]
        base = "SELECT t.conv FROM service_tags t WHERE t.key = ? AND t.value = ? AND t.conv > ?"
        args = [k0, v0, after]
        for k, v in rest:
            base += " AND EXISTS (SELECT 1 FROM service_tags u WHERE u.key = ? AND u.value = ? AND u.conv = t.conv)"
            args += [k, v]
        col = "t.conv"
    if limit is None:
        return int(tx.execute(f"SELECT COUNT(*) FROM ({base}) t", args).fetchone()[0])
    return [r[0] for r in tx.execute(f"{base} ORDER BY {col} LIMIT ?", [*args, limit]).fetchall()]


def create(
    tx: Tx, actor: str, author: dict[str, Any], cid: str, card: dict[str, Any], tags: dict[str, str],
    stock: int | None, points: int, ts: int,
) -> dict[str, Any]:
    """Store a campaign (idempotent on (actor, cid): the same call again returns
    it, with its progress)."""
    row = tx.execute(f"SELECT {COLUMNS} FROM campaigns WHERE actor = ? AND cid = ?", (actor, cid)).fetchone()
    if row is not None:
        return {**wire(row), "dup": True}
    targets = _matching(tx, tags, "", None)
    cur = tx.execute(
        "INSERT INTO campaigns(actor, cid, author, card, tags, stock, points, targets, created_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (actor, cid, orjson.dumps(author).decode(), orjson.dumps(card).decode(), orjson.dumps(tags).decode(),
         stock, points, targets, ts),
    )
    if targets == 0:
        tx.execute("UPDATE campaigns SET done_ts = ? WHERE id = ?", (ts, cur.lastrowid))
    row = tx.execute(f"SELECT {COLUMNS} FROM campaigns WHERE id = ?", (cur.lastrowid,)).fetchone()
    return {**wire(row), "dup": False}


def post_chunk(tx: Tx, ts: int, limit: int) -> tuple[list[SystemMessage], bool]:
    """Post the oldest unfinished campaign into its next ``limit`` groups. Returns
    the messages and whether more remain (of any campaign)."""
    row = tx.execute(
        "SELECT id, actor, author, card, tags, cursor FROM campaigns WHERE done_ts IS NULL ORDER BY id LIMIT 1"
    ).fetchone()
    if row is None:
        return [], False
    cid, actor, author, card, tags, cursor = row
    convs = _matching(tx, orjson.loads(tags), cursor, limit)
    assert isinstance(convs, list)
    author_d, card_d = orjson.loads(author), orjson.loads(card)
    events: list[SystemMessage] = []
    for conv in convs:
        event = system(tx, conv, actor, author_d, ts, {"type": "card", "card": card_d, "campaign": cid})
        events.append(event)
    tx.executemany("INSERT INTO campaign_posts VALUES (?, ?, ?)",
                        [(cid, e.msg["conv"], e.msg["seq"]) for e in events])
    done = len(convs) < limit
    tx.execute(
        "UPDATE campaigns SET posted = posted + ?, cursor = ?, done_ts = ? WHERE id = ?",
        (len(convs), convs[-1] if convs else cursor, ts if done else None, cid),
    )
    more = not done or tx.execute("SELECT 1 FROM campaigns WHERE done_ts IS NULL LIMIT 1").fetchone() is not None
    return events, more


def claim(
    tx: Tx, user: str, conv: str, campaign: int, ts: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The owner claims the campaign's gift in their own group ``conv``: once
    (again: the same claim, ``dup``), while stock lasts (else CONFLICT). Returns
    the reply and the points push, if points moved."""
    posted = tx.execute("SELECT 1 FROM campaign_posts WHERE campaign = ? AND conv = ?", (campaign, conv)).fetchone()
    if posted is None:  # not posted into this user's own group (yet): nothing to claim here
        raise RequestError(Err.NOT_FOUND, f"no campaign {campaign} in your service group")
    stock, points = tx.execute("SELECT stock, points FROM campaigns WHERE id = ?", (campaign,)).fetchone()
    mine = tx.execute("SELECT points FROM campaign_claims WHERE campaign = ? AND user = ?", (campaign, user)).fetchone()
    if mine is not None:
        claimed = tx.execute("SELECT claimed FROM campaigns WHERE id = ?", (campaign,)).fetchone()[0]
        return {"id": campaign, "points": mine[0], "left": None if stock is None else stock - claimed, "dup": True}, {}
    cur = tx.execute(
        "UPDATE campaigns SET claimed = claimed + 1 WHERE id = ? AND (stock IS NULL OR claimed < stock)", (campaign,)
    )
    if cur.rowcount != 1:
        raise RequestError(Err.CONFLICT, "every gift of this campaign is claimed")
    tx.execute("INSERT INTO campaign_claims VALUES (?, ?, ?, ?)", (campaign, user, points, ts))
    key = f"campaign:{campaign}:claim:{user}"
    push: dict[str, dict[str, Any]] = {}
    if points:
        entry = Entry(key, user, POINTS, points, "campaign.claim", f"campaign:{campaign}", "", ts)
        if _insert(tx, entry):  # the balance moves with its ledger entry, never without
            _credit(tx, user, POINTS, points)
            push = balances_push(tx, [entry])
    add_event(tx, key, "campaign.claimed", user, conv, ts, {"campaign": campaign, "points": points})
    claimed = tx.execute("SELECT claimed FROM campaigns WHERE id = ?", (campaign,)).fetchone()[0]
    return {"id": campaign, "points": points, "left": None if stock is None else stock - claimed, "dup": False}, push


class SqliteCampaigns:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def create(
        self, actor: str, author: dict[str, Any], cid: str, card: dict[str, Any], tags: dict[str, str],
        stock: int | None, points: int, ts: int,
    ) -> Write[dict[str, Any]]:
        return Write(create, (actor, author, cid, card, tags, stock, points, ts))

    def post_chunk(self, ts: int, limit: int) -> Write[tuple[list[SystemMessage], bool]]:
        return Write(post_chunk, (ts, limit))

    def claim(
        self, user: str, conv: str, campaign: int, ts: int
    ) -> Write[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
        return Write(claim, (user, conv, campaign, ts))

    async def get(self, campaign: int) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT {COLUMNS} FROM campaigns WHERE id = ?", (campaign,))
        return None if row is None else wire(row)
