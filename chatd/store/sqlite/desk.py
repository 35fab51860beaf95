"""The service desk: service requests and their statuses, episodes, ratings and
their credit, the staff inbox, and the overdue scan (docs/service-groups.md).

Writes run on the writer thread in one transaction each and check the actor's
role in the group there; reads are coroutines on the reader. A group's clock
state (``service_state``) is also written by every text message in it
(``clocks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ...policy import credit, report_rows
from ..base import DeskActor, KindCheck, Write
from ..records import TEXT, SystemMessage, unpack
from .clocks import BOT, FELLOW, OWNER, STAFF, STATE_COLUMNS, open_episode, start_waiting
from .engine import Reader, Tx
from .events import add_event
from .messages import kind_of, role_of, system

URGENT_TYPES = frozenset({"rescue"})
NEXT_STATUS = {
    "open": frozenset({"accepted", "cancelled"}),
    "accepted": frozenset({"in_progress", "cancelled"}),
    "in_progress": frozenset({"done", "cancelled"}),
}
FINAL = frozenset({"done", "cancelled"})
REQUEST_COLUMNS = "id, type, status, urgent, note, episode, created_ts, updated_ts, updated_by"
# the inbox's order: waiting rows by waiting time (oldest first), then the others,
# most recently active first (a key past any waiting time)
KEY_TOP = 2**53 - 1
SORT_KEY = f"COALESCE(s.waiting_since, {KEY_TOP} - s.last_activity)"
PREVIEW = 80

Actor = DeskActor  # user, author, whether a backend (the admin scope) acts


def _request(tx: Tx, conv: str, number: int) -> Any:
    return tx.execute(f"SELECT {REQUEST_COLUMNS} FROM service_requests WHERE conv = ? AND id = ?",
                      (conv, number)).fetchone()


def request_wire(conv: str, row: Sequence[Any]) -> dict[str, Any]:
    rid, rtype, status, urgent, note, episode, created, updated, by = row
    return {"conv": conv, "id": rid, "type": rtype, "status": status, "urgent": bool(urgent), "note": note,
            "episode": episode, "created_ts": created, "updated_ts": updated, "updated_by": by}


def _role(tx: Tx, conv: str, actor: Actor, check: KindCheck) -> str | None:
    """The actor's role in the group (None: a backend that is no member). An
    outsider is refused ``not_member`` before anything else is read, whether or not
    the group exists: who is a car owner is nobody else's business. A backend may
    act in any group, and learns that one does not exist."""
    role = role_of(tx, conv, actor[0])
    if role is None and not actor[2]:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    check(kind_of(tx, conv) or "")
    return role


def _staff_or_backend(tx: Tx, conv: str, actor: Actor, check: KindCheck, what: str) -> None:
    role = _role(tx, conv, actor, check)
    if not actor[2] and role not in (FELLOW, STAFF):
        raise RequestError(Err.FORBIDDEN, f"only the Fellow and staff {what}")


def _state(tx: Tx, conv: str) -> tuple[Any, ...]:
    row = tx.execute(f"SELECT {STATE_COLUMNS} FROM service_state WHERE conv = ?", (conv,)).fetchone()
    if row is None:  # pragma: no cover - a group's row is made with it
        raise RequestError(Err.NOT_FOUND, f"no service group {conv}")
    return tuple(row)


def open_request(
    tx: Tx, conv: str, actor: Actor, rtype: str, note: str, rid: str, ts: int, policy: Any, check: KindCheck
) -> tuple[dict[str, Any], SystemMessage | None]:
    """The owner opens a typed request; it opens an episode if none is open and
    starts the clock if it is not running (urgent: the urgent target). Idempotent
    on the owner's ``rid``: the same request comes back (``dup``)."""
    user, author, _ = actor
    if _role(tx, conv, actor, check) != OWNER:
        raise RequestError(Err.FORBIDDEN, "only the owner opens a service request")
    known = tx.execute(f"SELECT {REQUEST_COLUMNS} FROM service_requests WHERE conv = ? AND rid = ?",
                       (conv, rid)).fetchone()
    if known is not None:
        return {**request_wire(conv, known), "dup": True}, None
    episode, is_open, _, waiting_since, _due, answered, urgent_open = _state(tx, conv)
    number = tx.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM service_requests WHERE conv = ?", (conv,)).fetchone()[0]
    urgent = rtype in URGENT_TYPES
    event = system(tx, conv, user, author, ts, {"type": "request", "id": number, "request": rtype, "status": "open",
                                                  "urgent": urgent, "note": note})
    seq = event.msg["seq"]
    if not is_open:
        episode = open_episode(tx, conv, seq, ts, episode)
        answered = 0
    tx.execute(
        "INSERT INTO service_requests(conv, id, type, status, urgent, note, rid, episode, created_ts, updated_ts,"
        " updated_by) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)",
        (conv, number, rtype, int(urgent), note, rid, episode, ts, ts, user),
    )
    tx.execute("UPDATE service_state SET rev = rev + 1, requests = requests + 1, urgent = urgent + ?, last_activity = ? WHERE conv = ?",
               (int(urgent), ts, conv))
    if waiting_since is None:  # urgent: this request, or another still open
        start_waiting(tx, conv, seq, ts, policy, urgent or urgent_open > 0, bool(answered))
    elif urgent:  # already waiting: an urgent request brings the due time forward, never back
        tx.execute("UPDATE service_state SET rev = rev + 1, due = MIN(due, ?) WHERE conv = ?", (policy.due(ts, True, False), conv))
    row = _request(tx, conv, number)
    return {**request_wire(conv, row), "dup": False}, event


