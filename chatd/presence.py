"""Presence (DESIGN.md §5): online / away / offline and last seen per user,
aggregated over every device on every node; staff on-duty state; subscriptions
to specific users with pushes on change.

The rules are pure functions of ``now`` (``aggregate``, ``node_alive``,
``dead_nodes``), tested with a fake clock. Where the devices are kept is a
backend: in memory (one process) or in Redis (several):

- ``<prefix>:pd:<user>``  hash, one field per device ``<node>/<device>`` ->
  ``status|duty|since``
- ``<prefix>:pls:<user>`` last seen (ms) of the user's last device to go
- ``<prefix>:pv:<user>``  version: INCR in the same MULTI as every change, so
  every node orders two changes of one user the same way
- ``<prefix>:nodes``      sorted set node -> last heartbeat (ms): the lease
- ``<prefix>:nu:<node>``  users with a device on that node

Every node renews its lease every ``lease/3``. A device counts only while its
node's lease is fresh, and any node reaps a node whose lease is older than
``lease`` (default 15 s): it removes that node's devices and pushes the new
state. A node killed with ``kill -9`` takes its users offline within
``lease + lease/3`` (20 s) with no manual clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from .hub import encode_push

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .bus import Bus
    from .conn import Conn

log = logging.getLogger("chatd.presence")

ONLINE, AWAY, OFFLINE = "online", "away", "offline"
LEASE_MS = 15_000


# -- the rules: pure functions of now ------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    node: str
    status: str  # ONLINE or AWAY
    duty: bool  # staff on duty
    since: int  # ms: when this device last changed status

    def pack(self) -> str:
        return f"{self.status}|{int(self.duty)}|{self.since}"

    @classmethod
    def unpack(cls, node: str, value: str) -> Device:
        status, duty, since = value.split("|")
        return cls(node, status, duty == "1", int(since))


@dataclass(frozen=True, slots=True)
class State:
    status: str
    last_seen: int | None  # ms; None while online
    on_duty: bool

    def wire(self, user: str) -> dict[str, Any]:
        out: dict[str, Any] = {"user": user, "status": self.status, "on_duty": self.on_duty}
        if self.last_seen is not None:
            out["last_seen"] = self.last_seen
        return out


def node_alive(heartbeat_ms: float | None, now: int, lease_ms: int = LEASE_MS) -> bool:
    return heartbeat_ms is not None and now - heartbeat_ms <= lease_ms


def dead_nodes(heartbeats: dict[str, float], now: int, lease_ms: int = LEASE_MS) -> list[str]:
    return [node for node, beat in heartbeats.items() if not node_alive(beat, now, lease_ms)]


def aggregate(devices: Iterable[Device], alive: Callable[[str], bool], last_seen: int | None) -> State:
    """A user is online if any live device is; away if every live device is
    away (last seen: when the last of them went away); offline with no live
    device (last seen: when the last one went). On duty if any live device is."""
    live = [d for d in devices if alive(d.node)]
    if not live:
        return State(OFFLINE, last_seen, False)
    duty = any(d.duty for d in live)
    if any(d.status == ONLINE for d in live):
        return State(ONLINE, None, duty)
    return State(AWAY, max(d.since for d in live), duty)


# -- backends ------------------------------------------------------------------

Change = tuple[str, int, State]  # user, version, state


class PresenceBackend(Protocol):
    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]: ...

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]: ...

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]: ...

    async def heartbeat(self, now: int) -> bool:
        """Renew this node's lease; True if the node was unknown (first beat, reaped
        while cut off, or Redis restarted empty): its devices must be put again."""
        ...

    async def reap(self, now: int) -> list[Change]: ...

    async def leave(self, now: int) -> list[Change]:
        """A clean stop: remove this node (and any device of it still there) now,
        so that no other node reaps it as dead."""
        ...

    async def prune(self, live: set[str], now: int) -> list[Change]:
        """Remove this node's devices that are not in ``live`` (device ids)."""
        ...


