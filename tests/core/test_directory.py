"""The hot-path cache of conversation state (chatd/core/directory.py) over a
real SQLite store: what it loads, how committed changes reach it, and the
race between a load and a commit."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from storekit import AUTHOR, KINDS, TS, join, new_circle, one

from chatd.core.directory import Directory
from chatd.kinds import ConvState
from chatd.store.records import ConvSnapshot
from chatd.store.sqlite import SqliteStore


def directory(store: SqliteStore, **kw: Any) -> Directory:
    return Directory(store.conversations, store.blocks, KINDS, **kw)


async def circle_of(store: SqliteStore, *members: str) -> str:
    conv = await new_circle(store, "alice")
    for user in members:
        await one(store, join(store, conv, user))
    return conv


async def test_loads_kind_members_roles_and_mutes(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob", "carol")
    check = functools.partial(KINDS.circle.check_mute, conv, "bob")
    await one(store, store.members.mute(conv, "alice", AUTHOR, "bob", TS + 60_000, TS, check))
    d = directory(store)
    state = await d.get(conv)
    assert state is not None
    assert state.kind is KINDS.circle
    assert state.members == {"alice": "owner", "bob": "member", "carol": "member"}
    assert state.members.get("alice") == "owner" and "dave" not in state.members
    assert state.muted == {"bob": TS + 60_000}
    assert state.blocked is False


async def test_a_dm_carries_whether_either_side_blocks(store: SqliteStore) -> None:
    conv = KINDS.dm.conv_id("alice", "bob")
    await one(store, store.conversations.open_dm(conv, "dm", "alice", "bob", TS))
    d = directory(store)
    state = await d.get(conv)
    assert state is not None and state.kind is KINDS.dm and not state.blocked
    assert state.members == {"alice": "member", "bob": "member"}
    await one(store, store.blocks.set("bob", "alice", True))
    d.changed(conv, None)
    blocked = await d.get(conv)
    assert blocked is not None and blocked.blocked
    await one(store, store.blocks.set("bob", "alice", False))
    d.changed(conv, None)
    again = await d.get(conv)
    assert again is not None and not again.blocked


async def test_an_unknown_conversation_is_none_and_not_cached(store: SqliteStore) -> None:
    d = directory(store)
    assert await d.get("c:404") is None
    assert d.cached("c:404") is None


async def test_get_fills_the_cache_and_answers_from_it(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob")
    d = directory(store)
    assert d.cached(conv) is None
    state = await d.get(conv)
    assert state is not None and d.cached(conv) is state
    await one(store, join(store, conv, "carol"))  # committed, but nobody told the cache
    assert await d.get(conv) is state
    assert "carol" not in state.members


async def test_changed_with_an_update_applies_it_to_the_cached_state(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob")
    d = directory(store)
    state = await d.get(conv)
    assert state is not None
    await one(store, join(store, conv, "carol"))
    d.changed(conv, lambda s: s.members.__setitem__("carol", "member"))  # what circle.join does on commit
    assert d.cached(conv) is state
    assert state.members == {"alice": "owner", "bob": "member", "carol": "member"}


async def test_changed_without_an_update_drops_the_entry_and_the_next_get_reloads(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob")
    d = directory(store)
    first = await d.get(conv)
    await one(store, join(store, conv, "carol"))
    d.changed(conv, None)
    assert d.cached(conv) is None
    second = await d.get(conv)
    assert second is not None and second is not first
    assert "carol" in second.members


async def test_changed_for_an_uncached_conversation_changes_nothing(store: SqliteStore) -> None:
    conv = await circle_of(store)
    d = directory(store)
    calls: list[ConvState] = []
    d.changed(conv, calls.append)
    assert calls == [] and d.cached(conv) is None


class HeldLoads:
    """store.conversations whose first ``load`` reads the store, then waits
    for ``release`` before returning what it read (a slow read)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.loads = 0
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def load(self, conv: str) -> ConvSnapshot | None:
        self.loads += 1
        snap: ConvSnapshot | None = await self.real.load(conv)
        if self.loads == 1:
            self.reading.set()
            await self.release.wait()
        return snap


async def held_get(store: SqliteStore, conv: str) -> tuple[Directory, HeldLoads, asyncio.Task[ConvState | None]]:
    loads = HeldLoads(store.conversations)
    d = Directory(loads, store.blocks, KINDS)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(d.get(conv))
    await asyncio.wait_for(loads.reading.wait(), 5)
    return d, loads, task


async def test_a_commit_landing_while_a_load_is_in_flight_makes_the_load_redo(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob")
    d, loads, task = await held_get(store, conv)
    await one(store, join(store, conv, "carol"))  # commits after the load read the store
    d.changed(conv, lambda s: s.members.__setitem__("carol", "member"))
    loads.release.set()
    state = await asyncio.wait_for(task, 5)
    assert state is not None and "carol" in state.members
    assert loads.loads == 2
    assert d.cached(conv) is state


async def test_a_load_that_saw_no_change_is_kept(store: SqliteStore) -> None:
    conv = await circle_of(store, "bob")
    d, loads, task = await held_get(store, conv)
    d.changed("c:other", None)  # a change elsewhere does not matter
    loads.release.set()
    state = await asyncio.wait_for(task, 5)
    assert state is not None and set(state.members) == {"alice", "bob"}
    assert loads.loads == 1 and d.cached(conv) is state


async def test_clear_during_a_load_makes_it_redo(store: SqliteStore) -> None:
    conv = await circle_of(store)
    d, loads, task = await held_get(store, conv)
    await one(store, join(store, conv, "bob"))
    d.clear()  # the bus lost envelopes: whatever is being read may be stale
    loads.release.set()
    state = await asyncio.wait_for(task, 5)
    assert state is not None and "bob" in state.members and loads.loads == 2


async def test_clear_forgets_every_entry(store: SqliteStore) -> None:
    a, b = await circle_of(store), await circle_of(store)
    d = directory(store)
    await d.get(a)
    await d.get(b)
    d.clear()
    assert d.cached(a) is None and d.cached(b) is None
    assert await d.get(a) is not None


async def test_max_entries_evicts_the_oldest_loaded(store: SqliteStore) -> None:
    a, b, c = [await circle_of(store) for _ in range(3)]
    d = directory(store, max_entries=2)
    await d.get(a)
    await d.get(b)
    await d.get(c)
    assert d.cached(a) is None
    assert d.cached(b) is not None and d.cached(c) is not None
    again = await d.get(a)  # evicted entries load again
    assert again is not None and d.cached(b) is None