def set_status(
    tx: Tx, conv: str, number: int, status: str, actor: Actor, ts: int, check: KindCheck
) -> tuple[dict[str, Any], SystemMessage | None]:
    """Staff (or the backend) move a request on: open -> accepted -> in_progress
    -> done, or cancelled from any open status; the owner may only cancel. The
    same status again changes nothing."""
    user, author, backend = actor
    role = _role(tx, conv, actor, check)
    if not backend:
        if role == BOT or (role == OWNER and status != "cancelled"):
            raise RequestError(Err.FORBIDDEN, "staff move requests on; the owner may cancel theirs")
    row = _request(tx, conv, number)
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no request {number} in {conv}")
    previous, urgent = row[2], row[3]
    if previous == status:
        return request_wire(conv, row), None
    if status not in NEXT_STATUS.get(previous, ()):
        raise RequestError(Err.CONFLICT, f"a request that is {previous} cannot become {status}")
    tx.execute("UPDATE service_requests SET status = ?, updated_ts = ?, updated_by = ? WHERE conv = ? AND id = ?",
               (status, ts, user, conv, number))
    if status in FINAL:
        tx.execute("UPDATE service_state SET rev = rev + 1, requests = requests - 1, urgent = urgent - ? WHERE conv = ?",
                   (urgent, conv))
    event = system(tx, conv, user, author, ts, {"type": "request", "id": number, "request": row[1], "status": status,
                                                  "previous": previous})
    row = _request(tx, conv, number)
    return request_wire(conv, row), event


def close_episode(
    tx: Tx, conv: str, actor: Actor, ts: int, policy: Any, check: KindCheck, reason: str = "closed",
    which: int | None = None,
) -> tuple[int | None, SystemMessage | None]:
    """Close the open episode (staff, the backend, or the idle scan): the clock
    stops, and the owner is asked for a rating until ``rate_until``. Nothing to
    close, or ``which`` is not the open one (a retry after the owner wrote again):
    (None, None)."""
    _staff_or_backend(tx, conv, actor, check, "close an episode")
    episode, is_open, _, waiting_since, due = _state(tx, conv)[:5]
    if not is_open or (which is not None and which != episode):
        return None, None
    user, author, _ = actor
    fellow = tx.execute("SELECT fellow FROM conversations WHERE id = ?", (conv,)).fetchone()[0]
    tx.execute("UPDATE service_episodes SET closed_ts = ?, closed_by = ?, fellow = ? WHERE conv = ? AND episode = ?",
               (ts, user, fellow, conv, episode))
    tx.execute(
        "UPDATE service_state SET rev = rev + 1, open = 0, state = 'closed', waiting_since = NULL, waiting_seq = NULL, due = NULL,"
        " alerted = 0, answered = 0 WHERE conv = ?",
        (conv,),
    )
    until = ts + policy.rating_window_s * 1000
    event = system(tx, conv, user, author, ts,
                   {"type": "episode", "episode": episode, "state": "closed", "reason": reason, "rate_until": until})
    if waiting_since is not None:  # closed on a waiting customer: on record, and a breach if it was overdue
        tx.execute(
            "INSERT INTO service_replies(conv, seq, episode, user, role, ts, waited, late, first)"
            " VALUES (?, ?, ?, ?, 'close', ?, ?, ?, 0)",
            (conv, event.msg["seq"], episode, user, ts, ts - waiting_since, int(ts > due)),
        )
    return episode, event


