"""Presence kept in Redis, shared by every node:

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
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool

from .rules import LEASE_MS, Change, Device, State, aggregate, dead_nodes, node_alive

log = logging.getLogger("chatd.presence")

MAX_BATCH = 256  # changes in one MULTI
# (user, now, the change's writes, its result)
Pending = tuple[str, int, Callable[[Any], None], "asyncio.Future[tuple[int, State]]"]


class RedisPresence:
    @classmethod
    def from_url(cls, url: str, node: str, prefix: str = "chatd", lease_ms: int = LEASE_MS) -> RedisPresence:
        # a pool of its own, bounded and waiting when busy: a burst of presence
        # changes (a Redis restart re-puts every device) must not starve the bus
        pool = BlockingConnectionPool.from_url(
            url, max_connections=16, timeout=5, socket_connect_timeout=1, socket_timeout=2
        )
        # the lease on a connection of its own: behind thousands of device puts
        # (a reconnect storm) in the pool above, a heartbeat waited past its 5 s
        # pool timeout, failed, and live nodes were reaped
        beat = BlockingConnectionPool.from_url(
            url, max_connections=1, timeout=5, socket_connect_timeout=1, socket_timeout=2
        )
        return cls(aioredis.Redis(connection_pool=pool), node, prefix, lease_ms, aioredis.Redis(connection_pool=beat))

    def __init__(
        self,
        client: aioredis.Redis,
        node: str,
        prefix: str = "chatd",
        lease_ms: int = LEASE_MS,
        lease_client: aioredis.Redis | None = None,
    ) -> None:
        self.r = client
        self.lease_r = lease_client if lease_client is not None else client  # what renews the lease
        self.node = node
        self.p = prefix
        self.lease_ms = lease_ms
        # called with a node reaped here: it may have committed messages it never
        # published, so the app has every node resync (bus.reset_all)
        self.on_node_dead: Callable[[str], None] | None = None
        self._pending: list[Pending] = []  # changes for the next MULTI
        self._batches: set[asyncio.Task[None]] = set()

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
        """Apply ``write`` and read the user's new version and state, atomically.
        Changes asked for in one turn of the event loop share one MULTI (a
        reconnect storm puts and drops thousands of devices: one round trip and
        one redis-py pipeline each cost a storm's largest share of CPU)."""
        fut: asyncio.Future[tuple[int, State]] = asyncio.get_running_loop().create_future()
        self._pending.append((user, now, write, fut))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(self._run_batch(pending[i : i + MAX_BATCH]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_batch(self, batch: list[Pending]) -> None:
        try:
            pipe = self.r.pipeline(transaction=True)
            spans: list[tuple[int, int]] = []  # each change's commands: (first, its 3 reads)
            for user, _, write, _ in batch:
                first = len(pipe)
                write(pipe)
                spans.append((first, len(pipe)))
                pipe.incr(self._k("pv", user))
                pipe.hgetall(self._k("pd", user))
                pipe.get(self._k("pls", user))
            pipe.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
            # a command that fails fails its own change only, not the 255 beside it
            res = await pipe.execute(raise_on_error=False)
            if isinstance(res[-1], Exception):
                raise res[-1]
        except BaseException as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("presence stopped"))
            if not isinstance(exc, Exception):
                raise
            return
        beats = res[-1]
        for (_, now, _, fut), (first, at) in zip(batch, spans, strict=True):
            if fut.done():
                continue
            failed = next((r for r in res[first : at + 3] if isinstance(r, Exception)), None)
            if failed is not None:
                fut.set_exception(failed)
            else:
                version, raw, last = res[at : at + 3]
                fut.set_result((int(version), self._state(raw, last, beats, now)))

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
        for task in list(self._batches):
            task.cancel()  # its callers get an error; presence is stopping
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        for client in {id(c): c for c in (self.r, self.lease_r)}.values():
            await client.aclose()
            await client.connection_pool.disconnect()

    async def heartbeat(self, now: int) -> bool:
        return bool(await self.lease_r.zadd(self._k("nodes", "all"), {self.node: now}))

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


