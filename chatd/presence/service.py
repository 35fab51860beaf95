"""Presence on one node: this node's devices (one per authenticated socket),
local subscribers per watched user, and the last state pushed to them.

A socket is seen only as a :class:`~chatd.core.hub.Sink`. Changes from this
node go to the backend (which orders them with a version per user) and over
the bus to the other nodes; a node interested in a user's presence listens on
that user's ``p:`` key and pushes a ``presence`` frame, encoded once per codec,
to its local subscribers only when the state changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

import msgpack
from chatd_protocol import Err, RequestError

from ..bus import Bus
from ..clock import Clock
from ..core.hub import Sink
from .base import PresenceBackend
from .rules import LEASE_MS, ONLINE, Change, Device, State

log = logging.getLogger("chatd.presence")

KEY = "p:"  # the bus key family of presence
Encode = Callable[[int, str, dict[str, Any]], bytes]  # (codec slot, push type, d) -> frame


class Presence:
    def __init__(
        self,
        backend: PresenceBackend,
        bus: Bus,
        clock: Clock,
        encode: Encode,
        max_subs: int = 256,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self.backend = backend
        self.lease_ms = lease_ms
        self.bus = bus
        self.clock = clock
        self.encode = encode
        self.max_subs = max_subs
        self.subs: dict[str, set[Sink]] = {}  # watched user -> local subscribers
        self.known: dict[str, tuple[int, State]] = {}  # watched user -> last state pushed
        self.devices: dict[Sink, tuple[str, Device]] = {}  # socket -> (user, its device)
        # users each socket watches; only sockets that subscribed have an entry
        self.watching: dict[Sink, set[str]] = {}
        self._chains: dict[Sink, asyncio.Task[None]] = {}
        self._ids: dict[Sink, str] = {}  # socket -> its device id (unique in this process)
        self._next_id = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="chatd-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        chains = list(self._chains.values())
        if chains:  # one second for all of them (each in turn was a second per socket with Redis away)
            await asyncio.wait(chains, timeout=1.0)
        try:  # a clean stop is no death: nobody reaps this node (nor resyncs for it)
            for user, version, state in await asyncio.wait_for(self.backend.leave(self.clock.wall_ms()), 2.0):
                self.changed(user, version, state)
        except Exception as exc:
            log.warning("presence: could not leave cleanly (%r); the lease will expire", exc)
        with contextlib.suppress(Exception):
            await self.backend.close()

    # -- this node's devices ------------------------------------------------

    def _device_id(self, sink: Sink) -> str:
        return self._ids[sink]

    def _run(self, sink: Sink, make: Callable[[], Any], retry: Callable[[], bool]) -> None:
        """Backend calls for one socket run in order (an open cannot overtake a
        close). A failed call (Redis away) is retried with backoff while
        ``retry()`` says it still matters."""
        prev = self._chains.get(sink)

        async def step() -> None:
            if prev is not None:
                with contextlib.suppress(Exception):
                    await prev
            delay = 0.2
            try:
                while True:
                    try:
                        user, version, state = await make()
                        self.changed(user, version, state)
                        return
                    except Exception as exc:  # presence is ephemeral: never break chat over it
                        self.errors += 1
                        log.debug("presence update failed: %s", exc)
                    if not retry():
                        return
                    await self.clock.sleep(delay)
                    delay = min(delay * 2, 5.0)
            finally:
                if self._chains.get(sink) is task:
                    del self._chains[sink]

        task = asyncio.get_running_loop().create_task(step())
        self._chains[sink] = task

    def opened(self, sink: Sink, user: str) -> None:
        dev = Device(self.bus.node, ONLINE, False, self.clock.wall_ms())
        self.devices[sink] = (user, dev)
        # a counter, not id(sink): a freed socket's address comes back at once, and
        # prune() would take a stale device of another socket for a live one
        self._ids[sink] = f"{next(self._next_id):x}"
        self._put(sink, user, dev)

    def _put(self, sink: Sink, user: str, dev: Device) -> None:
        device = self._device_id(sink)

        async def make() -> Change:
            version, state = await self.backend.put(user, device, dev, self.clock.wall_ms())
            return user, version, state

        # retried while this is still the socket's latest state
        self._run(sink, make, lambda: self.devices.get(sink, (None, None))[1] is dev)

    def closed(self, sink: Sink) -> None:
        for user in list(self.watching.pop(sink, ())):
            self._unwatch(sink, user)
        entry = self.devices.pop(sink, None)
        if entry is None:
            return
        user, device = entry[0], self._ids.pop(sink)

        async def make() -> Change:
            version, state = await self.backend.drop(user, device, self.clock.wall_ms())
            return user, version, state

        tries = [0]

        def retry() -> bool:  # a drop that never lands is cleaned up by prune() or the lease
            tries[0] += 1
            return tries[0] < 20

        self._run(sink, make, retry)

    def set(self, sink: Sink, status: str | None, duty: bool | None) -> Device:
        user, dev = self.devices[sink]
        new = Device(
            dev.node,
            status if status is not None else dev.status,
            duty if duty is not None else dev.duty,
            self.clock.wall_ms() if status is not None and status != dev.status else dev.since,
        )
        if new != dev:
            self.devices[sink] = (user, new)
            self._put(sink, user, new)
        return new

    async def republish(self, reput: bool = True) -> None:
        """Presence pushes may have been lost: re-read the state of every watched
        user. ``reput`` (the bus came back; Redis maybe restarted empty): first
        renew the lease and put every local device again. Versions restart with
        an empty Redis, so what was pushed before is forgotten, not compared with."""
        self.known.clear()
        if reput:
            with contextlib.suppress(Exception):
                await self.backend.heartbeat(self.clock.wall_ms())
            await self._reput()
        watched = list(self.subs)
        for i in range(0, len(watched), 500):
            try:
                states = await self.backend.get_many(watched[i : i + 500], self.clock.wall_ms())
            except Exception:
                return
            for user, (version, state) in states.items():
                self.deliver(user, version, state)

    async def _reput(self) -> None:
        """Put every local device again and remove this node's devices that no
        socket owns any more (a drop that failed, a reaped node coming back)."""
        for sink, (user, dev) in list(self.devices.items()):
            self._put(sink, user, dev)
        try:
            live = {self._device_id(s) for s in self.devices}
            for user, version, state in await self.backend.prune(live, self.clock.wall_ms()):
                self.changed(user, version, state)
        except Exception as exc:
            self.errors += 1
            log.debug("presence prune failed: %s", exc)

    # -- changes --------------------------------------------------------------

    def changed(self, user: str, version: int, state: State) -> None:
        self.deliver(user, version, state)
        if self.bus.shared:
            self.bus.publish(KEY + user, msgpack.packb((version, state.status, state.last_seen, state.on_duty)))

    def bus_message(self, user: str, payload: bytes) -> None:
        version, status, last_seen, duty = msgpack.unpackb(payload)
        self.deliver(user, version, State(status, last_seen, duty))

    def deliver(self, user: str, version: int, state: State) -> None:
        sinks = self.subs.get(user)
        if not sinks:
            return
        prev = self.known.get(user)
        if prev is not None and prev[0] >= version:
            return  # older than what we pushed
        self.known[user] = (version, state)
        if prev is not None and prev[1] == state:
            return
        frames: list[bytes | None] = [None, None]
        for sink in tuple(sinks):
            frame = frames[sink.slot]
            if frame is None:
                frame = frames[sink.slot] = self.encode(sink.slot, "presence", state.wire(user))
            sink.write(frame)

    # -- subscriptions ----------------------------------------------------------

    async def watch(self, sink: Sink, users: list[str]) -> list[dict[str, Any]]:
        watching = self.watching.get(sink)
        if watching is None:
            watching = self.watching[sink] = set()
        new = [u for u in dict.fromkeys(users) if u not in watching]
        if len(watching) + len(new) > self.max_subs:
            raise RequestError(Err.LIMIT, f"at most {self.max_subs} presence subscriptions per connection")
        for user in new:
            watching.add(user)
            sinks = self.subs.get(user)
            if sinks is None:
                sinks = self.subs[user] = set()
                self.bus.interest(KEY + user, 1)
            sinks.add(sink)
        await asyncio.gather(*(self.bus.ready(KEY + u) for u in {self.bus.channel(KEY + u): u for u in new}.values()))
        states = await self.backend.get_many(list(dict.fromkeys(users)), self.clock.wall_ms())
        out = []
        for user, (version, state) in states.items():
            prev = self.known.get(user)
            if user in self.subs:
                if prev is None or prev[0] < version:
                    self.known[user] = (version, state)
                else:
                    state = prev[1]  # a push already told this node something newer
            out.append(state.wire(user))
        return out

    def unwatch(self, sink: Sink, users: list[str]) -> None:
        watching = self.watching.get(sink)
        for user in users:
            if watching and user in watching:
                self._unwatch(sink, user)

    def _unwatch(self, sink: Sink, user: str) -> None:
        watching = self.watching.get(sink)
        if watching is not None:
            watching.discard(user)
            if not watching:
                del self.watching[sink]
        sinks = self.subs.get(user)
        if sinks is None:
            return
        sinks.discard(sink)
        if not sinks:
            del self.subs[user]
            self.known.pop(user, None)
            self.bus.interest(KEY + user, -1)

    # -- lease ----------------------------------------------------------------

    async def _beat(self) -> None:
        """Renew this node's lease every third of it, and nothing else: the
        upkeep (putting the devices again, reaping dead nodes) runs beside it.
        Measured at 10,000 sockets on 3 processes: with the upkeep in this loop,
        putting ~5,000 devices again after a Redis restart held the next
        heartbeat past the lease, the other nodes reaped a live node and told
        every node to resync, which repeated (bench/results/2026-12-02-chaos.md)."""
        interval = self.lease_ms / 3000
        upkeep: asyncio.Task[None] | None = None
        lost = False  # the lease was found gone: the devices must be put again
        try:
            while True:
                try:
                    now = self.clock.wall_ms()
                    if await self.backend.heartbeat(now) and self.devices:
                        lost = True
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.errors += 1
                    log.debug("presence heartbeat failed: %s", exc)
                else:
                    if upkeep is None or upkeep.done():
                        upkeep = asyncio.get_running_loop().create_task(self._upkeep(now, lost))
                        lost = False
                await self.clock.sleep(interval)
        finally:
            if upkeep is not None:
                upkeep.cancel()
                with contextlib.suppress(BaseException):
                    await upkeep

    async def _upkeep(self, now: int, lost: bool) -> None:
        try:
            if lost:  # reaped while cut off, or Redis restarted
                log.warning("presence: this node's lease was gone; putting its devices again")
                await self._reput()
            for user, version, state in await self.backend.reap(now):
                self.changed(user, version, state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors += 1
            log.debug("presence upkeep failed: %s", exc)
