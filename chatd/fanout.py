"""Fan-out across processes: the one place ops publish through.

Ops call ``publish`` (a push to a conversation), ``user_follow`` (a user's
sockets start/stop following a conversation), ``changed`` (a conversation's
cached state changed) and ``user_push`` (a push to one user's sockets). Each is
applied to this node's hub and directory at once and sent over the bus so every
other node applies it too (docs/design.md, "Fan-out across processes").

Order gate. Every node delivers a conversation's messages to its sockets in
``seq`` order, whichever node committed them: it remembers the last seq it pushed
per followed conversation; a duplicate (``seq <= last``) is dropped; a message
that skips ahead (``seq > last + 1``: an earlier one is still on its way from
another node, or was lost with the bus) is held while the missing seqs are read
from the store. They are committed: seq is allocated inside the write
transaction and writers are serialised, so a higher seq commits after every
lower one.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from typing import TYPE_CHECKING, Any

from .bus import Bus
from .directory import Directory
from .hub import CODEC_SLOTS, Hub, encode_push, push_body
from .metrics import Metrics
from .store import Store, StoreUnavailable
from .store.conversations import ConvState, user_convs
from .store.messages import between

if TYPE_CHECKING:
    from collections.abc import Callable

    from .presence import Presence

log = logging.getLogger("chatd.fanout")

# envelope ops (first payload byte)
OP_PUSH = 0  # c:<conv>: seq (8 bytes, 0 = unordered) + msgpack push; u:<user>: msgpack push
OP_CHANGED = 1  # c:<conv>: drop the cached conversation state
OP_FOLLOW = 2  # u:<user>: conv id
OP_UNFOLLOW = 3  # u:<user>: conv id

Held = tuple[int, bytes, "dict[str, Any] | None"]


def _seq_key(item: Held) -> int:
    return item[0]


class Fanout:
    def __init__(self, hub: Hub, directory: Directory, bus: Bus, store: Store, metrics: Metrics) -> None:
        self.hub = hub
        self.directory = directory
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.last: dict[str, int] = {}  # conv -> last seq pushed to local sockets
        self.held: dict[str, list[Held]] = {}  # conv -> pushes waiting for a gap to fill
        self.gaps_filled = 0
        self.resyncs = 0
        self._resyncing = False
        self._again = False
        self._touched: set[str] = set()
        # (user, conv) -> [version, follow checks pending]: only while a check is pending
        self._follow_versions: dict[tuple[str, str], list[int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.presence: Presence | None = None  # envelopes for p:<user> keys go there
        hub.on_topic = self._topic
        hub.on_user = self._user
        bus.attach(self)

    # -- what ops call -------------------------------------------------------

    def publish(self, conv: str, kind: str, d: dict[str, Any]) -> None:
        body = push_body(kind, d)
        seq: int = d.get("seq", 0) if kind == "msg" else 0
        self._push(conv, seq, body, {"push": kind, "d": d})
        if self.bus.shared:
            self.bus.publish("c:" + conv, b"".join((b"\x00", seq.to_bytes(8, "big"), body)))

    def changed(self, conv: str, update: Callable[[ConvState], None] | None = None) -> None:
        self.directory.changed(conv, update)
        if self.bus.shared:
            self.bus.publish("c:" + conv, b"\x01")

    def user_follow(self, user: str, conv: str, on: bool = True) -> None:
        self.hub.user_follow(user, conv, on)
        if self._resyncing:
            self._touched.add(user)
        if self.bus.shared:
            self.bus.publish("u:" + user, (b"\x02" if on else b"\x03") + conv.encode())

    def user_push(self, user: str, kind: str, d: dict[str, Any]) -> None:
        body = push_body(kind, d)
        conns = self.hub.user_conns(user)
        if conns is not None:
            self.hub.deliver(conns, body, {"push": kind, "d": d})
        if self.bus.shared:
            self.bus.publish("u:" + user, b"\x00" + body)

    # -- local delivery through the order gate --------------------------------

    def _push(self, conv: str, seq: int, body: bytes, obj: dict[str, Any] | None) -> None:
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
                    self._spawn(self._fill(conv, last, held))
                    return
            self.last[conv] = seq
        self.hub.deliver(topic, body, obj)

    async def _fill(self, conv: str, last: int, held: list[Held]) -> None:
        """Push the messages between ``last`` and the held ones, from the store."""
        try:
            while held and self.held.get(conv) is held:
                first = held[0][0]
                if first > last + 1:
                    try:
                        missing = await between(self.store, conv, last, first)
                    except StoreUnavailable as exc:
                        log.warning("fan-out: cannot fill %s seq %d..%d: %s", conv, last + 1, first - 1, exc)
                        missing = []
                    if self.held.get(conv) is not held:
                        return  # the topic went away or the bus reset meanwhile
                    topic = self.hub.topics.get(conv)
                    for msg in missing:
                        if topic is not None and msg["seq"] > last:
                            self.hub.deliver(topic, push_body("msg", msg), {"push": "msg", "d": msg})
                            last = msg["seq"]
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

    # -- bus -------------------------------------------------------------------

    def bus_message(self, key: str, payload: bytes) -> None:
        op = payload[0]
        if key[0] == "c":
            conv = key[2:]
            if op == OP_PUSH:
                if conv in self.hub.topics:
                    self._push(conv, int.from_bytes(payload[1:9], "big"), payload[9:], None)
            elif op == OP_CHANGED:
                self.directory.changed(conv, None)
        elif key[0] == "p":
            if self.presence is not None:
                self.presence.bus_message(key[2:], payload)
        elif key[0] == "u":
            user = key[2:]
            if user not in self.hub.users:
                return
            if op == OP_PUSH:
                conns = self.hub.user_conns(user)
                if conns is not None:
                    self.hub.deliver(conns, payload[1:], None)
            elif op in (OP_FOLLOW, OP_UNFOLLOW):
                conv = payload[1:].decode()
                if self._resyncing:
                    self._touched.add(user)
                # a newer follow/unfollow of the same pair cancels a pending check
                entry = self._follow_versions.get((user, conv))
                if op == OP_FOLLOW:
                    if entry is None:
                        entry = self._follow_versions[(user, conv)] = [0, 0]
                    entry[0] += 1
                    entry[1] += 1
                    self._spawn(self._remote_follow(user, conv, entry[0]))
                else:
                    if entry is not None:
                        entry[0] += 1
                    self.hub.user_follow(user, conv, False)

    def bus_reset(self, reconnected: bool = True) -> None:
        """Envelopes may have been lost (the bus reconnected, or another node lost
        some). Forget cached conversation state and gate positions, re-read every
        local user's memberships, and tell every socket to catch up (push
        ``resync``). Presence: re-read watched users' states; after a reconnect
        also put every local device again (Redis may have restarted empty)."""
        self.directory.clear()
        self.last.clear()
        self.held.clear()
        if self.presence is not None:
            self._spawn(self.presence.republish(reput=reconnected))
        if self.hub.users:
            if self._resyncing:
                self._again = True  # the running resync starts over when done
            else:
                self._spawn(self._resync())

    async def _resync(self) -> None:
        self._resyncing = True
        try:
            while True:
                self._again = False
                self.resyncs += 1
                await self._resync_once()
                if not self._again:
                    break
        finally:
            self._resyncing = False
            self._touched.clear()

    async def _resync_once(self) -> None:
        for user in list(self.hub.users):
            convs: set[str] | None = None
            for _ in range(3):
                self._touched.discard(user)
                try:
                    convs = set(await user_convs(self.store, user))
                except StoreUnavailable:
                    convs = None
                    break
                if user not in self._touched:
                    break
            if convs is None:
                continue  # could not read them: keep what the sockets follow (sync still repairs)
            for conn in tuple(self.hub.users.get(user, ())):
                if conn.identity is None:
                    continue  # still authenticating: it reads memberships itself
                for conv in convs - conn.convs:
                    self.hub.follow(conn, conv)
                for conv in conn.convs - convs:
                    self.hub.unfollow(conn, conv)
        frames = [encode_push(slot, "resync", {"reason": "bus"}) for slot in range(len(CODEC_SLOTS))]
        for conn in self.hub.connections():
            if conn.identity is not None:
                conn.write(frames[conn.slot])

    async def _remote_follow(self, user: str, conv: str, version: int) -> None:
        """A join or DM opened on another node: follow after checking the store
        (follow/unfollow envelopes from different nodes can arrive out of order;
        the store says which came last)."""
        row = None
        try:
            row = await self.store.fetchone("SELECT 1 FROM members WHERE conv = ? AND user = ?", (conv, user))
        except StoreUnavailable:
            pass
        finally:
            entry = self._follow_versions[(user, conv)]
            entry[1] -= 1
            if not entry[1]:
                del self._follow_versions[(user, conv)]
        if row is not None and entry[0] == version:
            self.hub.user_follow(user, conv, True)

    # -- interest ------------------------------------------------------------

    def _topic(self, conv: str, added: bool) -> None:
        self.bus.interest("c:" + conv, 1 if added else -1)
        if not added:
            self.last.pop(conv, None)
            self.held.pop(conv, None)
        if self.bus.shared:
            # state cached without a local follower got no invalidations: reload it
            self.directory.changed(conv, None)

    def _user(self, user: str, added: bool) -> None:
        self.bus.interest("u:" + user, 1 if added else -1)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
