"""Presence subscriptions and state, and typing indicators: ephemeral, never stored."""

from __future__ import annotations

from chatd_protocol import Err, RequestError

from ..core.caller import Caller
from ..core.directory import Directory
from ..core.fanout import Fanout
from ..core.hub import Sink
from ..limits import Throttle
from ..presence import Presence
from .base import Args, Reply, member_state

TYPING_EVERY = 3.0  # s: one typing push per user and conversation at most this often


def _sink(caller: Caller) -> Sink:
    """Presence belongs to a socket: a caller without one has no device."""
    if caller.sink is None:
        raise RequestError(Err.BAD_REQUEST, "presence needs a connected socket")
    return caller.sink


class PresenceOps:
    def __init__(self, presence: Presence, directory: Directory, fanout: Fanout, typing: Throttle) -> None:
        self.presence = presence
        self.directory = directory
        self.fanout = fanout
        self.typing_throttle = typing

    async def sub(self, caller: Caller, d: Args) -> Reply:
        return {"presence": await self.presence.watch(_sink(caller), d["users"])}

    async def unsub(self, caller: Caller, d: Args) -> Reply:
        self.presence.unwatch(_sink(caller), d["users"])
        return {}

    async def set_(self, caller: Caller, d: Args) -> Reply:
        duty = d.get("on_duty")
        if duty is not None and not caller.is_staff:
            raise RequestError(Err.FORBIDDEN, "only staff have an on-duty state")
        dev = self.presence.set(_sink(caller), d.get("status"), duty)
        return {"status": dev.status, "on_duty": dev.duty}

    async def typing(self, caller: Caller, d: Args) -> Reply:
        conv = d["conv"]
        state, _ = await member_state(self.directory, caller, conv)
        if not state.kind.check_typing(state):
            return {"pushed": False}
        if not self.typing_throttle.allow((caller.user, conv)):
            return {"pushed": False}
        self.fanout.publish(conv, "typing", {"conv": conv, "user": caller.user})
        return {"pushed": True}
