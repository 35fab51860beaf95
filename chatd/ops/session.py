"""Session-level ops: ping, the caller's conversation list."""

from __future__ import annotations

from chatd_protocol import Err, RequestError

from ..clock import Clock
from ..core.caller import Caller
from ..kinds import Kinds
from ..store.base import Members
from .base import Args, Reply


class SessionOps:
    def __init__(self, members: Members, kinds: Kinds, clock: Clock) -> None:
        self.members = members
        self.kinds = kinds
        self.clock = clock

    async def auth(self, caller: Caller, d: Args) -> Reply:
        # the session itself authenticates (chatd/edge/session.py); a caller
        # that reaches an op is authenticated already
        raise RequestError(Err.ALREADY_AUTHENTICATED, "this socket is already authenticated")

    async def refresh(self, caller: Caller, d: Args) -> Reply:
        # a socket renews its token in the session (chatd/edge/session.py); a
        # caller without one has no token to renew
        raise RequestError(Err.BAD_REQUEST, "auth.refresh renews a socket's token")

    async def ping(self, caller: Caller, d: Args) -> Reply:
        return {"server_time": self.clock.wall_ms()}

    async def convs(self, caller: Caller, d: Args) -> Reply:
        views, nxt = await self.members.view(caller.user, d.get("after"), d.get("limit", 50))
        out = []
        for v in views:
            kind = self.kinds.get(v.record.kind)
            if kind is not None:  # a kind this server does not know is left out, not an error
                out.append(kind.member_wire(v, caller.user))
        return {"convs": out, "next": nxt}
