"""The order gate: every node delivers a conversation's messages to its sockets
in ``seq`` order, whichever node committed them.

It remembers the last seq it pushed per followed conversation; a duplicate
(``seq <= last``) is dropped; a message that skips ahead (``seq > last + 1``: an
earlier one is still on its way from another node, or was lost with the bus)
is held while the missing seqs are read from the store, then all are pushed in
order. The missing ones are committed: the store allocates seq inside the
write transaction and a higher seq commits after every lower one (invariant 3
of ``chatd/store/base.py``).

When a join or a new DM makes a node start following a conversation, messages
another node committed after the join may cross the bus before this node's
subscription is live. ``start`` closes that window: pushes are held until the
subscription is confirmed, the messages since the join are read from the store,
and the held pushes follow in order.

Known gap: after a bus reset (or at auth) the first push of a conversation sets
the baseline; an earlier seq from another node arriving just after it is
dropped as a duplicate, and the client fills it with ``history`` (a reset also
pushes ``resync``).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ...store import StoreUnavailable
from ..hub import Hub, Topic

log = logging.getLogger("chatd.fanout")

Held = tuple[int, bytes, "dict[str, Any] | None"]  # seq, msgpack push body, the push as a dict if known
Between = Callable[[str, int, int], Awaitable[list[dict[str, Any]]]]  # (conv, after, before) -> messages
Spawn = Callable[[Coroutine[Any, Any, None]], None]
Ready = Callable[[], Awaitable[None]]  # returns once the conversation's bus channel is subscribed
END = 1 << 62  # above every seq


def _seq_key(item: Held) -> int:
    return item[0]


class OrderGate:
    def __init__(self, hub: Hub, between: Between, spawn: Spawn) -> None:
        self.hub = hub
        self.between = between
        self.spawn = spawn
        self.last: dict[str, int] = {}  # conv -> last seq pushed to local sockets
        self.held: dict[str, list[Held]] = {}  # conv -> pushes waiting for a gap to fill
        self.gaps_filled = 0

    def push(self, conv: str, seq: int, body: bytes, obj: dict[str, Any] | None) -> None:
        """Deliver a push to the conversation's local followers; ``seq`` 0 is
        unordered (typing, receipts)."""
        topic = self.hub.topics.get(conv)
        if topic is None:
            return
        if seq:
            held = self.held.get(conv)
            if held is not None:
                bisect.insort(held, (seq, body, obj), key=_seq_key)
                return
            last = self.last.get(conv)
            if last is not None:
                if seq <= last:
                    return  # already pushed (a gap fill read it from the store)
                if seq > last + 1:
                    held = self.held[conv] = [(seq, body, obj)]
                    self.spawn(self._fill(conv, last, held))
                    return
            self.last[conv] = seq
        self.hub.deliver(topic, body, obj)

    def start(self, conv: str, after: int, ready: Ready) -> None:
        """This node has just started following ``conv`` for a join or a new DM
        (seqs above ``after`` are the joiner's). Hold its pushes until ``ready``
        returns, push what the store has above ``after``, then the held ones.
        A conversation that already has a baseline or a fill is left alone."""
        if conv in self.last or conv in self.held or conv not in self.hub.topics:
            return
        held: list[Held] = []
        self.held[conv] = held
        self.spawn(self._start(conv, after, ready, held))

    def settled(self, conv: str) -> bool:
        """Whether ``conv`` has a baseline and no fill running: a newcomer to its topic
        has missed what was pushed since their join (see :meth:`join`)."""
        return conv in self.last and conv not in self.held

    async def join(self, conv: str, after: int, add: Callable[[], Topic | None]) -> None:
        """Another local user starts following ``conv``, which this node already
        follows, for a join made on another node (seqs above ``after`` are theirs).
        The topic's followers have had everything up to the baseline, the newcomer
        nothing: read from the store what was pushed since their join, then, with no
        await in between, ``add()`` their sinks to the topic and push it to them
        alone. Every seq reaches them once, in order; nobody else sees it twice."""
        pushed = after
        stash: list[dict[str, Any]] = []
        while self.settled(conv) and self.last[conv] > pushed:
            try:
                missing = await self.between(conv, pushed, self.last[conv] + 1)
            except StoreUnavailable as exc:
                log.warning("fan-out: cannot read %s after seq %d for a joiner: %s", conv, pushed, exc)
                break
            fresh = [m for m in missing if m["seq"] > pushed]
            if not fresh:
                break  # the store does not have them: the joiner's catch-up will
            stash += fresh
            pushed = fresh[-1]["seq"]
        sinks = add()
        if sinks is None:
            return
        for msg in stash:
            self.hub.deliver(sinks, self.hub.body("msg", msg), {"push": "msg", "d": msg})

    def forget(self, conv: str) -> None:
        """No local follower any more."""
        self.last.pop(conv, None)
        self.held.pop(conv, None)

    def clear(self) -> None:
        """Envelopes may have been lost: every baseline is void."""
        self.last.clear()
        self.held.clear()

    async def _start(self, conv: str, after: int, ready: Ready, held: list[Held]) -> None:
        try:
            await ready()
            missing = await self.between(conv, after, END)
        except StoreUnavailable as exc:
            log.warning("fan-out: cannot read %s after seq %d: %s", conv, after, exc)
            missing = []
        except BaseException:
            if self.held.get(conv) is held:
                del self.held[conv]
            raise
        if self.held.get(conv) is not held:
            return  # the topic went away or the bus reset meanwhile
        await self._fill(conv, self._push_stored(conv, missing, after), held)

    def _push_stored(self, conv: str, missing: list[dict[str, Any]], last: int) -> int:
        """Push the messages read from the store that are above ``last``, in
        order; returns the last seq pushed."""
        topic = self.hub.topics.get(conv)
        for msg in missing:
            if topic is not None and msg["seq"] > last:
                self.hub.deliver(topic, self.hub.body("msg", msg), {"push": "msg", "d": msg})
                last = msg["seq"]
        return last

    async def _fill(self, conv: str, last: int, held: list[Held]) -> None:
        """Push the messages between ``last`` and the held ones, from the store."""
        try:
            while held and self.held.get(conv) is held:
                first = held[0][0]
                if first > last + 1:
                    try:
                        missing = await self.between(conv, last, first)
                    except StoreUnavailable as exc:
                        log.warning("fan-out: cannot fill %s seq %d..%d: %s", conv, last + 1, first - 1, exc)
                        missing = []
                    if self.held.get(conv) is not held:
                        return  # the topic went away or the bus reset meanwhile
                    last = self._push_stored(conv, missing, last)
                    self.gaps_filled += 1
                    last = max(last, first - 1)  # what the store did not have, catch-up will
                topic = self.hub.topics.get(conv)
                while held and held[0][0] <= last + 1:
                    seq, body, obj = held.pop(0)
                    if seq > last:
                        last = seq
                        if topic is not None:
                            self.hub.deliver(topic, body, obj)
        finally:
            if self.held.get(conv) is held:
                del self.held[conv]
                if conv in self.hub.topics:
                    self.last[conv] = last
