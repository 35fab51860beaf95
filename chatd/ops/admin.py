"""The backend's ops on users: sign a user out everywhere, revoke their tokens.

Both need the ``admin`` scope (a backend's token; docs/admin-api.md) and run the
same over the HTTP admin listener and over a socket. A sign-out reaches every
process through the bus (``Fanout.sign_out``); the sockets it closes get 4104.
"""

from __future__ import annotations

from chatd_protocol import Err, RequestError

from ..auth import CLOCK_SKEW_S
from ..clock import Clock
from ..core.caller import Caller
from ..core.fanout import Fanout
from ..store.base import Users
from .base import Args, Commit, Reply


class AdminOps:
    def __init__(self, commit: Commit, users: Users, fanout: Fanout, clock: Clock) -> None:
        self.commit = commit
        self.users = users
        self.fanout = fanout
        self.clock = clock

    async def kick(self, caller: Caller, d: Args) -> Reply:
        """Close every socket of the user now, on every process (4104), and any
        whose auth is under way. Their tokens stay valid: to keep them out, revoke."""
        at = await self.commit(self.users.kick(d["user"], self.clock.wall_ms() + 1))
        self.fanout.sign_out(d["user"], kicked=at)
        return {"user": d["user"]}

    async def revoke(self, caller: Caller, d: Args) -> Reply:
        """Refuse the user's tokens issued before ``before`` (unix s, as the
        token's ``iat``; default: the next whole second, so that every token
        issued until now is refused), and close the sockets that use one."""
        now_s = self.clock.wall_ms() // 1000
        before = d.get("before", now_s + 1)
        if before > now_s + CLOCK_SKEW_S:
            raise RequestError(Err.BAD_REQUEST, "before is in the future (a revocation is not a ban)")
        in_force = await self.commit(self.users.revoke(d["user"], before))
        self.fanout.sign_out(d["user"], before=in_force)
        return {"user": d["user"], "before": in_force}
