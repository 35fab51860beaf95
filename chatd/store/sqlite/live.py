"""Live Q&A sessions and polls (docs/live-sessions.md).

A session is a row of ``live_sessions``; its rooms are conversations of kind
``live`` (their audience chat lines are messages, gapless as everywhere); its
hosts and moderators are rows of ``live_roles``. Viewers are not stored.

Questions and votes: a vote and its question's count change in one
transaction, and every change to a session's questions moves the session's
``version``, so every process's copy of the ranking can tell a newer count from
an older one whatever order the bus delivers them in. Who may do what is
decided here, from the roles read in the same transaction.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ..base import Write
from ..records import LIVE_MODERATORS as MODERATORS
from ..records import TEXT, message_wire, pack
from .engine import Reader, Tx
from .events import add_event
from .ledger import CV
from .messages import append, system

SESSION_COLUMNS = (
    "id, creator, title, description, state, starts_ts, approval, anonymous, slow_s, ask_interval_s, rooms,"
    " pinned, version, peak, created_ts, started_ts, ended_ts"
)
QUESTION_COLUMNS = (
    "id, session, room, asker, author, anonymous, text, state, votes, created_ts, answer, answered_live,"
    " answered_by, answered_ts, merged_into"
)
POLL_COLUMNS = "id, conv, creator, question, options, multi, weighted, closes_ts, closed_ts, version, created_ts"
# the transitions a session's state may take (same state again: nothing changes)
NEXT_STATES = {"scheduled": ("live", "ended"), "live": ("ended",), "ended": ("archived",), "archived": ()}
ASKABLE = ("scheduled", "live")  # questions may be asked before the start (a waiting room)
USER_TYPES = ("owner", "deposit", "fan", "staff", "bot")
MAX_WEIGHT = 100


def poll_weight(cv: int) -> int:
    """A weighted vote's weight: 1 + floor(sqrt(contribution value)), at most
    100 (docs/live-sessions.md, "Polls")."""
    return min(MAX_WEIGHT, 1 + math.isqrt(max(cv, 0)))


def session_wire(row: Any) -> dict[str, Any]:
    (sid, creator, title, desc, state, starts, approval, anonymous, slow, interval, rooms, pinned, version,
     peak, created, started, ended) = row
    return {
        "session": sid, "creator": creator, "title": title, "description": desc, "state": state,
        "starts_ts": starts, "approval": bool(approval), "anonymous": bool(anonymous), "slow_s": slow,
        "ask_interval_s": interval, "rooms": orjson.loads(rooms), "pinned": pinned, "version": version,
        "peak": peak, "created_ts": created, "started_ts": started, "ended_ts": ended,
    }


def _session(tx: Tx, session: str) -> Any:
    row = tx.execute(f"SELECT {SESSION_COLUMNS} FROM live_sessions WHERE id = ?", (session,)).fetchone()
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no live session {session}")
    return row


def _role(tx: Tx, session: str, user: str) -> str | None:
    row = tx.execute("SELECT role FROM live_roles WHERE session = ? AND user = ?", (session, user)).fetchone()
    return row[0] if row else None


def _require(tx: Tx, session: str, user: str, admin: bool, roles: frozenset[str], what: str) -> str | None:
    role = _role(tx, session, user)
    if not admin and role not in roles:
        who = " or ".join(sorted(f"{r}s" for r in roles))
        raise RequestError(Err.FORBIDDEN, f"only the session's {who} may {what}")
    return role


def _question(tx: Tx, session: str, qid: int) -> Any:
    row = tx.execute(f"SELECT {QUESTION_COLUMNS} FROM live_questions WHERE id = ? AND session = ?",
                     (qid, session)).fetchone()
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no question {qid} in {session}")
    return row


def _bump(tx: Tx, session: str) -> int:
    return int(tx.execute("UPDATE live_sessions SET version = version + 1 WHERE id = ? RETURNING version",
                          (session,)).fetchone()[0])


def _set_roles(tx: Tx, session: str, hosts: list[str] | None, moderators: list[str] | None) -> None:
    if hosts is not None:
        tx.execute("DELETE FROM live_roles WHERE session = ? AND role = 'host'", (session,))
    if moderators is not None:
        tx.execute("DELETE FROM live_roles WHERE session = ? AND role = 'moderator'", (session,))
    for role, users in (("moderator", moderators), ("host", hosts)):  # a user named twice is a host
        for user in users or ():
            tx.execute("INSERT OR REPLACE INTO live_roles VALUES (?, ?, ?)", (session, user, role))


def roles_of(tx: Tx, session: str) -> dict[str, str]:
    return dict(tx.execute("SELECT user, role FROM live_roles WHERE session = ?", (session,)).fetchall())


# -- sessions -------------------------------------------------------------------


def create(tx: Tx, creator: str, cid: str, spec: dict[str, Any], host: bool, ts: int) -> tuple[dict[str, Any], bool]:
    """A new session in state ``scheduled`` (idempotent on (creator, cid)).
    ``host``: the creator hosts it (staff; a backend only creates)."""
    row = tx.execute("SELECT id FROM live_sessions WHERE creator = ? AND cid = ?", (creator, cid)).fetchone()
    if row is not None:
        return {**session_wire(_session(tx, row[0])), "roles": roles_of(tx, row[0])}, True
    n = tx.execute("UPDATE counters SET value = value + 1 WHERE name = 'live' RETURNING value").fetchone()[0]
    sid = f"l:{n}"
    rooms = ["main", *(r for r in spec.get("rooms", ()) if r != "main")]
    tx.execute(
        "INSERT INTO live_sessions(id, creator, cid, title, description, state, starts_ts, approval, anonymous,"
        " slow_s, ask_interval_s, rooms, created_ts) VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?, ?)",
        (sid, creator, cid, spec["title"], spec.get("description", ""), spec.get("starts_ts", 0),
         int(spec.get("approval", False)), int(spec.get("anonymous", False)), spec.get("slow_s", 0),
         spec.get("ask_interval_s", 60), orjson.dumps(rooms).decode(), ts),
    )
    tx.executemany(
        "INSERT INTO conversations(id, kind, name, owner, created_ts, member_count) VALUES (?, 'live', ?, ?, ?, 0)",
        [(f"{sid}.{room}", spec["title"], creator, ts) for room in rooms],
    )
    hosts = list(spec.get("hosts", ()))
    if host and creator not in hosts and creator not in spec.get("moderators", ()):
        hosts.append(creator)
    _set_roles(tx, sid, hosts, list(spec.get("moderators", ())))
    return {**session_wire(_session(tx, sid)), "roles": roles_of(tx, sid)}, False


def update(tx: Tx, session: str, actor: str, admin: bool, fields: dict[str, Any]) -> dict[str, Any]:
    _session(tx, session)
    _require(tx, session, actor, admin, frozenset({"host"}), "change it")
    cols = ("title", "description", "starts_ts", "approval", "anonymous", "slow_s", "ask_interval_s")
    sets = [(c, int(fields[c]) if isinstance(fields[c], bool) else fields[c]) for c in cols if c in fields]
    if sets:
        tx.execute(f"UPDATE live_sessions SET {', '.join(f'{c} = ?' for c, _ in sets)} WHERE id = ?",
                   [*(v for _, v in sets), session])
    _set_roles(tx, session, fields.get("hosts"), fields.get("moderators"))
    if "title" in fields:
        tx.execute("UPDATE conversations SET name = ? WHERE id > ? AND id < ?",
                   (fields["title"], session + ".", session + "/"))
    return {**session_wire(_session(tx, session)), "roles": roles_of(tx, session)}


def set_state(
    tx: Tx, session: str, actor: str, admin: bool, state: str, ts: int
) -> tuple[dict[str, Any], bool, list[str]]:
    """Move the session on. Returns it, whether it changed, and (on going live)
    its followers, to be told."""
    row = _session(tx, session)
    _require(tx, session, actor, admin, frozenset({"host"}), "start or end it")
    now = row[4]
    if now == state:
        return session_wire(row), False, []
    if state not in NEXT_STATES[now]:
        raise RequestError(Err.CONFLICT, f"a session that is {now} cannot become {state}")
    col = {"live": "started_ts", "ended": "ended_ts"}.get(state)
    tx.execute(f"UPDATE live_sessions SET state = ?{f', {col} = ?' if col else ''} WHERE id = ?",
               (state, ts, session) if col else (state, session))
    followers: list[str] = []
    if state == "live":
        followers = [r[0] for r in tx.execute("SELECT user FROM live_follows WHERE session = ?", (session,))]
    return session_wire(_session(tx, session)), True, followers


def follow(tx: Tx, session: str, user: str, on: bool) -> bool:
    _session(tx, session)
    if on:
        tx.execute("INSERT OR IGNORE INTO live_follows VALUES (?, ?)", (session, user))
    else:
        tx.execute("DELETE FROM live_follows WHERE session = ? AND user = ?", (session, user))
    return on


def mute(tx: Tx, session: str, actor: str, admin: bool, user: str, until: int) -> int:
    _session(tx, session)
    _require(tx, session, actor, admin, MODERATORS, "mute")
    if _role(tx, session, user) in MODERATORS:
        raise RequestError(Err.FORBIDDEN, "hosts and moderators cannot be muted")
    tx.execute("INSERT OR REPLACE INTO live_mutes VALUES (?, ?, ?)", (session, user, until))
    return until


def _muted(tx: Tx, session: str, user: str, ts: int) -> None:
    row = tx.execute("SELECT until FROM live_mutes WHERE session = ? AND user = ?", (session, user)).fetchone()
    if row is not None and row[0] > ts:
        raise RequestError(Err.MUTED, "a moderator muted you in this session", retry_after_ms=row[0] - ts)


def raise_peak(tx: Tx, session: str, viewers: int) -> None:
    tx.execute("UPDATE live_sessions SET peak = ? WHERE id = ? AND peak < ?", (viewers, session, viewers))


def attend(tx: Tx, rows: list[tuple[str, str]], ts: int) -> int:
    """Attendance records (session, user) of viewers who watched long enough:
    one interaction event each, once per session and user."""
    n = 0
    for session, user in rows:
        cur = tx.execute("INSERT OR IGNORE INTO live_attendance VALUES (?, ?, ?)", (session, user, ts))
        if cur.rowcount:
            n += 1
            add_event(tx, f"live:{session}:attended:{user}", "live.attended", user, session, ts, {"session": session})
    return n


# -- audience chat ------------------------------------------------------------------


def chat(
    tx: Tx, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, ts: int
) -> dict[str, Any] | None:
    """One audience chat line, a message of the room. None: a retry of a line
    already stored (the caller answers with the stored one)."""
    if tx.execute("SELECT 1 FROM messages WHERE sender = ? AND cid = ?", (user, cid)).fetchone() is not None:
        return None
    row = _session(tx, session)
    if row[4] not in ASKABLE:
        raise RequestError(Err.CONFLICT, f"the session is {row[4]}: its chat is closed")
    rooms = orjson.loads(row[10])
    if room not in rooms:
        raise RequestError(Err.NOT_FOUND, f"no room {room} in {session}")
    role = _role(tx, session, user)
    if role is None:
        _muted(tx, session, user, ts)
        slow = row[8] * 1000
        if slow:
            last = tx.execute("SELECT ts FROM live_lines WHERE session = ? AND user = ?", (session, user)).fetchone()
            if last is not None and last[0] + slow > ts:
                raise RequestError(Err.RATE_LIMITED, f"slow mode: one line every {row[8]} s",
                                   retry_after_ms=last[0] + slow - ts)
    marked = {**author, "live_role": role} if role else author
    conv = f"{session}.{room}"
    data = {"a": marked, "t": text}
    a = append(tx, conv, user, cid, ts, TEXT, pack(data), ())
    if a.dup:
        return None
    tx.execute("INSERT OR REPLACE INTO live_lines VALUES (?, ?, ?)", (session, user, ts))
    return message_wire(conv, a.seq, a.pos, user, cid, ts, TEXT, data)


# -- questions ------------------------------------------------------------------


def ask(
    tx: Tx, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, anonymous: bool,
    ts: int,
) -> tuple[Any, int, bool]:
    """A new question (idempotent on (asker, cid)): the row, the session's new
    version and whether it is a retry."""
    known = tx.execute(f"SELECT {QUESTION_COLUMNS} FROM live_questions WHERE asker = ? AND cid = ?",
                       (user, cid)).fetchone()
    if known is not None:
        return known, 0, True
    row = _session(tx, session)
    state, approval, allow_anon, interval = row[4], row[6], row[7], row[9]
    if state not in ASKABLE:
        raise RequestError(Err.CONFLICT, f"the session is {state}: it takes no questions")
    if room not in orjson.loads(row[10]):
        raise RequestError(Err.NOT_FOUND, f"no room {room} in {session}")
    if anonymous and not allow_anon:
        raise RequestError(Err.FORBIDDEN, "this session takes no anonymous questions")
    _muted(tx, session, user, ts)
    if interval:
        last = tx.execute(
            "SELECT created_ts FROM live_questions WHERE session = ? AND asker = ? AND state IN ('pending', 'open')"
            " ORDER BY created_ts DESC LIMIT 1", (session, user),
        ).fetchone()
        if last is not None and last[0] + interval * 1000 > ts:
            raise RequestError(Err.RATE_LIMITED, f"one open question every {interval} s",
                               retry_after_ms=last[0] + interval * 1000 - ts)
    cur = tx.execute(
        "INSERT INTO live_questions(session, room, asker, author, anonymous, cid, text, state, created_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session, room, user, orjson.dumps(author).decode(), int(anonymous), cid, text,
         "pending" if approval else "open", ts),
    )
    qid = int(cur.lastrowid or 0)
    add_event(tx, f"live:q:{qid}:asked", "question.asked", user, session, ts, {"session": session, "question": qid})
    return _question(tx, session, qid), _bump(tx, session), False


def vote(tx: Tx, session: str, qid: int, user: str, on: bool, ts: int) -> tuple[int, int, bool]:
    """Vote for a question or withdraw the vote: (its votes, the session's
    version, whether anything changed)."""
    q = _question(tx, session, qid)
    asker, state, votes = q[3], q[7], q[8]
    if state != "open":
        raise RequestError(Err.CONFLICT, f"question {qid} is {state}: votes are closed")
    if asker == user:
        raise RequestError(Err.FORBIDDEN, "you cannot vote for your own question")
    if on:
        cur = tx.execute("INSERT OR IGNORE INTO live_votes VALUES (?, ?, ?, ?)", (qid, user, session, ts))
    else:
        cur = tx.execute("DELETE FROM live_votes WHERE question = ? AND user = ?", (qid, user))
    if not cur.rowcount:
        return votes, 0, False
    votes = tx.execute("UPDATE live_questions SET votes = votes + ? WHERE id = ? RETURNING votes",
                       (1 if on else -1, qid)).fetchone()[0]
    if on:  # once per voter and question: withdrawing and voting again earns nothing more
        add_event(tx, f"live:q:{qid}:up:{user}", "question.upvoted", user, session, ts,
                  {"session": session, "question": qid, "target": asker})
    return votes, _bump(tx, session), True


_MODERATION = {  # action -> (the states it applies to, the state it leaves)
    "approve": (("pending",), "open"),
    "reject": (("pending", "open"), "rejected"),
    "hide": (("open", "answered", "pending"), "hidden"),
    "unhide": (("hidden",), "open"),
    "dismiss": (("open",), "dismissed"),
    "reopen": (("answered", "dismissed", "rejected", "hidden"), "open"),
}


def moderate(
    tx: Tx, session: str, qid: int, actor: str, admin: bool, action: str
) -> tuple[Any, int, bool]:
    """A moderator's (or host's) approve, reject, hide or unhide; a host's
    dismiss or reopen. Returns the row, the new version, whether it changed."""
    _session(tx, session)
    roles = MODERATORS if action in ("approve", "reject", "hide", "unhide") else frozenset({"host"})
    _require(tx, session, actor, admin, roles, action + " questions")
    q = _question(tx, session, qid)
    sources, target = _MODERATION[action]
    if q[7] == target:
        return q, 0, False
    if q[7] not in sources:
        raise RequestError(Err.CONFLICT, f"question {qid} is {q[7]}: it cannot be {action}d here")
    tx.execute("UPDATE live_questions SET state = ? WHERE id = ?", (target, qid))
    if target != "open" and target != "answered":
        tx.execute("UPDATE live_sessions SET pinned = NULL WHERE id = ? AND pinned = ?", (session, qid))
    return _question(tx, session, qid), _bump(tx, session), True


def merge(tx: Tx, session: str, qid: int, into: int, actor: str, admin: bool) -> tuple[Any, Any, int, bool]:
    """Merge a duplicate into another question: its voters vote for the other
    (once each: the union; the other's asker excepted), and it becomes
    ``merged``. Returns both rows, the new version, whether it changed."""
    _session(tx, session)
    _require(tx, session, actor, admin, MODERATORS, "merge questions")
    if qid == into:
        raise RequestError(Err.BAD_REQUEST, "a question cannot be merged into itself")
    dup, target = _question(tx, session, qid), _question(tx, session, into)
    if dup[7] == "merged":
        if dup[14] == into:
            return dup, target, 0, False
        raise RequestError(Err.CONFLICT, f"question {qid} is merged into {dup[14]} already")
    if dup[7] not in ("pending", "open", "hidden", "dismissed"):
        raise RequestError(Err.CONFLICT, f"question {qid} is {dup[7]}: it cannot be merged")
    if target[7] not in ("pending", "open", "answered"):
        raise RequestError(Err.CONFLICT, f"question {into} is {target[7]}: nothing can be merged into it")
    tx.execute(
        "INSERT OR IGNORE INTO live_votes(question, user, session, ts)"
        " SELECT ?, user, session, ts FROM live_votes WHERE question = ? AND user != ?",
        (into, qid, target[3]),
    )
    if dup[3] != target[3]:  # the duplicate's asker agrees with the question: a vote for it
        tx.execute("INSERT OR IGNORE INTO live_votes VALUES (?, ?, ?, ?)", (into, dup[3], session, dup[9]))
    tx.execute("UPDATE live_questions SET votes = (SELECT COUNT(*) FROM live_votes WHERE question = ?) WHERE id = ?",
               (into, into))
    tx.execute("UPDATE live_questions SET state = 'merged', merged_into = ? WHERE id = ?", (into, qid))
    tx.execute("UPDATE live_sessions SET pinned = NULL WHERE id = ? AND pinned = ?", (session, qid))
    return _question(tx, session, qid), _question(tx, session, into), _bump(tx, session), True


def answer(
    tx: Tx, session: str, qid: int, actor: str, admin: bool, text: str | None, live: bool, ts: int
) -> tuple[Any, int, bool]:
    """A host answers: in text, or "answered live". Answered already: the
    stored answer, nothing changes."""
    _session(tx, session)
    _require(tx, session, actor, admin, frozenset({"host"}), "answer questions")
    q = _question(tx, session, qid)
    if q[7] == "answered":
        return q, 0, False
    if q[7] not in ("open", "pending", "dismissed"):
        raise RequestError(Err.CONFLICT, f"question {qid} is {q[7]}: it cannot be answered")
    tx.execute(
        "UPDATE live_questions SET state = 'answered', answer = ?, answered_live = ?, answered_by = ?,"
        " answered_ts = ? WHERE id = ?", (text, int(live or text is None), actor, ts, qid),
    )
    add_event(tx, f"live:q:{qid}:answered", "question.answered", q[3], session, ts,
              {"session": session, "question": qid})
    return _question(tx, session, qid), _bump(tx, session), True


def pin(tx: Tx, session: str, qid: int, actor: str, admin: bool, on: bool) -> tuple[Any, int, bool]:
    row = _session(tx, session)
    _require(tx, session, actor, admin, frozenset({"host"}), "pin questions")
    q = _question(tx, session, qid)
    pinned = row[11]
    if on:
        if q[7] not in ("open", "answered"):
            raise RequestError(Err.CONFLICT, f"question {qid} is {q[7]}: it cannot be pinned")
        if pinned == qid:
            return q, 0, False
        tx.execute("UPDATE live_sessions SET pinned = ? WHERE id = ?", (qid, session))
    else:
        if pinned != qid:
            return q, 0, False
        tx.execute("UPDATE live_sessions SET pinned = NULL WHERE id = ?", (session,))
    return q, _bump(tx, session), True


# -- polls ------------------------------------------------------------------------


def poll_wire(row: Any, tallies: list[dict[str, Any]]) -> dict[str, Any]:
    pid, conv, creator, question, options, multi, weighted, closes, closed, version, created = row
    return {
        "poll": pid, "conv": conv, "creator": creator, "question": question, "options": orjson.loads(options),
        "multi": bool(multi), "weighted": bool(weighted), "closes_ts": closes, "closed": closed is not None,
        "closed_ts": closed, "version": version, "created_ts": created, "results": tallies,
    }


def tally(rows: list[Any], n: int) -> list[dict[str, Any]]:
    """Per option: voters, weighted sum, and both by identity type."""
    out = [{"option": i, "votes": 0, "weight": 0, "by_type": {}} for i in range(n)]
    for options, weight, type_ in rows:
        for i in orjson.loads(options):
            if 0 <= i < n:
                o = out[i]
                o["votes"] += 1
                o["weight"] += weight
                t = o["by_type"].setdefault(type_, {"votes": 0, "weight": 0})
                t["votes"] += 1
                t["weight"] += weight
    return out


def _poll(tx: Tx, poll: int) -> Any:
    row = tx.execute(f"SELECT {POLL_COLUMNS} FROM polls WHERE id = ?", (poll,)).fetchone()
    if row is None:
        raise RequestError(Err.NOT_FOUND, f"no poll {poll}")
    return row


def poll_now(tx: Tx, poll: int) -> dict[str, Any]:
    row = _poll(tx, poll)
    rows = tx.execute("SELECT options, weight, type FROM poll_votes WHERE poll = ?", (poll,)).fetchall()
    return poll_wire(row, tally(rows, len(orjson.loads(row[4]))))


def _may_run_poll(tx: Tx, conv: str, actor: str, admin: bool) -> None:
    """Who makes and closes polls: a live session's hosts and moderators, a
    circle's owner and admins, a backend."""
    if conv.startswith("l:"):
        _session(tx, conv)
        _require(tx, conv, actor, admin, MODERATORS, "run polls")
        return
    kind = tx.execute("SELECT kind FROM conversations WHERE id = ?", (conv,)).fetchone()
    if kind is None or kind[0] != "circle":
        raise RequestError(Err.NOT_FOUND, f"no circle or live session {conv}")
    if admin:
        return
    role = tx.execute("SELECT role FROM members WHERE conv = ? AND user = ?", (conv, actor)).fetchone()
    if role is None:
        raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    if role[0] not in ("owner", "admin"):
        raise RequestError(Err.FORBIDDEN, "only the circle's owner and admins may run polls")


def poll_create(
    tx: Tx, conv: str, actor: str, author: dict[str, Any], admin: bool, cid: str, spec: dict[str, Any], ts: int
) -> tuple[dict[str, Any], Any, bool]:
    """A poll (idempotent on (creator, cid)): its wire form, the system message
    announcing it in a circle (None in a live session: a push says it), dup."""
    known = tx.execute("SELECT id FROM polls WHERE creator = ? AND cid = ?", (actor, cid)).fetchone()
    if known is not None:
        return poll_now(tx, known[0]), None, True
    _may_run_poll(tx, conv, actor, admin)
    if spec["closes_ts"] <= ts:
        raise RequestError(Err.BAD_REQUEST, "closes_ts must be in the future")
    cur = tx.execute(
        "INSERT INTO polls(conv, creator, cid, question, options, multi, weighted, closes_ts, created_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conv, actor, cid, spec["question"], orjson.dumps(spec["options"]).decode(), int(spec.get("multi", False)),
         int(spec.get("weighted", False)), spec["closes_ts"], ts),
    )
    pid = int(cur.lastrowid or 0)
    event = None
    if not conv.startswith("l:"):
        event = system(tx, conv, actor, author, ts, {"type": "poll", "poll": pid, "question": spec["question"]})
    return poll_now(tx, pid), event, False


