"""Service groups, the backend's side: provision one per owner (idempotent,
reconciling), add and remove staff and bots, hand the group to a new Fellow,
post notices and cards (docs/service-groups.md). All need the admin scope."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from chatd_protocol import Err, RequestError

from ..clock import Clock
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..kinds import Service
from ..store.base import ServiceGroups, ServiceMember
from ..store.records import SystemMessage
from .base import Args, Commit, Reply


def _team(items: list[dict[str, Any]], default_role: str) -> list[ServiceMember]:
    return [
        (m["user"], m.get("role", default_role), tuple(m["badges"]) if "badges" in m else None) for m in items
    ]


def _distinct(who: list[str]) -> None:
    seen: set[str] = set()
    for user in who:
        if user in seen:
            raise RequestError(Err.BAD_REQUEST, f"{user} is named twice: one member, one role")
        seen.add(user)


class ServiceOps:
    def __init__(
        self, commit: Commit, repo: ServiceGroups, fanout: Fanout, kind: Service, clock: Clock,
        touched: Callable[[str], None],
    ) -> None:
        self.touched = touched  # a group's inbox row changed (InboxPushes.touch)
        self.commit = commit
        self.repo = repo
        self.fanout = fanout
        self.kind = kind
        self.clock = clock

    def _followed(
        self, conv: str, event: SystemMessage | None, added: list[dict[str, str]], removed: list[str]
    ) -> None:
        """After a membership change commits: the cache reloads, who joined follows
        the group on their sockets (before the event is pushed), who left stops."""
        if event is None:
            return
        self.fanout.changed(conv, None)
        for user in removed:
            self.fanout.user_follow(user, conv, on=False)
        for a in added:
            self.fanout.user_follow(a["user"], conv, joined=event.msg["seq"])

    async def provision(self, caller: Caller, d: Args) -> Reply:
        owner, fellow = d["owner"], d["fellow"]
        team: list[ServiceMember] | None = None
        roles: tuple[str, ...] = ()
        if "staff" in d:
            if any(m.get("role", "staff") != "staff" for m in d["staff"]):
                raise RequestError(Err.BAD_REQUEST, "staff[].role must be staff here: bots go in bots")
            team, roles = _team(d["staff"], "staff"), ("staff",)
        if "bots" in d:
            team = [*(team or []), *((b, "bot", None) for b in d["bots"])]
            roles += ("bot",)
        _distinct([owner, fellow, *(u for u, _, _ in team or ())])
        conv = self.kind.conv_id(owner)

        def after(result: tuple[Any, SystemMessage | None, bool, list[dict[str, str]], list[str]]) -> None:
            self._followed(conv, result[1], result[3], result[4])

        rec, event, created, added, removed = await self.commit(
            self.repo.provision(
                conv, self.kind.name, owner, fellow, team, roles, d.get("name"), d.get("tags"),
                caller.user, caller.author, self.clock.wall_ms(),
            ),
            after,
        )
        out = self.kind.wire(rec)
        out.update(created=created, added=added, removed=removed, seq=event.msg["seq"] if event else None)
        return out

    async def members(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        adds = _team(d.get("add", []), "staff")
        removes = d.get("remove", [])
        if not adds and not removes:
            raise RequestError(Err.BAD_REQUEST, "add or remove someone")
        _distinct([*(u for u, _, _ in adds), *removes])
        check = functools.partial(self.kind.require, conv)

        def after(result: tuple[Any, SystemMessage | None, list[dict[str, str]], list[str]]) -> None:
            self._followed(conv, result[1], result[2], result[3])

        rec, event, added, removed = await self.commit(
            self.repo.change_members(conv, adds, removes, caller.user, caller.author, self.clock.wall_ms(), check),
            after,
        )
        return {**self.kind.wire(rec), "added": added, "removed": removed, "seq": event.msg["seq"] if event else None}

    async def handover(self, caller: Caller, d: Args) -> Reply:
        conv, fellow = d["conv"], d["fellow"]
        check = functools.partial(self.kind.require, conv)

        def after(result: tuple[Any, SystemMessage | None, str, bool]) -> None:
            if result[1] is not None:
                added = [{"user": fellow, "role": "fellow"}] if result[3] else []
                self._followed(conv, result[1], added, [])

        rec, event, previous, _ = await self.commit(
            self.repo.handover(conv, fellow, caller.user, caller.author, self.clock.wall_ms(), check), after
        )
        return {**self.kind.wire(rec), "previous": previous, "seq": event.msg["seq"] if event else None}

    async def post(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        if ("text" in d) == ("card" in d):
            raise RequestError(Err.BAD_REQUEST, "post a text or a card (one of the two)")
        event = {"type": "notice", "text": d["text"]} if "text" in d else {"type": "card", "card": d["card"]}
        check = functools.partial(self.kind.require, conv)
        appended, _ = await self.commit(
            self.repo.post(conv, caller.user, caller.author, d["cid"], event, self.clock.wall_ms(), check),
            lambda result: self.touched(conv),
        )
        return {"conv": appended.conv, "seq": appended.seq, "pos": appended.pos, "ts": appended.ts, "dup": appended.dup}
