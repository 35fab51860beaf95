"""The order gate (chatd/core/fanout/gate.py): local sockets see a
conversation's messages in seq order, a gap filled from the store, whichever
node committed them. A real Hub and fake sockets; the store's ``between`` is a
fake coroutine the test holds and releases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from support import FakeSink

from chatd.core.fanout.gate import OrderGate
from chatd.core.hub import Hub
from chatd.edge import wsframe
from chatd.metrics import Metrics
from chatd.store import StoreUnavailable

CONV = "c:1"


def msg(seq: int, conv: str = CONV) -> dict[str, Any]:
    return {"conv": conv, "seq": seq, "kind": "text", "text": f"m{seq}"}


class Net:
    """One node's gate in front of two sockets (msgpack, JSON) following CONV,
    over a store of committed messages."""

    def __init__(self) -> None:
        self.hub = Hub(Metrics(), wsframe.frame)
        self.sinks = [FakeSink(0), FakeSink(1)]
        for i, s in enumerate(self.sinks):
            self.hub.register(f"u{i}", s)
            self.hub.settle(s, [CONV])
        self.stored: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, int, int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False
        self.tasks: list[asyncio.Task[None]] = []
        self.gate = OrderGate(self.hub, self.between, self.spawn)

    async def between(self, conv: str, after: int, before: int) -> list[dict[str, Any]]:
        self.calls.append((conv, after, before))
        await self.release.wait()
        if self.fail:
            raise StoreUnavailable("disk I/O error")
        return [self.stored[s] for s in sorted(self.stored) if after < s < before]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    def commit(self, *seqs: int) -> None:
        for seq in seqs:
            self.stored[seq] = msg(seq)

    def push(self, seq: int, local: bool = False) -> None:
        """``seq`` arrives: committed on this node (the push as a dict at hand) or
        from another node over the bus (the msgpack body alone)."""
        m = msg(seq)
        self.gate.push(CONV, seq, self.hub.body("msg", m), {"push": "msg", "d": m} if local else None)

    async def filled(self) -> None:
        await asyncio.gather(*self.tasks)
        self.tasks.clear()

    def seen(self) -> list[int]:
        """The seqs each socket got, the same for both codecs."""
        got = [[p["d"]["seq"] for p in s.pushes() if p["push"] == "msg"] for s in self.sinks]
        assert got[0] == got[1], got
        return got[0]


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    n = Net()
    yield n
    n.release.set()
    await n.filled()


async def test_in_order_passes_at_once(net: Net) -> None:
    for seq in (1, 2, 3):
        net.push(seq, local=seq % 2 == 1)
        assert net.seen()[-1] == seq
    assert net.seen() == [1, 2, 3]
    assert net.calls == [] and net.tasks == []


async def test_the_first_push_sets_the_baseline(net: Net) -> None:
    net.push(7)
    net.push(8)
    assert net.seen() == [7, 8] and net.calls == []


async def test_duplicates_are_dropped(net: Net) -> None:
    for seq in (1, 2, 2, 1, 3, 3):
        net.push(seq)
    assert net.seen() == [1, 2, 3]


async def test_a_gap_holds_later_pushes_fills_from_the_store_then_delivers_in_order(net: Net) -> None:
    net.commit(1, 2, 3, 4, 5)
    net.push(1)
    net.release.clear()
    net.push(4)  # 2 and 3 are still on their way (or lost)
    await asyncio.sleep(0)
    assert net.calls == [(CONV, 1, 4)]
    net.push(5)  # arrives while the store is read: held too
    assert net.seen() == [1]
    net.release.set()
    await net.filled()
    assert net.seen() == [1, 2, 3, 4, 5]
    assert net.gate.gaps_filled == 1
    net.push(6)  # the gate is back to passing at once
    assert net.seen()[-1] == 6 and len(net.calls) == 1


async def test_the_late_original_of_a_filled_seq_is_not_delivered_twice(net: Net) -> None:
    net.commit(1, 2, 3)
    net.push(1)
    net.release.clear()
    net.push(3)
    await asyncio.sleep(0)
    net.push(2)  # the original arrives while the store is read
    net.release.set()
    await net.filled()
    net.push(2)  # and once more, after
    assert net.seen() == [1, 2, 3]


@pytest.mark.parametrize("cause", ["unavailable", "missing"])
async def test_a_gap_the_store_cannot_fill_still_releases_what_is_held(net: Net, cause: str) -> None:
    net.fail = cause == "unavailable"  # "missing": the store has not got them
    net.push(1)
    net.push(4)
    net.push(5)
    await net.filled()
    # 2 and 3 are skipped (the client fills them with sync/history); nothing is stuck
    assert net.seen() == [1, 4, 5]
    net.push(3)  # older than what was pushed: a duplicate now
    net.push(6)
    assert net.seen() == [1, 4, 5, 6]


async def test_unordered_pushes_pass_even_while_a_gap_is_held(net: Net) -> None:
    net.push(1)
    net.release.clear()
    net.push(3)
    body = net.hub.body("typing", {"conv": CONV, "user": "bob"})
    net.gate.push(CONV, 0, body, None)
    net.gate.push(CONV, 0, body, None)
    assert [p["push"] for p in net.sinks[1].pushes()] == ["msg", "typing", "typing"]


async def test_several_held_out_of_order_are_sorted(net: Net) -> None:
    net.commit(1, 2, 3, 4, 5, 6)
    net.push(1)
    for seq in (5, 3, 6, 4):  # all arrive before the fill starts
        net.push(seq)
    await net.filled()
    assert net.seen() == [1, 2, 3, 4, 5, 6]
    assert net.calls == [(CONV, 1, 3)]  # only 2 was missing


async def test_a_second_gap_among_the_held_is_filled_too(net: Net) -> None:
    net.commit(1, 2, 3, 4, 5, 6)
    net.push(1)
    net.push(3)
    net.push(6)
    await net.filled()
    assert net.seen() == [1, 2, 3, 4, 5, 6]
    assert net.calls == [(CONV, 1, 3), (CONV, 3, 6)]
    assert net.gate.gaps_filled == 2


async def test_a_push_for_a_conversation_nobody_here_follows_is_ignored(net: Net) -> None:
    net.gate.push("c:other", 5, net.hub.body("msg", msg(5, "c:other")), None)
    net.gate.push("c:other", 9, net.hub.body("msg", msg(9, "c:other")), None)
    assert net.calls == [] and net.tasks == [] and all(s.writes == [] for s in net.sinks)


async def test_forget_resets_the_conversations_baseline(net: Net) -> None:
    net.push(5)
    net.gate.forget(CONV)
    net.push(3)  # a new baseline: not a duplicate, no gap
    net.push(4)
    assert net.seen() == [5, 3, 4] and net.calls == []


async def test_clear_resets_every_baseline(net: Net) -> None:
    net.push(5)
    net.gate.clear()
    net.push(9)  # not a gap after a reset
    assert net.seen() == [5, 9] and net.calls == []


async def test_clear_during_a_fill_drops_what_was_held_and_starts_afresh(net: Net) -> None:
    net.commit(1, 2, 3)
    net.push(1)
    net.release.clear()
    net.push(3)
    await asyncio.sleep(0)
    net.gate.clear()  # the bus reset: sockets are told to resync
    net.push(7)
    assert net.seen() == [1, 7]
    net.release.set()
    await net.filled()
    assert net.seen() == [1, 7]  # the abandoned fill delivers nothing late
    net.push(8)
    assert net.seen() == [1, 7, 8]


# -- start: a join or a new DM makes this node follow a conversation ----------


class Subscription:
    """The bus channel of CONV: ``ready`` returns once the test confirms it."""

    def __init__(self) -> None:
        self.live = asyncio.Event()
        self.waited = 0

    async def ready(self) -> None:
        self.waited += 1
        await self.live.wait()


async def test_start_pushes_what_crossed_the_bus_before_the_subscription(net: Net) -> None:
    sub = Subscription()
    net.gate.start(CONV, 2, sub.ready)  # the join event is seq 3
    net.commit(3, 4)  # committed on another node; their envelopes never reached this one
    net.push(6)  # arrives once the subscription is live, before the read
    net.commit(5, 6)
    await asyncio.sleep(0)
    assert net.seen() == [] and sub.waited == 1 and net.calls == []  # nothing read before the channel is live
    sub.live.set()
    await net.filled()
    assert net.seen() == [3, 4, 5, 6]
    assert net.calls[0] == (CONV, 2, 1 << 62)
    net.push(5)  # a late duplicate
    net.push(7)
    assert net.seen() == [3, 4, 5, 6, 7]


async def test_start_with_nothing_stored_sets_the_baseline_at_the_join(net: Net) -> None:
    sub = Subscription()
    sub.live.set()
    net.gate.start(CONV, 0, sub.ready)
    await net.filled()
    net.push(1)
    net.push(2)
    assert net.seen() == [1, 2]


async def test_start_leaves_a_conversation_with_a_baseline_alone(net: Net) -> None:
    sub = Subscription()
    net.push(4)
    net.gate.start(CONV, 0, sub.ready)
    net.gate.start("c:nobody-follows", 0, sub.ready)
    assert net.tasks == [] and sub.waited == 0
    net.push(5)
    assert net.seen() == [4, 5]


async def test_start_releases_what_is_held_when_the_store_is_down(net: Net) -> None:
    sub = Subscription()
    sub.live.set()
    net.fail = True
    net.gate.start(CONV, 0, sub.ready)
    net.push(1)
    net.push(2)
    await net.filled()
    assert net.seen() == [1, 2]  # the client's sync repairs anything else


async def test_a_bus_reset_during_start_abandons_it(net: Net) -> None:
    sub = Subscription()
    net.commit(1, 2)
    net.gate.start(CONV, 0, sub.ready)
    net.push(2)
    net.gate.clear()
    net.push(5)
    sub.live.set()
    await net.filled()
    assert net.seen() == [5]  # the socket was told to resync; nothing late


def newcomer(net: Net, user: str = "late") -> tuple[FakeSink, Any]:
    """A user's socket, registered but not following CONV yet, and the ``add`` a
    remote follow hands to ``OrderGate.join``."""
    sink = FakeSink(0)
    net.hub.register(user, sink)

    def add() -> Any:
        net.hub.user_follow(user, CONV, True)
        return net.hub.user_sinks(user)

    return sink, add


def seqs(sink: FakeSink) -> list[int]:
    return [p["d"]["seq"] for p in sink.pushes() if p["push"] == "msg"]


async def test_a_remote_joiner_after_the_baseline_gets_what_was_pushed_since_their_join_once(net: Net) -> None:
    net.commit(1, 2, 3)
    for seq in (1, 2, 3):
        net.push(seq)
    late, add = newcomer(net)
    assert net.gate.settled(CONV)
    await net.gate.join(CONV, 1, add)  # they joined at seq 2
    assert seqs(late) == [2, 3]
    net.push(4)
    assert seqs(late) == [2, 3, 4] and net.seen() == [1, 2, 3, 4]  # the others got nothing twice


async def test_pushes_arriving_while_the_joiner_is_read_for_reach_them_in_order(net: Net) -> None:
    net.commit(1, 2)
    net.push(1)
    net.push(2)
    late, add = newcomer(net)
    net.release.clear()
    joining = asyncio.get_running_loop().create_task(net.gate.join(CONV, 0, add))
    await asyncio.sleep(0)
    net.commit(3)
    net.push(3)  # live, while the joiner's read is in flight: not theirs yet
    net.release.set()
    await joining
    assert seqs(late) == [1, 2, 3]  # a second read covered 3, then the topic took them
    net.push(4)
    assert seqs(late) == [1, 2, 3, 4] and net.seen() == [1, 2, 3, 4]


async def test_a_joiner_unfollowed_meanwhile_is_not_added(net: Net) -> None:
    net.commit(1)
    net.push(1)
    late = FakeSink(0)
    net.hub.register("late", late)
    await net.gate.join(CONV, 0, lambda: None)
    net.push(2)
    assert seqs(late) == []


async def test_a_joiner_is_added_when_the_store_cannot_be_read(net: Net) -> None:
    net.commit(1)
    net.push(1)
    late, add = newcomer(net)
    net.fail = True
    await net.gate.join(CONV, 0, add)
    net.fail = False
    net.push(2)
    assert seqs(late) == [2]  # live from now; the missed seq is the client's catch-up
