"""Presence kept in Redis, shared by every node:

- ``<prefix>:pd:<user>``  hash, one field per device ``<node>/<device>`` ->
  ``status|duty|since``
- ``<prefix>:pls:<user>`` last seen (ms) of the user's last device to go
- ``<prefix>:pv:<user>``  version: INCR in the same script as every change, so
  every node orders two changes of one user the same way
- ``<prefix>:nodes:all``  sorted set node -> last heartbeat (ms): the lease
- ``<prefix>:nu:<node>``  users with a device on that node

On a Redis Cluster (a ``redis+cluster://`` URL) the user part of the first
three is a hash tag (``chatd:pd:{alice}``, ``chatd:pls:{alice}``,
``chatd:pv:{alice}``), so a user's three keys share one slot and one script can
change them atomically; user ids (``[A-Za-z0-9_.@-]``) hold no brace, so the
tag is always the whole id. The other keys are read and written alone and keep
their names; on one server every name stays as it was.

A change (put, drop, reap) is one Lua script on the user's three keys: the
device write, the ``INCR`` of the version and the read of the new state, atomic
per user on one server and on a cluster alike. The ``SADD`` to ``nu:<node>``
and the read of the leases are outside it: neither orders anything.

Every node renews its lease every ``lease/3``. A device counts only while its
node's lease is fresh, and any node reaps a node whose lease is older than
``lease`` (default 15 s): it removes that node's devices and pushes the new
state. A node killed with ``kill -9`` takes its users offline within
``lease + lease/3`` (20 s) with no manual clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import redisurl
from .rules import LEASE_MS, Change, Device, State, aggregate, dead_nodes, node_alive

log = logging.getLogger("chatd.presence")

MAX_BATCH = 256  # changes in one pipeline
POOL = 16  # operations in flight on the shared connections
POOL_WAIT = 5.0  # s an operation waits for one of them before it fails
# on a cluster: a command that fails to connect or times out is sent once more
# after the slot map is read again. Without it the first command after a failover
# fails (the map still names the dead master; tests/presence/test_redis_cluster.py).
# redis-py's default is 10: a heartbeat stuck 11 x 2 s behind a hung master would
# land with a ``now`` older than the lease.
CLUSTER_RETRIES = 1
RESENDS = 2  # a failover is both: the master gone, then a new one without the script
# one change of one user. KEYS: pd, pls, pv. ARGV[1]: last seen to set ("" for
# none); ARGV[2], ARGV[3]: a device field to set and its value ("" for none);
# ARGV[4..]: device fields to delete. Returns {version, the devices as a flat
# HGETALL, last seen or nil}.
CHANGE = """
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if #ARGV > 3 then redis.call('HDEL', KEYS[1], unpack(ARGV, 4)) end
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1], 'EX', 2592000) end
return {redis.call('INCR', KEYS[3]), redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}
"""
CHANGE_SHA = hashlib.sha1(CHANGE.encode()).hexdigest()
# (user, now, the script's ARGV, whether the user joins this node's set, its result)
Pending = tuple[str, int, tuple[Any, ...], bool, "asyncio.Future[tuple[int, State]]"]


class RedisPresence:
    @classmethod
    def from_url(cls, url: str, node: str, prefix: str = "chatd", lease_ms: int = LEASE_MS) -> RedisPresence:
        """``url``: ``redis://...`` (one server) or ``redis+cluster://...``
        (a cluster). ValueError for a cluster URL without usable seeds, or a
        prefix with a brace on a cluster (it would move the hash tag)."""
        cluster = redisurl.is_cluster(url)
        opts: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 2}
        if cluster:
            opts["retry"] = Retry(NoBackoff(), CLUSTER_RETRIES)
        # connections of its own, POOL operations at a time, waiting when busy
        # (``_slot``): a burst of presence changes (a Redis restart re-puts every
        # device) must not starve the bus. On a cluster the cap is per node; twice
        # POOL leaves room for what a failed pipeline's other nodes still hold.
        main = redisurl.client(url, max_connections=2 * POOL if cluster else POOL, **opts)
        # the lease on a connection of its own: behind thousands of device puts
        # (a reconnect storm) in the pool above, a heartbeat waited past its 5 s
        # pool timeout, failed, and live nodes were reaped
        beat = redisurl.client(url, max_connections=1, **opts)
        return cls(main, node, prefix, lease_ms, beat, cluster=cluster)

    def __init__(
        self,
        client: Any,
        node: str,
        prefix: str = "chatd",
        lease_ms: int = LEASE_MS,
        lease_client: Any = None,
        cluster: bool = False,
    ) -> None:
        """``client``, ``lease_client``: redis-py asyncio ``Redis`` or, with
        ``cluster``, ``RedisCluster`` clients."""
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"presence: a key prefix on a Redis Cluster must not hold a brace ({prefix!r})")
        self.r = client
        self.lease_r = lease_client if lease_client is not None else client  # what renews the lease
        self.node = node
        self.p = prefix
        self.cluster = cluster
        self.lease_ms = lease_ms
        # called with a node reaped here: it may have committed messages it never
        # published, so the app has every node resync (bus.reset_all)
        self.on_node_dead: Callable[[str], None] | None = None
        self._pending: list[Pending] = []  # changes for the next pipeline
        self._batches: set[asyncio.Task[None]] = set()
        self._free = asyncio.Semaphore(POOL)
        self._beating = asyncio.Lock()

    def _k(self, kind: str, name: str) -> str:
        return f"{self.p}:{kind}:{name}"

    def _user_keys(self, user: str) -> tuple[str, str, str]:
        """pd, pls, pv of ``user``: one slot on a cluster."""
        u = redisurl.tag(user, self.cluster)
        return self._k("pd", u), self._k("pls", u), self._k("pv", u)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the POOL operations in flight, or ConnectionError after
        POOL_WAIT (what a blocking connection pool did on one server; a cluster
        client has none, and fails a command past its cap instead)."""
        try:
            await asyncio.wait_for(self._free.acquire(), POOL_WAIT)
        except TimeoutError:
            raise ConnectionError("presence: no Redis connection free") from None
        try:
            yield
        finally:
            self._free.release()

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

    async def _change(self, user: str, now: int, argv: tuple[Any, ...], index: bool = False) -> tuple[int, State]:
        """Run the change script (``argv``: see ``CHANGE``) on ``user``'s keys,
        and with ``index`` add the user to this node's set. Changes asked for in
        one turn of the event loop share one pipeline (a reconnect storm puts and
        drops thousands of devices: one round trip and one redis-py pipeline each
        cost a storm's largest share of CPU); a cluster client splits it into one
        per master."""
        fut: asyncio.Future[tuple[int, State]] = asyncio.get_running_loop().create_future()
        self._pending.append((user, now, argv, index, fut))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(self._run_batch(pending[i : i + MAX_BATCH]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _send(self, batch: list[Pending], text: bool = False) -> tuple[list[Any], Any]:
        """One pipeline for ``batch``: each change's result (its script's reply, or
        the first error among its commands) and the leases (or their error). With
        ``text``, the script goes as EVAL with its text (a server without it in its
        cache runs it, and keeps it for the EVALSHAs after)."""
        pipe = self.r.pipeline(transaction=False)
        for user, _, argv, index, _ in batch:
            if index:
                pipe.sadd(self._k("nu", self.node), user)
            # by name: redis-py's cluster pipeline blocks its evalsha() (it cannot
            # load a missing script; _apply does) but routes the command by its
            # keys. EVAL with the text instead cost Redis ~20 % more a change.
            pipe.execute_command(*(("EVAL", CHANGE) if text else ("EVALSHA", CHANGE_SHA)), 3, *self._user_keys(user), *argv)
        pipe.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
        # a command that fails fails its own change only, not the 255 beside it
        res = await pipe.execute(raise_on_error=False)
        out, at = [], 0
        for *_, index, _ in batch:
            mine = res[at : at + 1 + index]
            at += len(mine)
            out.append(next((r for r in mine if isinstance(r, Exception)), mine[-1]))
        return out, res[-1]

    def _again(self, result: Any) -> bool:
        """Whether a change that got ``result`` is sent once more: the server had
        not seen the script (first use, a restart, a replica promoted on a
        cluster), or, on a cluster, the master went away under the pipeline (a
        failover: the next send re-reads the slot map). A change run twice only
        counts its version up twice: what it writes is the same."""
        if isinstance(result, NoScriptError):
            return True
        return self.cluster and isinstance(result, (RedisConnectionError, RedisTimeoutError))

    async def _apply(self, batch: list[Pending]) -> tuple[list[Any], list[Any]]:
        results, beats = await self._send(batch)
        for _ in range(RESENDS):
            again = [i for i, r in enumerate(results) if self._again(r)]
            if not again and not (isinstance(beats, Exception) and self._again(beats)):
                break
            # the leases are read again with them (alone, if only they failed). Not
            # SCRIPT LOAD: on a cluster it goes to every master, and one master down
            # (a failover) would fail the whole batch with it
            text = any(isinstance(results[i], NoScriptError) for i in again)
            redone, beats = await self._send([batch[i] for i in again], text)
            for i, r in zip(again, redone, strict=True):
                results[i] = r
        if isinstance(beats, Exception):
            raise beats
        return results, beats

    async def _run_batch(self, batch: list[Pending]) -> None:
        try:
            async with self._slot():
                results, beats = await self._apply(batch)
        except BaseException as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("presence stopped"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, now, _, _, fut), r in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(r, Exception):
                fut.set_exception(r)
            else:
                version, flat, last = r
                raw = dict(zip(flat[::2], flat[1::2], strict=True))
                fut.set_result((int(version), self._state(raw, last, beats, now)))

    async def put(self, user: str, device: str, dev: Device, now: int) -> tuple[int, State]:
        return await self._change(user, now, ("", f"{self.node}/{device}", dev.pack()), index=True)

    async def drop(self, user: str, device: str, now: int) -> tuple[int, State]:
        return await self._change(user, now, (now, "", "", f"{self.node}/{device}"))

    async def get_many(self, users: list[str], now: int) -> dict[str, tuple[int, State]]:
        async with self._slot():
            pipe = self.r.pipeline(transaction=False)
            for u in users:
                pd, pls, pv = self._user_keys(u)
                pipe.get(pv)
                pipe.hgetall(pd)
                pipe.get(pls)
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
            pool = getattr(client, "connection_pool", None)  # one server: a pool it may not own
            if pool is not None:
                await pool.disconnect()

    async def heartbeat(self, now: int) -> bool:
        async with self._beating:  # its one connection, one beat at a time
            return bool(await self.lease_r.zadd(self._k("nodes", "all"), {self.node: now}))

    async def _devices(self, node: str) -> list[tuple[str, list[Any]]]:
        """The users in ``node``'s set, each with the fields of their devices on
        ``node``: one pipeline (one per master on a cluster)."""
        async with self._slot():
            members: Any = await self.r.smembers(self._k("nu", node))
            users = sorted(_s(u) for u in members)
            pipe = self.r.pipeline(transaction=False)
            for user in users:
                pipe.hkeys(self._user_keys(user)[0])
            fields = await pipe.execute()
        mine = node + "/"
        return [(u, [f for f in got if _s(f).startswith(mine)]) for u, got in zip(users, fields, strict=True)]

    async def prune(self, live: set[str], now: int) -> list[Change]:
        at = len(self.node) + 1
        stale = [(u, [f for f in fields if _s(f)[at:] not in live]) for u, fields in await self._devices(self.node)]
        return await self._reap_devices([(u, fields) for u, fields in stale if fields], now, now)

    async def _reap_devices(self, found: list[tuple[str, list[Any]]], gone_at: int, now: int) -> list[Change]:
        """Remove each user's device ``fields``, last seen ``gone_at``; asked for in
        one turn, so they share pipelines."""
        done = await asyncio.gather(*(self._change(u, now, (gone_at, "", "", *f)) for u, f in found))
        return [(u, version, state) for (u, _), (version, state) in zip(found, done, strict=True)]

    async def reap(self, now: int) -> list[Change]:
        async with self._slot():
            beats: list[Any] = await self.r.zrange(self._k("nodes", "all"), 0, -1, withscores=True)
        heartbeats = {_s(n): float(s) for n, s in beats}
        changes: list[Change] = []
        for dead in dead_nodes(heartbeats, now, self.lease_ms):
            # one reaper per dead node
            async with self._slot():
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
        changes = await self._reap_devices(await self._devices(node), gone_at, now)
        async with self._slot():
            await self.r.delete(self._k("nu", node))
            await self.r.zrem(self._k("nodes", "all"), node)
        return changes


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
