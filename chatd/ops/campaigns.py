"""Care campaigns (docs/service-groups.md): a backend's one call posts a claimable
card (a holiday gift, a coupon) into every service group, or those whose tags
match; each owner claims it once, while stock lasts. The posts go out in the
background (``chatd.core.desk.CampaignPosts``); calling again with the same
``cid`` answers with the campaign's progress."""

from __future__ import annotations

from ..clock import Clock
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..kinds import Service
from ..store.base import Campaigns
from .base import Args, Commit, Reply


class CampaignOps:
    def __init__(self, commit: Commit, repo: Campaigns, fanout: Fanout, kind: Service, clock: Clock) -> None:
        self.commit = commit
        self.repo = repo
        self.fanout = fanout
        self.kind = kind
        self.clock = clock

    async def create(self, caller: Caller, d: Args) -> Reply:
        return await self.commit(self.repo.create(
            caller.user, caller.author, d["cid"], d["card"], d.get("tags", {}), d.get("stock"), d.get("points", 0),
            self.clock.wall_ms(),
        ))

    async def claim(self, caller: Caller, d: Args) -> Reply:
        def after(result: tuple[Reply, dict[str, dict[str, object]]]) -> None:
            for user, push in result[1].items():
                self.fanout.user_push(user, "points", push)

        reply, _ = await self.commit(
            self.repo.claim(caller.user, self.kind.conv_id(caller.user), d["id"], self.clock.wall_ms()), after
        )
        return reply
