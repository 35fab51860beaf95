"""Service groups: provisioning and its reconcile, staff changes, the Fellow's
hand-over, and backend posts (docs/service-groups.md).

Each runs on the writer thread in one transaction and checks its own
preconditions against the database, so two processes provisioning one owner at
once end with one group (the id is the owner's) and one set of members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from chatd_protocol import Err, RequestError

from ..base import KindCheck, Write
from ..records import SYSTEM, Appended, ConvRecord, SystemMessage, message_wire, pack
from .conversations import get
from .engine import Reader, Tx
from .messages import append, kind_of, system

Member = tuple[str, str, tuple[str, ...] | None]  # user, role, badges (None: none given)
USER_TYPE = {"owner": "owner", "fellow": "staff", "staff": "staff", "bot": "bot"}
FIXED = ("owner", "fellow")


def _badges(badges: tuple[str, ...] | None) -> str | None:
    return None if badges is None else orjson.dumps(list(badges)).decode()


def _known(tx: Tx, users: Sequence[tuple[str, str]], ts: int) -> None:
    """Provisioned members are users this server knows (a DM may be opened to them)."""
    tx.executemany(
        "INSERT OR IGNORE INTO users VALUES (?, ?, ?, ?)", [(u, USER_TYPE[role], u, ts) for u, role in users]
    )


def _set_tags(tx: Tx, conv: str, tags: dict[str, str], new: bool = False) -> None:
    tx.execute("UPDATE conversations SET tags = ? WHERE id = ?", (orjson.dumps(tags).decode(), conv))
    if not new:
        tx.execute("DELETE FROM service_tags WHERE conv = ?", (conv,))
    tx.executemany("INSERT INTO service_tags VALUES (?, ?, ?)", [(k, v, conv) for k, v in tags.items()])


def _current(tx: Tx, conv: str) -> dict[str, tuple[str, str | None]]:
    rows = tx.execute("SELECT user, role, badges FROM members WHERE conv = ?", (conv,)).fetchall()
    return {u: (r, b) for u, r, b in rows}


def _apply(
    tx: Tx,
    conv: str,
    adds: Sequence[Member],
    removes: Sequence[str],
    actor: str,
    author: dict[str, Any],
    ts: int,
    current: dict[str, tuple[str, str | None]] | None = None,
) -> tuple[SystemMessage | None, list[dict[str, str]], list[str]]:
    """Bring members in line: ``adds`` join (or change role, or only their badges),
    ``removes`` leave. One ``members`` event names who joined (with their role)
    and who left; badges alone change no event. Owner and Fellow are never touched."""
    if current is None:
        current = _current(tx, conv)
    added: list[dict[str, str]] = []
    joining: list[Member] = []
    for user, role, badges in adds:
        had = current.get(user)
        if had is not None and had[0] in FIXED:
            raise RequestError(Err.FORBIDDEN, f"{user} is the group's {had[0]}: that role is fixed here")
        if had is None:
            joining.append((user, role, badges))
            added.append({"user": user, "role": role})
        elif had[0] != role:
            tx.execute("UPDATE members SET role = ?, badges = ? WHERE conv = ? AND user = ?",
                       (role, _badges(badges), conv, user))
            added.append({"user": user, "role": role})
        elif badges is not None and _badges(badges) != had[1]:
            tx.execute("UPDATE members SET badges = ? WHERE conv = ? AND user = ?", (_badges(badges), conv, user))
    removed: list[str] = []
    for user in removes:
        had = current.get(user)
        if had is None:
            continue  # gone already: removing again changes nothing
        if had[0] in FIXED:
            raise RequestError(Err.FORBIDDEN, f"{user} is the group's {had[0]} and cannot be removed")
        removed.append(user)
    if not added and not removed:
        return None, [], []
    tx.executemany("DELETE FROM members WHERE conv = ? AND user = ?", [(conv, u) for u in removed])
    tx.executemany(
        "INSERT INTO members(conv, user, role, badges) VALUES (?, ?, ?, ?)",
        [(conv, u, r, _badges(b)) for u, r, b in joining],
    )
    _known(tx, [(u, r) for u, r, _ in joining], ts)
    tx.execute("UPDATE conversations SET member_count = member_count + ? WHERE id = ?",
               (len(joining) - len(removed), conv))
    event = system(tx, conv, actor, author, ts, {"type": "members", "added": added, "removed": removed})
    _joined_at(tx, conv, [u for u, _, _ in joining], event)  # a role change keeps its join
    return event, added, removed


def _joined_at(tx: Tx, conv: str, users: Sequence[str], event: SystemMessage) -> None:
    seq = event.msg["seq"]
    tx.executemany(
        "UPDATE members SET joined_seq = ?, read_seq = ? WHERE conv = ? AND user = ?", [(seq, seq, conv, u) for u in users]
    )


def provision(
    tx: Tx,
    conv: str,
    kind: str,
    owner: str,
    fellow: str,
    team: Sequence[Member] | None,
    team_roles: tuple[str, ...],
    name: str | None,
    tags: dict[str, str] | None,
    actor: str,
    author: dict[str, Any],
    ts: int,
) -> tuple[ConvRecord, SystemMessage | None, bool, list[dict[str, str]], list[str]]:
    """Create the owner's group, or reconcile it: the members of ``team_roles``
    (those the call gave a list for) become exactly ``team``."""
    stored = kind_of(tx, conv)
    if stored is None:
        members: list[Member] = [(owner, "owner", None), (fellow, "fellow", None), *(team or ())]
        tx.execute(
            "INSERT INTO conversations(id, kind, name, owner, fellow, created_ts, member_count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conv, kind, name or owner, owner, fellow, ts, len(members)),
        )
        _set_tags(tx, conv, tags or {}, new=True)
        tx.execute("INSERT INTO service_state(conv) VALUES (?)", (conv,))
        tx.executemany(
            "INSERT INTO members(conv, user, role, badges) VALUES (?, ?, ?, ?)",
            [(conv, u, r, _badges(b)) for u, r, b in members],
        )
        _known(tx, [(u, r) for u, r, _ in members], ts)
        roster = [{"user": u, "role": r} for u, r, _ in members]
        created = system(tx, conv, actor, author, ts, {"type": "created", "name": name or owner, "members": roster})
        _joined_at(tx, conv, [u for u, _, _ in members], created)
        tx.flush()
        return get(tx, conv), created, True, roster, []
    if stored != kind:  # pragma: no cover - the id's prefix is the kind's
        raise RequestError(Err.CONFLICT, f"{conv} is not a service group")
    now_fellow = tx.execute("SELECT fellow FROM conversations WHERE id = ?", (conv,)).fetchone()[0]
    if now_fellow != fellow:
        raise RequestError(Err.CONFLICT, f"the group's Fellow is {now_fellow}: hand it over with service.handover")
    if name is not None:
        tx.execute("UPDATE conversations SET name = ? WHERE id = ?", (name, conv))
    if tags is not None:
        _set_tags(tx, conv, tags)
    current = _current(tx, conv)
    removes: list[str] = []
    if team is not None:
        wanted = {u for u, _, _ in team}
        removes = [u for u, (r, _) in current.items() if r in team_roles and u not in wanted]
    event, added, removed = _apply(tx, conv, team or (), removes, actor, author, ts, current)
    tx.flush()
    return get(tx, conv), event, False, added, removed


def change_members(
    tx: Tx, conv: str, adds: Sequence[Member], removes: Sequence[str], actor: str, author: dict[str, Any], ts: int,
    check: KindCheck,
) -> tuple[ConvRecord, SystemMessage | None, list[dict[str, str]], list[str]]:
    check(kind_of(tx, conv) or "")
    event, added, removed = _apply(tx, conv, adds, removes, actor, author, ts)
    tx.flush()
    return get(tx, conv), event, added, removed


def handover(
    tx: Tx, conv: str, fellow: str, actor: str, author: dict[str, Any], ts: int, check: KindCheck
) -> tuple[ConvRecord, SystemMessage | None, str, bool]:
    """The group goes to a new Fellow; the previous one stays in it as staff
    (the backend removes them with ``service.members`` if it wants)."""
    check(kind_of(tx, conv) or "")
    owner, previous = tx.execute("SELECT owner, fellow FROM conversations WHERE id = ?", (conv,)).fetchone()
    if fellow == previous:
        return get(tx, conv), None, previous, False
    if fellow == owner:
        raise RequestError(Err.BAD_REQUEST, "the owner cannot be their own Fellow")
    had = tx.execute("SELECT role FROM members WHERE conv = ? AND user = ?", (conv, fellow)).fetchone()
    tx.execute("UPDATE members SET role = 'staff' WHERE conv = ? AND user = ?", (conv, previous))
    tx.execute("UPDATE conversations SET fellow = ? WHERE id = ?", (fellow, conv))
    if had is None:
        tx.execute("INSERT INTO members(conv, user, role) VALUES (?, ?, 'fellow')", (conv, fellow))
        tx.execute("UPDATE conversations SET member_count = member_count + 1 WHERE id = ?", (conv,))
        _known(tx, [(fellow, "fellow")], ts)
    else:
        tx.execute("UPDATE members SET role = 'fellow' WHERE conv = ? AND user = ?", (conv, fellow))
    event = system(tx, conv, actor, author, ts, {"type": "fellow", "user": fellow, "previous": previous})
    if had is None:
        _joined_at(tx, conv, [fellow], event)
    tx.flush()
    return get(tx, conv), event, previous, had is None


def post(
    tx: Tx, conv: str, actor: str, author: dict[str, Any], cid: str, event: dict[str, Any], ts: int, check: KindCheck
) -> tuple[Appended, SystemMessage | None]:
    """A backend's notice or card, idempotent on (actor, cid) as a send is."""
    check(kind_of(tx, conv) or "")
    data = {"a": author, "e": event}
    a = append(tx, conv, actor, cid, ts, SYSTEM, pack(data))
    if a.dup:
        return a, None
    return a, SystemMessage(message_wire(conv, a.seq, a.pos, actor, None, ts, SYSTEM, data))


