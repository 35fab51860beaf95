"""One-to-one conversations: one canonical conversation per pair; blocking."""

from __future__ import annotations

from ..clock import Clock
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..kinds import Direct
from ..store.base import Blocks, Conversations
from ..store.records import ConvRecord
from .base import Args, Commit, Reply, creation_quota


class DirectOps:
    def __init__(
        self,
        commit: Commit,
        conversations: Conversations,
        blocks: Blocks,
        fanout: Fanout,
        kind: Direct,
        clock: Clock,
        known_peers: bool = True,
        new_per_hour: int = 0,
    ) -> None:
        self.known_peers = known_peers  # a DM only to a user the server has seen
        self.new_per_hour = new_per_hour
        self.commit = commit
        self.conversations = conversations
        self.blocks = blocks
        self.fanout = fanout
        self.kind = kind
        self.clock = clock

    async def open_dm(self, caller: Caller, d: Args) -> Reply:
        me, other = caller.user, d["user"]
        conv = self.kind.conv_id(me, other)

        def after(rec: ConvRecord) -> None:
            if not self.fanout.following(caller.sink, conv):  # first open on this process: both sides follow
                self.fanout.changed(conv, None)
                self.fanout.user_follow(me, conv)
                self.fanout.user_follow(other, conv)

        quota = creation_quota(caller, "new DMs", self.new_per_hour)
        rec = await self.commit(
            self.conversations.open_dm(conv, self.kind.name, me, other, self.clock.wall_ms(), self.known_peers, quota),
            after,
        )
        return {**self.kind.wire(rec), "peer": other}

    async def _set_block(self, caller: Caller, d: Args, on: bool) -> Reply:
        conv = self.kind.conv_id(caller.user, d["user"])
        # drop the cached DM state: the next send reloads whether either side blocks
        await self.commit(self.blocks.set(caller.user, d["user"], on), lambda _: self.fanout.changed(conv, None))
        return {}

    async def block(self, caller: Caller, d: Args) -> Reply:
        return await self._set_block(caller, d, True)

    async def unblock(self, caller: Caller, d: Args) -> Reply:
        return await self._set_block(caller, d, False)