def rate(
    tx: Tx, conv: str, episode: int, stars: int, comment: str, actor: Actor, ts: int, policy: Any, check: KindCheck
) -> tuple[dict[str, int], SystemMessage | None, bool]:
    """The owner rates a closed episode, once, within the window. The credit is
    shared by the rule (``chatd.policy.credit``) and stored with the rating."""
    user, author, _ = actor
    if _role(tx, conv, actor, check) != OWNER:
        raise RequestError(Err.FORBIDDEN, "only the owner rates their service")
    row = tx.execute("SELECT fellow, closed_ts, stars, comment FROM service_episodes WHERE conv = ? AND episode = ?",
                     (conv, episode)).fetchone()
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no episode {episode} in {conv}")
    fellow, closed, rated, said = row
    if closed is None:
        raise RequestError(Err.CONFLICT, f"episode {episode} is still open")
    if rated is not None:
        if (rated, said) != (stars, comment):
            raise RequestError(Err.CONFLICT, f"episode {episode} is rated already")
        stored = tx.execute("SELECT user, share FROM service_credit WHERE conv = ? AND episode = ?",
                            (conv, episode)).fetchall()
        return dict(stored), None, True  # the same rating again (a retry): what was stored
    if ts > closed + policy.rating_window_s * 1000:
        raise RequestError(Err.CONFLICT, "the rating window has passed")
    replies = dict(tx.execute(
        "SELECT user, COUNT(*) FROM service_replies WHERE conv = ? AND episode = ? AND role IN ('fellow', 'staff')"
        " GROUP BY user", (conv, episode),
    ).fetchall())
    shares = credit(fellow, replies)
    tx.executemany("INSERT INTO service_credit VALUES (?, ?, ?, ?)",
                        [(conv, episode, u, share) for u, share in shares.items()])
    tx.execute("UPDATE service_episodes SET stars = ?, comment = ?, rated_ts = ? WHERE conv = ? AND episode = ?",
               (stars, comment, ts, conv, episode))
    add_event(tx, f"service.rated:{conv}:{episode}", "service.rated", user, conv, ts,
              {"conv_kind": "service", "episode": episode, "stars": stars, "credit": shares})
    event = system(tx, conv, user, author, ts, {"type": "rated", "episode": episode, "stars": stars})
    return shares, event, False


