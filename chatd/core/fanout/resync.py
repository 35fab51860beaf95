"""After a loss on the bus: re-read every local user's memberships (follow what
changed) and sign-outs (a kick or revocation whose envelope was lost), and tell
every socket to catch up with a ``resync`` push."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ...kinds import Kinds
from ...store import StoreUnavailable
from ...store.base import Members
from ..directory import Directory
from ..hub import CODEC_SLOTS, Hub
from .gate import OrderGate


class Resync:
    def __init__(
        self,
        hub: Hub,
        directory: Directory,
        gate: OrderGate,
        members: Members,
        kinds: Kinds,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.hub = hub
        self.kinds = kinds
        self.directory = directory
        self.gate = gate
        self.members = members
        self.spawn = spawn
        self.count = 0
        self.running = False
        self._again = False
        self._touched: set[str] = set()  # users whose memberships changed while a resync read them
        # a user's stored sign-out times (revoked before, s; kicked at, ms), if the server has them
        self.sign_outs: Callable[[str], Awaitable[tuple[int, int]]] | None = None

    def touched(self, user: str) -> None:
        if self.running:
            self._touched.add(user)

    def start(self) -> None:
        if not self.hub.users:
            return
        if self.running:
            self._again = True  # the running resync starts over when done
        else:
            self.spawn(self._run())

    async def _run(self) -> None:
        self.running = True
        try:
            while True:
                self._again = False
                self.count += 1
                await self._once()
                if not self._again:
                    break
        finally:
            self.running = False
            self._touched.clear()

    async def _once(self) -> None:
        hub = self.hub
        for user in list(hub.users):
            convs: set[str] | None = None
            for _ in range(3):
                self._touched.discard(user)
                try:
                    convs = set(await self.members.convs_of(user))
                except StoreUnavailable:
                    convs = None
                    break
                if user not in self._touched:
                    break
            if self.sign_outs is not None:
                try:
                    hub.sign_out(user, *await self.sign_outs(user))
                except StoreUnavailable:
                    pass  # the next resync reads them again
            if convs is None:
                continue  # could not read them: keep what the sockets follow (sync still repairs)
            for sink in tuple(hub.users.get(user, ())):
                if not hub.settled(sink):
                    continue  # still authenticating: it reads memberships itself
                follows = hub.follows(sink)
                for conv in convs - follows:
                    hub.follow(sink, conv)
                for conv in follows - convs:
                    if self.kinds.stored(conv):  # ephemeral viewers are in no member list
                        hub.unfollow(sink, conv)
        frames = [hub.encode(slot, "resync", {"reason": "bus"}) for slot in range(len(CODEC_SLOTS))]
        for sink in hub.sinks():
            if hub.settled(sink):
                sink.write(frames[sink.slot])