def poll_vote(
    tx: Tx, poll: int, user: str, type_: str, options: list[int], ts: int
) -> tuple[dict[str, Any], int, bool]:
    """Cast or change a vote (one row per user) until the poll closes. Returns
    the poll with its results, the vote's weight and whether anything changed."""
    row = _poll(tx, poll)
    conv, multi, weighted, closes, closed = row[1], row[5], row[6], row[7], row[8]
    n = len(orjson.loads(row[4]))
    if closed is not None or closes <= ts:
        raise RequestError(Err.CONFLICT, f"poll {poll} is closed")
    if any(i >= n for i in options):
        raise RequestError(Err.BAD_REQUEST, f"options must be numbers below {n}")
    if len(options) > 1 and not multi:
        raise RequestError(Err.BAD_REQUEST, "this poll takes one option")
    if conv.startswith("l:"):
        state = tx.execute("SELECT state FROM live_sessions WHERE id = ?", (conv,)).fetchone()[0]
        if state not in ASKABLE:
            raise RequestError(Err.CONFLICT, f"the session is {state}")
    else:
        member = tx.execute("SELECT 1 FROM members WHERE conv = ? AND user = ?", (conv, user)).fetchone()
        if member is None:
            raise RequestError(Err.NOT_MEMBER, f"not a member of {conv}")
    weight = 1
    if weighted:
        cv = tx.execute("SELECT amount FROM balances WHERE user = ? AND currency = ?", (user, CV)).fetchone()
        weight = poll_weight(cv[0] if cv else 0)
    prior = tx.execute("SELECT weight FROM poll_votes WHERE poll = ? AND user = ?", (poll, user)).fetchone()
    chosen = orjson.dumps(sorted(options)).decode()
    if prior is not None:
        weight = prior[0]  # the weight is the one the first vote had: changing a choice changes no weight
        same = tx.execute("SELECT options FROM poll_votes WHERE poll = ? AND user = ?", (poll, user)).fetchone()
        if same[0] == chosen:
            return poll_now(tx, poll), weight, False
    tx.execute("INSERT OR REPLACE INTO poll_votes VALUES (?, ?, ?, ?, ?, ?)",
               (poll, user, chosen, weight, type_, ts))
    tx.execute("UPDATE polls SET version = version + 1 WHERE id = ?", (poll,))
    if prior is None:
        add_event(tx, f"poll:{poll}:voted:{user}", "poll.voted", user, conv, ts, {"poll": poll})
    return poll_now(tx, poll), weight, True