def claim(tx: Tx, conv: str, seq: int, bot: str, ts: int, policy: Any, check: KindCheck) -> bool:
    """A bot claims a customer message before answering it: the first claim wins;
    the same bot again is answered as before (True: a retry); another bot gets
    CONFLICT. No claim while a human has the episode: after a staff reply for the
    policy's quiet time, and once a bot handed the episode over."""
    if _role(tx, conv, (bot, {}, False), check) != BOT:
        raise RequestError(Err.FORBIDDEN, "only the group's bots claim messages")
    held = tx.execute("SELECT bot FROM service_claims WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    if held is not None:
        if held[0] == bot:
            return True
        raise RequestError(Err.CONFLICT, f"claimed by {held[0]}")
    row = tx.execute("SELECT sender, kind FROM messages WHERE conv = ? AND seq = ?", (conv, seq)).fetchone()
    owner = tx.execute("SELECT owner FROM conversations WHERE id = ?", (conv,)).fetchone()[0]
    if row is None or row[0] != owner or row[1] != TEXT:
        raise RequestError(Err.NOT_FOUND, f"no customer message {seq} in {conv}")
    state, last_staff = tx.execute("SELECT state, last_staff FROM service_state WHERE conv = ?", (conv,)).fetchone()
    if state == "needs_human":
        raise RequestError(Err.CONFLICT, "handed over to a human: bots stay quiet until the episode closes")
    if last_staff and ts < last_staff + policy.bot_quiet_s * 1000:
        raise RequestError(Err.CONFLICT, "a staff member is answering: bots stay quiet")
    tx.execute("INSERT INTO service_claims VALUES (?, ?, ?, ?)", (conv, seq, bot, ts))
    return False


def to_human(
    tx: Tx, conv: str, actor: Actor, text: str, ts: int, check: KindCheck
) -> tuple[str, SystemMessage | None]:
    """A bot hands the episode over: it becomes ``needs_human``, and a ``handover``
    event names the Fellow (who is alerted). Already handed over: nothing changes.
    No episode open: CONFLICT (there is nothing to hand over)."""
    user, author, _ = actor
    if _role(tx, conv, (user, author, False), check) != BOT:
        raise RequestError(Err.FORBIDDEN, "only the group's bots hand over to a human")
    is_open, state = tx.execute("SELECT open, state FROM service_state WHERE conv = ?", (conv,)).fetchone()
    fellow = tx.execute("SELECT fellow FROM conversations WHERE id = ?", (conv,)).fetchone()[0]
    if not is_open:
        raise RequestError(Err.CONFLICT, "no episode is open")
    if state == "needs_human":
        return fellow, None
    tx.execute("UPDATE service_state SET rev = rev + 1, state = 'needs_human', last_activity = ? WHERE conv = ?", (ts, conv))
    event = system(tx, conv, user, author, ts, {"type": "handover", "fellow": fellow, "text": text})
    return fellow, event


def alert(tx: Tx, now: int, escalate_ms: int, badge: str, limit: int) -> list[dict[str, Any]]:
    """Overdue groups not alerted yet: level 1 goes to the Fellow; past the
    escalation threshold, level 2 to the group's staff carrying ``badge``. Each
    level once per wait (the row remembers it, so one scan in a deployment
    alerts once)."""
    out: list[dict[str, Any]] = []
    for level, bound in ((1, now), (2, now - escalate_ms)):
        rows = tx.execute(
            "SELECT s.conv, s.waiting_since, s.due, c.fellow FROM service_state s JOIN conversations c ON c.id = s.conv"
            " WHERE s.due <= ? AND s.alerted = ? LIMIT ?",
            (bound, level - 1, limit),
        ).fetchall()
        for conv, since, due, fellow in rows:
            if level == 1:
                to = [fellow]
            else:
                to = [u for u, b in tx.execute(
                    "SELECT user, badges FROM members WHERE conv = ? AND role IN ('fellow', 'staff')"
                    " AND badges IS NOT NULL", (conv,),
                ).fetchall() if badge in orjson.loads(b)]
            tx.execute("UPDATE service_state SET rev = rev + 1, alerted = ? WHERE conv = ?", (level, conv))
            out.append({"conv": conv, "level": level, "reason": "overdue" if level == 1 else "escalated",
                        "waiting_since": since, "due": due, "to": to})
    return out


def close_idle(tx: Tx, before: int, actor: Actor, ts: int, policy: Any, limit: int) -> list[SystemMessage]:
    """Episodes with no message since ``before`` close (reason ``idle``); never one
    where the customer is waiting: an unanswered customer stays overdue, in the
    inbox, until someone answers."""
    convs = [r[0] for r in tx.execute(
        "SELECT conv FROM service_state WHERE open = 1 AND last_activity <= ? AND waiting_since IS NULL LIMIT ?",
        (before, limit),
    ).fetchall()]
    events: list[SystemMessage] = []
    for conv in convs:
        _, event = close_episode(tx, conv, actor, ts, policy, _any_kind, "idle")
        if event is not None:
            events.append(event)
    return events


def _any_kind(kind: str) -> None:
    """The scan closes groups it found by their state row: they are service groups."""


INBOX_FILTERS = {
    "all": "",
    "waiting": " AND s.waiting_since IS NOT NULL",
    "needs_human": " AND s.state = 'needs_human'",
    "mine": " AND m.role = 'fellow'",
}


def _preview(row: Sequence[Any] | None) -> dict[str, Any] | None:
    if row is None or row[0] is None:
        return None
    sender, ts, _kind, data, recalled, seq = row
    body = unpack(data)
    out: dict[str, Any] = {"seq": seq, "ts": ts, "sender": sender, "name": body.get("a", {}).get("name", sender)}
    if recalled:
        out["recalled"] = True
    elif "t" in body:
        out["text"] = body["t"][:PREVIEW]
    elif "e" in body:
        out["event"] = body["e"].get("type")
    return out


class SqliteDesk:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def open_request(
        self, conv: str, actor: Actor, rtype: str, note: str, rid: str, ts: int, policy: Any, check: KindCheck
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        return Write(open_request, (conv, actor, rtype, note, rid, ts, policy, check))

    def set_status(
        self, conv: str, number: int, status: str, actor: Actor, ts: int, check: KindCheck
    ) -> Write[tuple[dict[str, Any], SystemMessage | None]]:
        return Write(set_status, (conv, number, status, actor, ts, check))

    def close_episode(
        self, conv: str, actor: Actor, ts: int, policy: Any, check: KindCheck, episode: int | None
    ) -> Write[tuple[int | None, SystemMessage | None]]:
        return Write(close_episode, (conv, actor, ts, policy, check, "closed", episode))

    def rate(
        self, conv: str, episode: int, stars: int, comment: str, actor: Actor, ts: int, policy: Any, check: KindCheck
    ) -> Write[tuple[dict[str, int], SystemMessage | None, bool]]:
        return Write(rate, (conv, episode, stars, comment, actor, ts, policy, check))

    def claim(self, conv: str, seq: int, bot: str, ts: int, policy: Any, check: KindCheck) -> Write[bool]:
        return Write(claim, (conv, seq, bot, ts, policy, check))

    def to_human(
        self, conv: str, actor: Actor, text: str, ts: int, check: KindCheck
    ) -> Write[tuple[str, SystemMessage | None]]:
        return Write(to_human, (conv, actor, text, ts, check))

    def alert(self, now: int, escalate_ms: int, badge: str, limit: int) -> Write[list[dict[str, Any]]]:
        return Write(alert, (now, escalate_ms, badge, limit))

    def close_idle(self, before: int, actor: Actor, ts: int, policy: Any, limit: int) -> Write[list[SystemMessage]]:
        return Write(close_idle, (before, actor, ts, policy, limit))

    async def report(self, since: int, until: int, by: str = "person") -> list[dict[str, Any]]:
        """Per person (``by`` "person") or per group ("group"), for episodes closed
        and replies sent in [since, until) (ms), from the stored rows
        (``chatd.policy.report_rows``)."""
        group = by == "group"
        who, credit_who, reply_who = ("e.conv", "e.conv", "r.conv") if group else ("e.fellow", "c.user", "r.user")
        # one statement: one snapshot of the three (a rating committing meanwhile is in all or none)
        rows = await self.db.fetchall(
            # typed NULLs: PostgreSQL resolves a UNION's column types from its first branch
            f"SELECT 'e', {who}, e.stars, CAST(NULL AS INTEGER), CAST(NULL AS INTEGER), CAST(NULL AS TEXT)"
            " FROM service_episodes e"
            " WHERE e.closed_ts >= ? AND e.closed_ts < ?"
            f" UNION ALL SELECT 'c', {credit_who}, SUM(c.share), NULL, NULL, NULL FROM service_episodes e"
            " JOIN service_credit c ON c.conv = e.conv AND c.episode = e.episode"
            f" WHERE e.closed_ts >= ? AND e.closed_ts < ? GROUP BY {credit_who}"
            f" UNION ALL SELECT 'r', {reply_who}, r.waited, r.late, r.first, r.role FROM service_replies r"
            " WHERE r.ts >= ? AND r.ts < ? AND r.role IN ('fellow', 'staff', 'close')",
            (since, until, since, until, since, until),
        )
        episodes = [(r[1], r[2]) for r in rows if r[0] == "e"]
        credit = {r[1]: r[2] for r in rows if r[0] == "c"}
        replies = [(r[1], r[2], r[3], r[4]) for r in rows if r[0] == "r" and r[5] != "close"]
        closes = [(r[1], r[2], r[3]) for r in rows if r[0] == "r" and r[5] == "close"]
        return report_rows(episodes, credit, replies, "conv" if group else "user", closes)

    async def requests(self, conv: str, open_only: bool) -> list[dict[str, Any]]:
        where = " AND status NOT IN ('done', 'cancelled')" if open_only else ""
        rows = await self.db.fetchall(
            f"SELECT {REQUEST_COLUMNS} FROM service_requests WHERE conv = ?{where} ORDER BY id", (conv,)
        )
        return [request_wire(conv, r) for r in rows]

    async def rows(self, convs: Sequence[str]) -> list[dict[str, Any]]:
        """The group-level part of inbox rows (what an ``inbox`` push carries)."""
        if not convs:
            return []
        marks = ",".join("?" * len(convs))
        rows = await self.db.fetchall(
            "SELECT s.conv, c.last_seq, s.episode, s.state, s.waiting_since, s.due, s.alerted, s.requests, s.urgent,"
            f" s.last_activity, s.rev FROM service_state s JOIN conversations c ON c.id = s.conv WHERE s.conv IN ({marks})",
            tuple(convs),
        )
        return [_group_row(r) for r in rows]

    async def inbox(
        self, user: str, filter_: str, after: tuple[int, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A staff member's groups as inbox rows, oldest waiting first; the cursor
        of the next page (None: the last page)."""
        key, last = after if after is not None else (-1, "")
        rows = await self.db.fetchall(
            # the inner query ranks every membership by the key and keeps a page;
            # only the page's rows are joined with the rest (the conversation, the
            # caller's cursor, the last message, the owner's name)
            "SELECT p.k, p.conv, c.last_seq, s.episode, s.state, s.waiting_since, s.due, s.alerted, s.requests,"
            " s.urgent, s.last_activity, s.rev, mm.read_seq, p.role, c.owner,"
            " lm.sender, lm.ts, lm.kind, lm.data, lm.recalled, lm.seq, u.name FROM ("
            f" SELECT {SORT_KEY} AS k, s.conv AS conv, m.role AS role"
            " FROM members m CROSS JOIN service_state s"
            " WHERE m.user = ? AND m.role IN ('fellow', 'staff') AND s.conv = m.conv"
            f"{INBOX_FILTERS[filter_]} AND ({SORT_KEY}, s.conv) > (?, ?)"
            f" ORDER BY {SORT_KEY}, s.conv LIMIT ?) p"
            " CROSS JOIN service_state s ON s.conv = p.conv CROSS JOIN conversations c ON c.id = p.conv"
            " CROSS JOIN members mm ON mm.conv = p.conv AND mm.user = ?"
            " LEFT JOIN messages lm ON lm.conv = p.conv AND lm.seq = c.last_seq"
            " LEFT JOIN users u ON u.id = c.owner ORDER BY p.k, p.conv",
            (user, key, last, limit + 1, user),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        convs = [r[1] for r in rows]
        open_requests: dict[str, list[dict[str, Any]]] = {c: [] for c in convs}
        if convs:
            marks = ",".join("?" * len(convs))
            for r in await self.db.fetchall(
                f"SELECT conv, {REQUEST_COLUMNS} FROM service_requests WHERE conv IN ({marks})"
                " AND status NOT IN ('done', 'cancelled') ORDER BY conv, id", tuple(convs),
            ):
                open_requests[r[0]].append(request_wire(r[0], r[1:]))
        out = []
        for r in rows:
            row = _group_row(r[1:12])
            row.update(
                owner={"id": r[14], "name": r[21] or r[14]},
                unread=r[2] - r[12],
                role=r[13],
                last=_preview(r[15:21]),
                open_requests=open_requests[r[1]],
            )
            out.append(row)
        cursor = f"{rows[-1][0]}:{rows[-1][1]}" if more and rows else None
        return out, cursor


def _group_row(r: Sequence[Any]) -> dict[str, Any]:
    conv, last_seq, episode, state, waiting, due, alerted, requests, urgent, activity, rev = r
    return {"conv": conv, "rev": rev, "last_seq": last_seq, "episode": episode or None, "state": state,
            "waiting_since": waiting, "due": due, "overdue": alerted, "requests": requests, "urgent": urgent > 0,
            "last_activity": activity or None}
