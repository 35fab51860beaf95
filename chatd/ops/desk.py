"""The service desk's ops: the owner's service requests, their statuses, closing
an episode and rating it, and the staff inbox (docs/service-groups.md).

Who may do what is decided in each write's transaction from the caller's role
in the group (owner, Fellow, staff, bot); a backend's admin token may move
requests on and close episodes in any group through the admin API.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from chatd_protocol import Err, RequestError, Scope

from ..clock import Clock
from ..core.caller import Caller
from ..core.desk import InboxPushes
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..kinds import Service
from ..policy import report_csv
from ..store.base import DeskActor, ServiceDesk
from .base import Args, Commit, Reply, member_state

REPORT_MAX_MS = 366 * 86_400_000
_CURSOR_RE = re.compile(r"^(-?\d{1,16}):(.{1,150})$")


def _cursor(after: str | None) -> tuple[int, str] | None:
    if after is None:
        return None
    m = _CURSOR_RE.fullmatch(after)
    if m is None:
        raise RequestError(Err.BAD_REQUEST, "after must be the cursor a previous inbox page returned")
    return int(m.group(1)), m.group(2)


class DeskOps:
    def __init__(
        self,
        commit: Commit,
        repo: ServiceDesk,
        directory: Directory,
        pushes: InboxPushes,
        fanout: Fanout,
        kind: Service,
        clock: Clock,
    ) -> None:
        self.fanout = fanout
        self.commit = commit
        self.repo = repo
        self.directory = directory
        self.pushes = pushes
        self.kind = kind
        self.policy = kind.policy
        self.clock = clock

    @staticmethod
    def _actor(caller: Caller) -> DeskActor:
        return caller.user, caller.author, Scope.ADMIN in caller.scopes

    def _touched(self, conv: str) -> Callable[[Any], None]:
        return lambda result: self.pushes.touch(conv)

    def _check(self, conv: str) -> functools.partial[None]:
        """What the store asks in the write's transaction: ``conv`` is a service
        group. An id of another kind is refused before anything is read, the same
        way whether or not it exists (a DM's existence is nobody's business)."""
        if not self.kind.owns(conv):
            raise RequestError(Err.NOT_FOUND, f"no service group {conv}")
        return functools.partial(self.kind.require, conv)

    async def request(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        req, event = await self.commit(
            self.repo.open_request(
                conv, self._actor(caller), d["type"], d.get("note", ""), d["rid"], self.clock.wall_ms(), self.policy,
                self._check(conv),
            ),
            self._touched(conv),
        )
        return {**req, "seq": event.msg["seq"] if event else None}

    async def status(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        req, event = await self.commit(
            self.repo.set_status(conv, d["id"], d["status"], self._actor(caller), self.clock.wall_ms(),
                                 self._check(conv)),
            self._touched(conv),
        )
        return {**req, "seq": event.msg["seq"] if event else None}

    async def requests(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        self._check(conv)  # a service group's id: what exists there is one
        if Scope.ADMIN not in caller.scopes:
            await member_state(self.directory, caller, conv)
        elif await self.directory.get(conv) is None:
            raise RequestError(Err.NOT_FOUND, f"no service group {conv}")
        return {"requests": await self.repo.requests(conv, d.get("open", False))}

    async def close(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        episode, event = await self.commit(
            self.repo.close_episode(conv, self._actor(caller), self.clock.wall_ms(), self.policy, self._check(conv),
                                    d.get("episode")),
            self._touched(conv),
        )
        out: Reply = {"conv": conv, "episode": episode, "seq": None, "rate_until": None}
        if event is not None:
            out.update(seq=event.msg["seq"], rate_until=event.msg["event"]["rate_until"])
        return out

    async def rate(self, caller: Caller, d: Args) -> Reply:
        conv, episode = d["conv"], d["episode"]
        shares, event, dup = await self.commit(
            self.repo.rate(conv, episode, d["stars"], d.get("comment", ""), self._actor(caller),
                           self.clock.wall_ms(), self.policy, self._check(conv)),
            self._touched(conv),
        )
        return {"conv": conv, "episode": episode, "stars": d["stars"], "credit": shares,
                "seq": event.msg["seq"] if event else None, "dup": dup}

    async def inbox(self, caller: Caller, d: Args) -> Reply:
        rows, after = await self.repo.inbox(caller.user, d.get("filter", "all"), _cursor(d.get("after")),
                                            d.get("limit", 50))
        return {"rows": rows, "after": after, "now": self.clock.wall_ms()}

    async def claim(self, caller: Caller, d: Args) -> Reply:
        conv, seq = d["conv"], d["seq"]
        dup = await self.commit(
            self.repo.claim(conv, seq, caller.user, self.clock.wall_ms(), self.policy, self._check(conv))
        )
        return {"conv": conv, "seq": seq, "dup": dup}

    async def to_human(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        now = self.clock.wall_ms()

        def after(result: tuple[str, Any]) -> None:
            self.pushes.touch(conv)
            if result[1] is not None:  # the Fellow is alerted on every socket, as for an overdue wait
                self.fanout.user_push(result[0], "service.alert", {
                    "conv": conv, "level": 1, "reason": "needs_human", "waiting_since": None, "due": None})

        fellow, event = await self.commit(
            self.repo.to_human(conv, self._actor(caller), d.get("text", ""), now, self._check(conv)), after
        )
        return {"conv": conv, "fellow": fellow, "seq": event.msg["seq"] if event else None}

    async def report(self, caller: Caller, d: Args) -> Reply:
        since, until = d["from"], d["to"]
        if until <= since:
            raise RequestError(Err.BAD_REQUEST, "to must be after from")
        if until - since > REPORT_MAX_MS:
            raise RequestError(Err.BAD_REQUEST, "a report covers at most 366 days")
        by = d.get("by", "person")
        rows = await self.repo.report(since, until, by)
        # final once no episode closed in the period can still be rated
        final = self.clock.wall_ms() >= until + self.policy.rating_window_s * 1000
        out: Reply = {"from": since, "to": until, "by": by, "final": final}
        if d.get("format") == "csv":
            out["csv"] = report_csv(rows, "conv" if by == "group" else "user")
        else:
            out["rows"] = rows
        return out
