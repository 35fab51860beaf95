"""The users this server has seen: each is recorded once per process, at its
first authentication here, so a DM is opened only to a real user (issue 10) and
a backend can provision users ahead of their first connection."""

from __future__ import annotations

from chatd_protocol import RequestError

from ..auth import Identity
from ..clock import Clock
from ..store import StoreUnavailable
from ..store.base import Users
from .pipeline import Pipeline

MAX_CACHED = 200_000  # users remembered as recorded; past it the memory starts over


class UserBook:
    def __init__(self, pipeline: Pipeline, users: Users, clock: Clock) -> None:
        self.pipeline = pipeline
        self.users = users
        self.clock = clock
        self._recorded: set[tuple[str, str, str]] = set()

    async def seen(self, identity: Identity) -> None:
        """Record ``identity`` (once per process and profile); waits for the commit,
        so a DM opened right after this user's first auth finds them."""
        key = (identity.id, identity.type, identity.name)
        if key in self._recorded:
            return
        try:
            await self.pipeline.write(self.users.seen(identity.id, identity.type, identity.name, self.clock.wall_ms()))
        except RequestError as exc:  # the store could not take it
            raise StoreUnavailable(exc.message) from None
        if len(self._recorded) >= MAX_CACHED:
            self._recorded.clear()
        self._recorded.add(key)

    async def sign_outs(self, user: str) -> tuple[int, int]:
        """(revoked before, unix s; kicked at, ms): ``admin.revoke``, ``admin.kick``."""
        return await self.users.sign_outs(user)