def poll_close(tx: Tx, poll: int, actor: str, admin: bool, ts: int) -> tuple[dict[str, Any], bool]:
    row = _poll(tx, poll)
    if row[2] != actor:
        _may_run_poll(tx, row[1], actor, admin)
    if row[8] is not None:
        return poll_now(tx, poll), False
    tx.execute("UPDATE polls SET closed_ts = ?, version = version + 1 WHERE id = ?", (min(ts, row[7]), poll))
    return poll_now(tx, poll), True


class SqliteLive:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    # -- writes
    def create(self, creator: str, cid: str, spec: dict[str, Any], host: bool, ts: int) -> Write[
        tuple[dict[str, Any], bool]
    ]:
        return Write(create, (creator, cid, spec, host, ts))

    def update(self, session: str, actor: str, admin: bool, fields: dict[str, Any]) -> Write[dict[str, Any]]:
        return Write(update, (session, actor, admin, fields))

    def set_state(self, session: str, actor: str, admin: bool, state: str, ts: int) -> Write[
        tuple[dict[str, Any], bool, list[str]]
    ]:
        return Write(set_state, (session, actor, admin, state, ts))

    def follow(self, session: str, user: str, on: bool) -> Write[bool]:
        return Write(follow, (session, user, on))

    def mute(self, session: str, actor: str, admin: bool, user: str, until: int) -> Write[int]:
        return Write(mute, (session, actor, admin, user, until))

    def raise_peak(self, session: str, viewers: int) -> Write[None]:
        return Write(raise_peak, (session, viewers))

    def attend(self, rows: list[tuple[str, str]], ts: int) -> Write[int]:
        return Write(attend, (rows, ts))

    def chat(self, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, ts: int) -> Write[
        dict[str, Any] | None
    ]:
        return Write(chat, (session, room, user, author, cid, text, ts), savepoint=True)

    def ask(
        self, session: str, room: str, user: str, author: dict[str, Any], cid: str, text: str, anonymous: bool,
        ts: int,
    ) -> Write[tuple[Any, int, bool]]:
        return Write(ask, (session, room, user, author, cid, text, anonymous, ts))

    def vote(self, session: str, qid: int, user: str, on: bool, ts: int) -> Write[tuple[int, int, bool]]:
        return Write(vote, (session, qid, user, on, ts))

    def moderate(self, session: str, qid: int, actor: str, admin: bool, action: str) -> Write[tuple[Any, int, bool]]:
        return Write(moderate, (session, qid, actor, admin, action))

    def merge(self, session: str, qid: int, into: int, actor: str, admin: bool) -> Write[tuple[Any, Any, int, bool]]:
        return Write(merge, (session, qid, into, actor, admin))

    def answer(
        self, session: str, qid: int, actor: str, admin: bool, text: str | None, live: bool, ts: int
    ) -> Write[tuple[Any, int, bool]]:
        return Write(answer, (session, qid, actor, admin, text, live, ts))

    def pin(self, session: str, qid: int, actor: str, admin: bool, on: bool) -> Write[tuple[Any, int, bool]]:
        return Write(pin, (session, qid, actor, admin, on))

    def poll_create(
        self, conv: str, actor: str, author: dict[str, Any], admin: bool, cid: str, spec: dict[str, Any], ts: int
    ) -> Write[tuple[dict[str, Any], Any, bool]]:
        return Write(poll_create, (conv, actor, author, admin, cid, spec, ts))

    def poll_vote(self, poll: int, user: str, type_: str, options: list[int], ts: int) -> Write[
        tuple[dict[str, Any], int, bool]
    ]:
        return Write(poll_vote, (poll, user, type_, options, ts))

    def poll_close(self, poll: int, actor: str, admin: bool, ts: int) -> Write[tuple[dict[str, Any], bool]]:
        return Write(poll_close, (poll, actor, admin, ts))

    # -- reads
    async def session(self, session: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT {SESSION_COLUMNS} FROM live_sessions WHERE id = ?", (session,))
        return None if row is None else session_wire(row)

    async def roles(self, session: str) -> dict[str, str]:
        rows = await self.db.fetchall("SELECT user, role FROM live_roles WHERE session = ?", (session,))
        return {u: r for u, r in rows}

    async def listing(self, state: str | None, after: str | None, limit: int) -> list[dict[str, Any]]:
        # ids are l:<n>: page by the number, newest first
        where, args = "WHERE 1 = 1", list[Any]()
        if state is not None:
            where += " AND state = ?"
            args.append(state)
        if after is not None:
            where += " AND CAST(substr(id, 3) AS INTEGER) < ?"
            args.append(int(after[2:]) if after[2:].isdigit() else 0)
        rows = await self.db.fetchall(
            f"SELECT {SESSION_COLUMNS} FROM live_sessions {where} ORDER BY CAST(substr(id, 3) AS INTEGER) DESC LIMIT ?",
            [*args, limit],
        )
        return [session_wire(r) for r in rows]

    async def questions(
        self, session: str, states: tuple[str, ...], order: str, limit: int, after: int = 0
    ) -> list[Any]:
        """Question rows in some states: ``rank`` (votes, then age) or ``id``."""
        marks = ", ".join("?" * len(states))
        by = "votes DESC, id" if order == "rank" else "id"
        rows = await self.db.fetchall(
            f"SELECT {QUESTION_COLUMNS} FROM live_questions WHERE session = ? AND state IN ({marks}) AND id > ?"
            f" ORDER BY {by} LIMIT ?",
            (session, *states, after, limit),
        )
        return list(rows)

    async def viewer(self, session: str, user: str) -> tuple[list[int], dict[int, list[int]], bool]:
        """What a joining viewer's snapshot says of them: their votes, their poll
        choices in the session, whether they follow it (one statement)."""
        rows = await self.db.fetchall(
            "SELECT 0, question, NULL FROM live_votes WHERE session = ? AND user = ?"
            " UNION ALL SELECT 1, v.poll, v.options FROM poll_votes v JOIN polls p ON p.id = v.poll"
            " WHERE p.conv = ? AND v.user = ?"
            " UNION ALL SELECT 2, 0, NULL FROM live_follows WHERE session = ? AND user = ?",
            (session, user, session, user, session, user),
        )
        votes = sorted(r[1] for r in rows if r[0] == 0)
        polls = {r[1]: orjson.loads(r[2]) for r in rows if r[0] == 1}
        return votes, polls, any(r[0] == 2 for r in rows)

    async def lines(self, room: str, limit: int) -> list[dict[str, Any]]:
        from .messages import COLUMNS, row_to_wire

        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM messages WHERE conv = ? AND kind = {TEXT} AND recalled = 0"
            " ORDER BY seq DESC LIMIT ?", (room, limit),
        )
        return [row_to_wire(r) for r in reversed(rows)]

    async def line(self, sender: str, cid: str) -> dict[str, Any]:
        row = await self.db.fetchone("SELECT conv, seq, pos, ts FROM messages WHERE sender = ? AND cid = ?",
                                     (sender, cid))
        return {"conv": row[0], "seq": row[1], "pos": row[2], "ts": row[3]}

    async def member(self, conv: str, user: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM members WHERE conv = ? AND user = ?", (conv, user))
        return row is not None

    async def poll(self, poll: int) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT {POLL_COLUMNS} FROM polls WHERE id = ?", (poll,))
        if row is None:
            return None
        rows = await self.db.fetchall("SELECT options, weight, type FROM poll_votes WHERE poll = ?", (poll,))
        return poll_wire(row, tally(rows, len(orjson.loads(row[4]))))

    async def polls_of(self, conv: str, limit: int = 20) -> list[dict[str, Any]]:
        """The conversation's last ``limit`` polls with their results, oldest first
        (two statements)."""
        rows = await self.db.fetchall(f"SELECT {POLL_COLUMNS} FROM polls WHERE conv = ? ORDER BY id DESC LIMIT ?",
                                      (conv, limit))
        if not rows:
            return []
        votes = await self.db.fetchall(
            "SELECT poll, options, weight, type FROM poll_votes WHERE poll >= ? AND poll <= ?"
            " AND poll IN (SELECT id FROM polls WHERE conv = ?)", (rows[-1][0], rows[0][0], conv),
        )
        by: dict[int, list[Any]] = {}
        for pid, options, weight, type_ in votes:
            by.setdefault(pid, []).append((options, weight, type_))
        return [poll_wire(r, tally(by.get(r[0], []), len(orjson.loads(r[4])))) for r in reversed(rows)]

    async def figures(self, session: str) -> dict[str, int]:
        q = await self.db.fetchone(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'answered' THEN 1 ELSE 0 END), 0), COALESCE(SUM(votes), 0)"
            " FROM live_questions WHERE session = ?", (session,),
        )
        votes = await self.db.fetchone("SELECT COUNT(*) FROM live_votes WHERE session = ?", (session,))
        lines = await self.db.fetchone(
            f"SELECT COUNT(*) FROM messages WHERE conv > ? AND conv < ? AND kind = {TEXT}", (session + ".", session + "/")
        )
        att = await self.db.fetchone("SELECT COUNT(*) FROM live_attendance WHERE session = ?", (session,))
        return {"questions": q[0], "answered": q[1], "votes": votes[0], "chat_lines": lines[0], "attended": att[0]}