class SqliteService:
    def __init__(self, engine: Reader) -> None:
        self.db = engine

    def provision(
        self,
        conv: str,
        kind: str,
        owner: str,
        fellow: str,
        team: Sequence[Member] | None,
        team_roles: tuple[str, ...],
        name: str | None,
        tags: dict[str, str] | None,
        actor: str,
        author: dict[str, Any],
        ts: int,
    ) -> Write[tuple[ConvRecord, SystemMessage | None, bool, list[dict[str, str]], list[str]]]:
        return Write(provision, (conv, kind, owner, fellow, team, team_roles, name, tags, actor, author, ts))

    def change_members(
        self, conv: str, adds: Sequence[Member], removes: Sequence[str], actor: str, author: dict[str, Any], ts: int,
        check: KindCheck,
    ) -> Write[tuple[ConvRecord, SystemMessage | None, list[dict[str, str]], list[str]]]:
        return Write(change_members, (conv, adds, removes, actor, author, ts, check))

    def handover(
        self, conv: str, fellow: str, actor: str, author: dict[str, Any], ts: int, check: KindCheck
    ) -> Write[tuple[ConvRecord, SystemMessage | None, str, bool]]:
        return Write(handover, (conv, fellow, actor, author, ts, check))

    def post(
        self, conv: str, actor: str, author: dict[str, Any], cid: str, event: dict[str, Any], ts: int, check: KindCheck
    ) -> Write[tuple[Appended, SystemMessage | None]]:
        return Write(post, (conv, actor, author, cid, event, ts, check))
