"""Circles: create, discover, join/leave, members, admins, announcement, mute."""

from __future__ import annotations

import functools

from chatd_protocol import Err, RequestError

from ..clock import Clock
from ..core.caller import Caller
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..core.outbox import Outbox
from ..kinds import Circle, ConvState
from ..store.base import Conversations, Members
from ..store.records import ConvRecord, SystemMessage
from .base import Args, Commit, Reply, creation_quota, member_state


class Circles:
    def __init__(
        self,
        commit: Commit,
        conversations: Conversations,
        members: Members,
        directory: Directory,
        fanout: Fanout,
        outbox: Outbox,
        kind: Circle,
        clock: Clock,
        per_hour: int = 0,
    ) -> None:
        self.per_hour = per_hour  # circles a user may create per hour
        self.commit = commit
        self.conversations = conversations
        self.members = members
        self.directory = directory
        self.fanout = fanout
        self.outbox = outbox
        self.kind = kind
        self.clock = clock

    async def create(self, caller: Caller, d: Args) -> Reply:
        certified = d.get("certified", False)
        if certified and not caller.is_staff:
            raise RequestError(Err.FORBIDDEN, "only staff may create certified circles")
        kind = self.kind

        def after(result: tuple[ConvRecord, SystemMessage]) -> None:
            self.fanout.user_follow(caller.user, result[0].conv)

        attrs = {"category": d["category"], "description": d.get("description", ""), "certified": certified}
        quota = creation_quota(caller, "circles", self.per_hour)
        rec, _ = await self.commit(
            self.conversations.create(
                kind.name, kind.prefix, caller.user, caller.author, d["name"], attrs, self.clock.wall_ms(), quota
            ),
            after,
        )
        return kind.wire(rec)

    async def list_(self, caller: Caller, d: Args) -> Reply:
        items, nxt = await self.conversations.listing(
            self.kind.name, d.get("category"), d.get("after"), d.get("limit", 20)
        )
        return {"convs": [self.kind.wire(r) for r in items], "next": nxt}

    async def join(self, caller: Caller, d: Args) -> Reply:
        conv, user = d["conv"], caller.user

        def joined(state: ConvState, muted_until: int) -> None:
            state.members[user] = "member"
            if muted_until:  # a mute outlives leaving and joining again
                state.muted[user] = muted_until

        def after(result: tuple[ConvRecord, SystemMessage, int]) -> None:
            self.fanout.changed(conv, functools.partial(joined, muted_until=result[2]))
            self.fanout.user_follow(user, conv, joined=result[1].msg["seq"])
            self.outbox.happened("circle.joined")

        check = functools.partial(self.kind.require, conv)
        rec, _, _ = await self.commit(
            self.members.join(conv, user, caller.author, self.clock.wall_ms(), check), after
        )
        return self.kind.wire(rec)

    async def leave(self, caller: Caller, d: Args) -> Reply:
        conv, user = d["conv"], caller.user

        def forget(state: ConvState) -> None:
            state.members.pop(user, None)
            state.muted.pop(user, None)

        def after(result: SystemMessage) -> None:
            # the leave event is published after this: the leaver's own sockets
            # stop following first, and learn of it from the reply
            self.fanout.changed(conv, forget)
            self.fanout.user_follow(user, conv, on=False)

        await member_state(self.directory, caller, conv)  # refusals reveal nothing, as every conv op's
        check = functools.partial(self.kind.check_leave, conv)
        await self.commit(self.members.leave(conv, user, caller.author, self.clock.wall_ms(), check), after)
        return {}

    async def role(self, caller: Caller, d: Args) -> Reply:
        conv, target, new_role = d["conv"], d["user"], d["role"]
        await member_state(self.directory, caller, conv)
        check = functools.partial(self.kind.check_role_change, conv, target)
        await self.commit(
            self.members.set_role(conv, caller.user, caller.author, target, new_role, self.clock.wall_ms(), check),
            lambda _: self.fanout.changed(conv, lambda s: s.members.__setitem__(target, new_role)),
        )
        return {}

    async def announce(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        await member_state(self.directory, caller, conv)
        check = functools.partial(self.kind.check_admin, conv)
        event = await self.commit(
            self.conversations.announce(conv, caller.user, caller.author, d["text"], self.clock.wall_ms(), check)
        )
        return {"seq": event.msg["seq"]}

    async def mute(self, caller: Caller, d: Args) -> Reply:
        conv, target = d["conv"], d["user"]
        await member_state(self.directory, caller, conv)
        now = self.clock.wall_ms()
        until = now + d["seconds"] * 1000 if d["seconds"] else 0

        def apply(state: ConvState) -> None:
            if until:
                state.muted[target] = until
            else:
                state.muted.pop(target, None)

        check = functools.partial(self.kind.check_mute, conv, target)
        await self.commit(
            self.members.mute(conv, caller.user, caller.author, target, until, now, check),
            lambda _: self.fanout.changed(conv, apply),
        )
        return {"until": until}

    async def members_page(self, caller: Caller, d: Args) -> Reply:
        await member_state(self.directory, caller, d["conv"])
        items, nxt = await self.members.page(d["conv"], d.get("after"), d.get("limit", 50))
        return {"members": items, "next": nxt}