class MemoryPresence:
    """One process: devices in a dict; this node is always alive."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.devices: dict[str, dict[str, Device]] = {}
        self.last_seen: dict[str, int] = {}
        self.versions: dict[str, int] = {}

    def _state(self, user: str) -> tuple[int, State]:
        devs = self.devices.get(user, {})
        return self.versions.get(user, 0), aggregate(devs.values(), lambda n: True, self.last_seen.get(user))

    def _bump(self, user: str) -> None:
        self.versions[user] = self.versions.get(user, 0) + 1

    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]:
        self.devices.setdefault(user, {})[device] = dev
        self._bump(user)
        return self._state(user)

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]:
        devs = self.devices.get(user)
        if devs is not None:
            devs.pop(device, None)
            if not devs:
                del self.devices[user]
        self.last_seen[user] = now
        if len(self.last_seen) > 200_000:  # bounded: forget the longest-gone users
            for old in list(self.last_seen)[:50_000]:
                if old not in self.devices:
                    self.last_seen.pop(old, None)
                    self.versions.pop(old, None)
        self._bump(user)
        return self._state(user)

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]:
        return {u: self._state(u) for u in users}

    async def heartbeat(self, now: int) -> bool:
        return False

    async def reap(self, now: int) -> list[Change]:
        return []

    async def leave(self, now: int) -> list[Change]:
        return []

    async def prune(self, live: set[str], now: int) -> list[Change]:
        return []


class RedisPresence:
    def __init__(self, client: aioredis.Redis, node: str, prefix: str = "chatd", lease_ms: int = LEASE_MS) -> None:
        self.r = client
        self.node = node
        self.p = prefix
        self.lease_ms = lease_ms
        # called with a node reaped here: it may have committed messages it never
        # published, so the app has every node resync (bus.reset_all)
        self.on_node_dead: Callable[[str], None] | None = None

    def _k(self, kind: str, name: str) -> str:
        return f"{self.p}:{kind}:{name}"

    def _state(self, raw: dict[bytes, bytes], last: bytes | None, beats: list[Any], now: int) -> State:
        heartbeats = {n.decode(): float(s) for n, s in beats}
        devices = []
        for field, value in raw.items():
            node = field.decode().split("/", 1)[0]
            with contextlib.suppress(ValueError):
                devices.append(Device.unpack(node, value.decode()))
        return aggregate(
            devices,
            lambda n: node_alive(heartbeats.get(n), now, self.lease_ms),
            int(last) if last is not None else None,
        )

    async def _change(self, user: str, now: int, write: Callable[[Any], None]) -> tuple[int, State]:
        pipe = self.r.pipeline(transaction=True)
        write(pipe)
        pipe.incr(self._k("pv", user))
        pipe.hgetall(self._k("pd", user))
        pipe.get(self._k("pls", user))
        pipe.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
        res = await pipe.execute()
        version, raw, last, beats = res[-4:]
        return int(version), self._state(raw, last, beats, now)

    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]:
        def write(pipe: Any) -> None:
            pipe.hset(self._k("pd", user), f"{self.node}/{device}", dev.pack())
            pipe.sadd(self._k("nu", self.node), user)

        return await self._change(user, now, write)

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]:
        def write(pipe: Any) -> None:
            pipe.hdel(self._k("pd", user), f"{self.node}/{device}")
            pipe.set(self._k("pls", user), now, ex=30 * 86400)

        return await self._change(user, now, write)

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]:
        pipe = self.r.pipeline(transaction=False)
        for u in users:
            pipe.get(self._k("pv", u))
            pipe.hgetall(self._k("pd", u))
            pipe.get(self._k("pls", u))
        pipe.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
        res = await pipe.execute()
        beats = res[-1]
        out = {}
        for i, u in enumerate(users):
            version, raw, last = res[3 * i : 3 * i + 3]
            out[u] = (int(version or 0), self._state(raw, last, beats, now))
        return out

    async def close(self) -> None:
        await self.r.aclose()
        await self.r.connection_pool.disconnect()

    async def heartbeat(self, now: int) -> bool:
        return bool(await self.r.zadd(self._k("nodes", "all"), {self.node: now}))

    async def prune(self, live: set[str], now: int) -> list[Change]:
        members: Any = await self.r.smembers(self._k("nu", self.node))
        changes: list[Change] = []
        mine = self.node + "/"
        for user in (_s(u) for u in members):
            raw: Any = await self.r.hgetall(self._k("pd", user))
            stale = [f for f in raw if _s(f).startswith(mine) and _s(f)[len(mine) :] not in live]
            if stale:
                version, state = await self._change(user, now, self._reaper(user, stale, now))
                changes.append((user, version, state))
        return changes

    async def reap(self, now: int) -> list[Change]:
        beats: list[Any] = await self.r.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
        heartbeats = {_s(n): float(s) for n, s in beats}
        changes: list[Change] = []
        for dead in dead_nodes(heartbeats, now, self.lease_ms):
            # one reaper per dead node
            if not await self.r.set(self._k("reap", dead), self.node, nx=True, ex=10):
                continue
            found = await self._remove_node(dead, int(heartbeats[dead]), now)
            changes += found
            log.warning("presence: node %s missed its lease; %d users' devices there removed", dead, len(found))
            if self.on_node_dead is not None:
                try:
                    self.on_node_dead(dead)
                except Exception:
                    log.exception("presence: node-dead handler failed")
        return changes

    async def leave(self, now: int) -> list[Change]:
        return await self._remove_node(self.node, now, now)

    async def _remove_node(self, node: str, gone_at: int, now: int) -> list[Change]:
        """Remove ``node``'s devices (users go offline where it held their last
        one) and the node itself."""
        members: Any = await self.r.smembers(self._k("nu", node))
        changes: list[Change] = []
        for user in (_s(u) for u in members):
            raw: Any = await self.r.hgetall(self._k("pd", user))
            fields = [f for f in raw if _s(f).startswith(node + "/")]
            version, state = await self._change(user, now, self._reaper(user, fields, gone_at))
            changes.append((user, version, state))
        await self.r.delete(self._k("nu", node))
        await self.r.zrem(self._k("nodes", "all"), node)
        return changes

    def _reaper(self, user: str, fields: list[Any], gone_at: int) -> Callable[[Any], None]:
        def write(pipe: Any) -> None:
            if fields:
                pipe.hdel(self._k("pd", user), *fields)
            pipe.set(self._k("pls", user), gone_at, ex=30 * 86400)

        return write


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- the service ---------------------------------------------------------------


class Presence:
    """Per node: this node's devices (one per authenticated socket), local
    subscribers per watched user, and the last state pushed to them."""

    def __init__(
        self,
        backend: PresenceBackend,
        bus: Bus,
        clock: Callable[[], int],
        max_subs: int = 256,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self.backend = backend
        self.lease_ms = lease_ms
        self.bus = bus
        self.clock = clock
        self.max_subs = max_subs
        self.subs: dict[str, set[Conn]] = {}  # watched user -> local subscribers
        self.known: dict[str, tuple[int, State]] = {}  # watched user -> last state pushed
        self.devices: dict[Conn, Device] = {}
        self._chains: dict[Conn, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="chatd-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._chains.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        try:  # a clean stop is no death: nobody reaps this node (nor resyncs for it)
            for user, version, state in await asyncio.wait_for(self.backend.leave(self.clock()), 2.0):
                self.changed(user, version, state)
        except Exception as exc:
            log.warning("presence: could not leave cleanly (%r); the lease will expire", exc)
        close = getattr(self.backend, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    # -- this node's devices ------------------------------------------------

    def _device_id(self, conn: Conn) -> str:
        return f"{id(conn):x}"

    def _run(self, conn: Conn, make: Callable[[], Any], retry: Callable[[], bool]) -> None:
        """Backend calls for one socket run in order (an open cannot overtake a
        close). A failed call (Redis away) is retried with backoff while
        ``retry()`` says it still matters."""
        prev = self._chains.get(conn)

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
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            finally:
                if self._chains.get(conn) is task:
                    del self._chains[conn]

        task = asyncio.get_running_loop().create_task(step())
        self._chains[conn] = task

    def opened(self, conn: Conn) -> None:
        dev = Device(self.bus.node, ONLINE, False, self.clock())
        self.devices[conn] = dev
        self._put(conn, dev)

    def _put(self, conn: Conn, dev: Device) -> None:
        user, device = conn.user, self._device_id(conn)

        async def make() -> Change:
            version, state = await self.backend.put(user, device, dev, self.clock())
            return user, version, state

        # retried while this is still the socket's latest state
        self._run(conn, make, lambda: self.devices.get(conn) is dev)

    def closed(self, conn: Conn) -> None:
        for user in list(getattr(conn, "watching", ()) or ()):
            self._unwatch(conn, user)
        if self.devices.pop(conn, None) is None:
            return
        user, device = conn.user, self._device_id(conn)

        async def make() -> Change:
            version, state = await self.backend.drop(user, device, self.clock())
            return user, version, state

        tries = [0]

        def retry() -> bool:  # a drop that never lands is cleaned up by prune() or the lease
            tries[0] += 1
            return tries[0] < 20

        self._run(conn, make, retry)

    def set(self, conn: Conn, status: str | None, duty: bool | None) -> Device:
        dev = self.devices[conn]
        new = Device(
            dev.node,
            status if status is not None else dev.status,
            duty if duty is not None else dev.duty,
            self.clock() if status is not None and status != dev.status else dev.since,
        )
        if new != dev:
            self.devices[conn] = new
            self._put(conn, new)
        return new

    async def republish(self, reput: bool = True) -> None:
        """Presence pushes may have been lost: re-read the state of every watched
        user. ``reput`` (the bus came back; Redis maybe restarted empty): first
        renew the lease and put every local device again. Versions restart with
        an empty Redis, so what was pushed before is forgotten, not compared with."""
        self.known.clear()
        if reput:
            with contextlib.suppress(Exception):
                await self.backend.heartbeat(self.clock())
            await self._reput()
        watched = list(self.subs)
        for i in range(0, len(watched), 500):
            try:
                states = await self.backend.get_many(watched[i : i + 500], self.clock())
            except Exception:
                return
            for user, (version, state) in states.items():
                self.deliver(user, version, state)

    async def _reput(self) -> None:
        """Put every local device again and remove this node's devices that no
        socket owns any more (a drop that failed, a reaped node coming back)."""
        for conn, dev in list(self.devices.items()):
            self._put(conn, dev)
        try:
            live = {self._device_id(c) for c in self.devices}
            for user, version, state in await self.backend.prune(live, self.clock()):
                self.changed(user, version, state)
        except Exception as exc:
            self.errors += 1
            log.debug("presence prune failed: %s", exc)

    # -- changes --------------------------------------------------------------

    def changed(self, user: str, version: int, state: State) -> None:
        self.deliver(user, version, state)
        if self.bus.shared:
            self.bus.publish("p:" + user, msgpack.packb((version, state.status, state.last_seen, state.on_duty)))

    def bus_message(self, user: str, payload: bytes) -> None:
        version, status, last_seen, duty = msgpack.unpackb(payload)
        self.deliver(user, version, State(status, last_seen, duty))

    def deliver(self, user: str, version: int, state: State) -> None:
        conns = self.subs.get(user)
        if not conns:
            return
        prev = self.known.get(user)
        if prev is not None and prev[0] >= version:
            return  # older than what we pushed
        self.known[user] = (version, state)
        if prev is not None and prev[1] == state:
            return
        frames: list[bytes | None] = [None, None]
        for conn in tuple(conns):
            frame = frames[conn.slot]
            if frame is None:
                frame = frames[conn.slot] = encode_push(conn.slot, "presence", state.wire(user))
            conn.write(frame)

    # -- subscriptions ----------------------------------------------------------

    async def watch(self, conn: Conn, users: list[str]) -> list[dict[str, Any]]:
        watching = conn.watching
        if watching is None:
            watching = conn.watching = set()
        new = [u for u in dict.fromkeys(users) if u not in watching]
        if len(watching) + len(new) > self.max_subs:
            from chatd_protocol import Err, RequestError

            raise RequestError(Err.LIMIT, f"at most {self.max_subs} presence subscriptions per connection")
        for user in new:
            watching.add(user)
            conns = self.subs.get(user)
            if conns is None:
                conns = self.subs[user] = set()
                self.bus.interest("p:" + user, 1)
            conns.add(conn)
        await asyncio.gather(*(self.bus.ready("p:" + u) for u in {self.bus.channel("p:" + u): u for u in new}.values()))
        states = await self.backend.get_many(list(dict.fromkeys(users)), self.clock())
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

    def unwatch(self, conn: Conn, users: list[str]) -> None:
        for user in users:
            if conn.watching and user in conn.watching:
                self._unwatch(conn, user)

    def _unwatch(self, conn: Conn, user: str) -> None:
        if conn.watching is not None:
            conn.watching.discard(user)
        conns = self.subs.get(user)
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self.subs[user]
            self.known.pop(user, None)
            self.bus.interest("p:" + user, -1)

    # -- lease ----------------------------------------------------------------

    async def _beat(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            try:
                now = self.clock()
                if await self.backend.heartbeat(now) and self.devices:
                    # our lease was gone (reaped while cut off, or Redis restarted)
                    log.warning("presence: this node's lease was gone; putting its devices again")
                    await self._reput()
                for user, version, state in await self.backend.reap(now):
                    self.changed(user, version, state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.debug("presence heartbeat failed: %s", exc)
            await asyncio.sleep(interval)
