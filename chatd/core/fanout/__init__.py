"""Fan-out across processes: the one place ops publish through.

Ops call ``publish`` (a push to a conversation), ``user_follow`` (a user's
sockets start/stop following a conversation), ``changed`` (a conversation's
cached state changed) and ``user_push`` (a push to one user's sockets). Each is
applied to this node's hub and directory at once and sent over the bus so every
other node applies it too (docs/design.md, "Fan-out across processes").

Pushes of a conversation reach local sockets through the order gate
(``gate.py``); after any loss on the bus, ``resync.py`` brings this node's
caches and sockets back in step with the store.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ...bus import Bus
from ...kinds import ConvState, Kinds
from ...metrics import Metrics
from ...store import StoreUnavailable
from ...store.base import Members, Messages
from ..directory import Directory
from ..hub import Hub, Sink, Topic
from . import envelope as env
from .gate import OrderGate
from .resync import Resync


class PresenceListener(Protocol):
    def bus_message(self, user: str, payload: bytes) -> None: ...

    async def republish(self, reput: bool = True) -> None: ...


class Fanout:
    def __init__(
        self,
        hub: Hub,
        directory: Directory,
        bus: Bus,
        messages: Messages,
        members: Members,
        kinds: Kinds,
        metrics: Metrics,
    ) -> None:
        self.hub = hub
        self.directory = directory
        self.bus = bus
        self.members = members
        self.metrics = metrics
        self._tasks: set[asyncio.Task[Any]] = set()
        self.gate = OrderGate(hub, messages.between, self._spawn)
        self.resync = Resync(hub, directory, self.gate, members, kinds, self._spawn)
        # (user, conv) -> [version, follow checks pending]: only while a check is pending
        self._follow_versions: dict[tuple[str, str], list[int]] = {}
        self.presence: PresenceListener | None = None  # envelopes for p:<user> keys go there
        # live sessions' state envelopes (chatd/core/live.py), and who reloads after a bus loss
        self.state_listener: Callable[[str, bytes], None] | None = None
        self.reset_listeners: list[Callable[[], None]] = []
        hub.on_topic = self._topic
        hub.on_user = self._user
        bus.attach(self)

    @property
    def gaps_filled(self) -> int:
        return self.gate.gaps_filled

    # -- what ops call -------------------------------------------------------

    def publish(self, conv: str, kind: str, d: dict[str, Any]) -> None:
        body = self.hub.body(kind, d)
        seq: int = d.get("seq", 0) if kind == "msg" else 0
        self.gate.push(conv, seq, body, {"push": kind, "d": d})
        if self.bus.shared:
            self.bus.publish(env.CONV + conv, env.conv_push(seq, body))

    def publish_except(self, conv: str, kind: str, d: dict[str, Any], user: str) -> None:
        """An unordered push to ``conv``'s followers on every process but ``user``'s
        sockets (a service group's inbox row: its staff's, not its owner's)."""
        body = self.hub.body(kind, d)
        self._deliver_except(conv, user, body, {"push": kind, "d": d})
        if self.bus.shared:
            self.bus.publish(env.CONV + conv, env.conv_push_except(user, body))

    def _deliver_except(self, conv: str, user: str, body: bytes, obj: dict[str, Any] | None) -> None:
        topic = self.hub.topics.get(conv)
        if topic is None:
            return
        skip = self.hub.users.get(user)
        if skip:
            topic = (topic[0].difference(skip), topic[1].difference(skip))
        if topic[0] or topic[1]:
            self.hub.deliver(topic, body, obj)

    def publish_state(self, conv: str, payload: bytes) -> None:
        """A state envelope for ``conv``'s channel: every other process with
        followers of ``conv`` hands it to its state listener."""
        if self.bus.shared:
            self.bus.publish(env.CONV + conv, env.state(payload))

    def changed(self, conv: str, update: Callable[[ConvState], None] | None = None) -> None:
        self.directory.changed(conv, update)
        if self.bus.shared:
            self.bus.publish(env.CONV + conv, env.conv_changed())

    def user_follow(self, user: str, conv: str, on: bool = True, joined: int = 0) -> None:
        """``joined``: the seq of the user's join event (0 for a DM)."""
        self._follow(user, conv, on, joined)
        self.resync.touched(user)
        if self.bus.shared:
            self.bus.publish(env.USER + user, env.follow(conv, on))

    def _follow(self, user: str, conv: str, on: bool, joined: int) -> None:
        new = on and self.bus.shared and conv not in self.hub.topics
        self.hub.user_follow(user, conv, on)
        if new and conv in self.hub.topics:
            # other nodes' messages since the join may cross the bus before this
            # node's subscription is live: the gate reads them from the store
            self.gate.start(conv, max(joined - 1, 0), functools.partial(self.conv_ready, conv))

    def user_push(self, user: str, kind: str, d: dict[str, Any]) -> None:
        body = self.hub.body(kind, d)
        sinks = self.hub.user_sinks(user)
        if sinks is not None:
            self.hub.deliver(sinks, body, {"push": kind, "d": d})
        if self.bus.shared:
            self.bus.publish(env.USER + user, env.user_push(body))

    def sign_out(self, user: str, before: int = 0, kicked: int = 0) -> None:
        """Close, on every process, with 4104, ``user``'s sockets whose token was
        issued before ``before`` (unix s) or whose auth began before ``kicked``
        (ms). Stored first (``admin.*``): a process that misses this envelope
        applies the stored times when it resyncs after the loss."""
        self.hub.sign_out(user, before, kicked)
        if self.bus.shared:
            self.bus.publish(env.USER + user, env.sign_out(before, kicked))

    def following(self, sink: Sink | None, conv: str) -> bool:
        """Whether ``sink`` (a caller's socket) already follows ``conv``."""
        return sink is not None and conv in self.hub.follows(sink)

    async def ready(self, user: str, convs: set[str] | None = None) -> None:
        """Returns once envelopes for the user and these conversations published
        from now on reach this node (one wait per bus channel)."""
        bus = self.bus
        keys = [env.USER + user] if convs is None else [env.USER + user, *(env.CONV + c for c in convs)]
        await asyncio.gather(*(bus.ready(k) for k in {bus.channel(k): k for k in keys}.values()))

    async def conv_ready(self, conv: str) -> None:
        await self.bus.ready(env.CONV + conv)

    # -- bus -------------------------------------------------------------------

    def bus_message(self, key: str, payload: bytes) -> None:
        op = payload[0]
        family = key[:2]
        if family == env.CONV:
            conv = key[2:]
            if op == env.OP_PUSH:
                if conv in self.hub.topics:
                    self.gate.push(conv, env.push_seq(payload), payload[9:], None)
            elif op == env.OP_PUSH_EXCEPT:
                if conv in self.hub.topics:
                    user, body = env.push_except(payload)
                    self._deliver_except(conv, user, body, None)
            elif op == env.OP_CHANGED:
                self.directory.changed(conv, None)
            elif op == env.OP_STATE:
                if self.state_listener is not None and conv in self.hub.topics:
                    self.state_listener(conv, payload[1:])
        elif family == env.PRESENCE:
            if self.presence is not None:
                self.presence.bus_message(key[2:], payload)
        elif family == env.USER:
            user = key[2:]
            if user not in self.hub.users:
                return
            if op == env.OP_PUSH:
                sinks = self.hub.user_sinks(user)
                if sinks is not None:
                    self.hub.deliver(sinks, payload[1:], None)
            elif op == env.OP_SIGN_OUT:
                self.hub.sign_out(user, *env.sign_out_times(payload))
            elif op in (env.OP_FOLLOW, env.OP_UNFOLLOW):
                conv = payload[1:].decode()
                self.resync.touched(user)
                # a newer follow/unfollow of the same pair cancels a pending check
                entry = self._follow_versions.get((user, conv))
                if op == env.OP_FOLLOW:
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
        self.gate.clear()
        for listener in self.reset_listeners:
            listener()
        if self.presence is not None:
            self._spawn(self.presence.republish(reput=reconnected))
        self.resync.start()

    async def _remote_follow(self, user: str, conv: str, version: int) -> None:
        """A join or DM opened on another node: follow after checking the store
        (follow/unfollow envelopes from different nodes can arrive out of order;
        the store says which came last). Where the conversation already has local
        followers, the joiner is given what they were pushed since the join first
        (``OrderGate.join``): the envelope of the join event may have crossed the bus
        before this follow did."""
        try:
            try:
                joined = await self.members.joined_seq(conv, user)
            except StoreUnavailable:
                return
            if joined is None or self._follow_versions[(user, conv)][0] != version:
                return
            if self.bus.shared and conv in self.hub.topics and self.gate.settled(conv):

                def add() -> Topic | None:
                    if self._follow_versions[(user, conv)][0] != version:
                        return None  # an unfollow came meanwhile
                    self.hub.user_follow(user, conv, True)
                    return self.hub.user_sinks(user)

                await self.gate.join(conv, max(joined - 1, 0), add)
            else:
                self._follow(user, conv, True, joined)
        finally:
            entry = self._follow_versions[(user, conv)]
            entry[1] -= 1
            if not entry[1]:
                del self._follow_versions[(user, conv)]

    # -- interest ------------------------------------------------------------

    def _topic(self, conv: str, added: bool) -> None:
        self.bus.interest(env.CONV + conv, 1 if added else -1)
        if not added:
            self.gate.forget(conv)
        if self.bus.shared:
            # state cached without a local follower got no invalidations: reload it
            self.directory.changed(conv, None)

    def _user(self, user: str, added: bool) -> None:
        self.bus.interest(env.USER + user, 1 if added else -1)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
