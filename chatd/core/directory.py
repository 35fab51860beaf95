"""In-memory cache of conversation state for the hot path (membership, roles,
mutes, DM blocks). Filled lazily from the store; updated by the ops layer after
each committed change, in commit order.

A load races with commits that land while it reads; a change to a conversation
being loaded is counted, and a load that saw a change is redone, so the cache
never keeps a state older than the last commit it was told about.

When several processes share a store, they invalidate each other's entries over
the bus (``Fanout.changed``); an entry is trusted only while a local socket
follows the conversation (the node is subscribed to its channel then).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..kinds import ConvState, Kinds
from ..store.base import Blocks, Conversations

log = logging.getLogger("chatd.directory")


class Directory:
    def __init__(
        self,
        conversations: Conversations,
        blocks: Blocks,
        kinds: Kinds,
        max_entries: int = 200_000,
        ready: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.conversations = conversations
        self.blocks = blocks
        self.kinds = kinds
        # awaited before a load: returns once changes to the conversation made on
        # other nodes reach us over the bus (so the load cannot miss one)
        self.ready = ready
        self.max_entries = max_entries
        self._convs: dict[str, ConvState] = {}
        # conv -> [loads in flight, changes seen while loading]; only conversations
        # being loaded have an entry, so it cannot grow with the number of conversations
        self._loading: dict[str, list[int]] = {}

    async def get(self, conv: str) -> ConvState | None:
        state = self._convs.get(conv)
        while state is None:
            entry = self._loading.setdefault(conv, [0, 0])
            entry[0] += 1
            seen = entry[1]
            try:
                if self.ready is not None:
                    await self.ready(conv)
                state = await self._load(conv)
            finally:
                entry[0] -= 1
                changed = entry[1] != seen
                if not entry[0]:
                    del self._loading[conv]
            if state is None:
                return None
            if changed:
                state = None  # a commit landed while we read: read again
                continue
            if len(self._convs) >= self.max_entries:
                self._convs.pop(next(iter(self._convs)))  # oldest loaded first
            self._convs[conv] = state
        return state

    async def _load(self, conv: str) -> ConvState | None:
        snap = await self.conversations.load(conv)
        if snap is None:
            return None
        kind = self.kinds.get(snap.kind)
        if kind is None:  # a kind this server does not know: as if it did not exist
            log.warning("conversation %s has unknown kind %r", conv, snap.kind)
            return None
        blocked = False
        if kind.blocking and len(snap.members) == 2:
            a, b = snap.members
            blocked = await self.blocks.between(a, b)
        return ConvState(conv, kind, dict(snap.members), dict(snap.muted), blocked)

    def cached(self, conv: str) -> ConvState | None:
        """The cached state, without loading (the synchronous hot path)."""
        return self._convs.get(conv)

    def changed(self, conv: str, update: Callable[[ConvState], None] | None = None) -> None:
        """A committed change to ``conv``: apply it to the cached state, if any
        (``update=None`` drops the entry so the next reader reloads it)."""
        loading = self._loading.get(conv)
        if loading is not None:
            loading[1] += 1
        state = self._convs.get(conv)
        if state is not None:
            if update is None:
                del self._convs[conv]
            else:
                update(state)

    def clear(self) -> None:
        """Forget every entry (the bus lost envelopes: any of them may be stale)."""
        for entry in self._loading.values():
            entry[1] += 1
        self._convs.clear()
