"""A user's send budget shared by every process on one Redis (issue 10, item 16):
one server, or a Redis Cluster (a ``redis+cluster://`` URL; the bucket is one key,
``<prefix>:rl:<user>``, so its script runs on the master of that key's slot).

With per-process buckets, N processes let a user send N times the rate. Here the
bucket lives in Redis (one hash per user, refilled by a Lua script on Redis's own
clock, so every process agrees), and each process leases tokens from it a few at
a time: the hot path stays synchronous (no round trip per message), and a lease is
fetched in the background when the local one runs out.

What it costs in accuracy: a process holds at most one lease (``chunk`` tokens) it
has not used, and lets up to one lease's worth through on credit while it fetches
one (a burst is not refused while the first lease is on its way); so a user on N
processes gets at most ``burst + 2 * N * chunk`` in a burst, and the rate. While Redis cannot be reached the process falls back to its own bucket (the
per-process limit) and tries Redis again a few seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import redisurl
from .clock import Clock
from .limits import SendLimiter

log = logging.getLogger("chatd.limits")

RETRY_REDIS_AFTER = 5.0  # s on the local buckets after a Redis error
CREDIT_WAIT = 0.05  # s a send waits while its lease is on the way and credit is used up
MAX_USERS = 100_000  # leases kept; past it those with nothing left are forgotten

# KEYS[1] user's bucket; ARGV rate/s, burst, tokens wanted. Returns {granted, seconds to the next token}.
TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local grant = math.min(want, math.floor(tokens))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if grant < 1 then wait = (1 - tokens) / rate end
return {grant, tostring(wait)}
"""


class _Lease:
    __slots__ = ("avail", "blocked_until", "fetching")

    def __init__(self) -> None:
        self.avail = 0  # tokens leased here and not used yet (below 0: messages let through on credit)
        self.fetching = False
        self.blocked_until = 0.0  # monotonic: Redis said the bucket is empty until then


class SharedSendLimiter:
    def __init__(self, url: str, rate: float, burst: int, clock: Clock, prefix: str = "chatd") -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.prefix = prefix
        self.chunk = max(1, min(burst, math.ceil(rate / 2)))  # about half a second of the rate per round trip
        self.local = SendLimiter(rate, burst, clock)
        self.leases: dict[str, _Lease] = {}
        # ``url``: one server or a cluster (each user's bucket is one key: a
        # cluster client sends its script to the master of that key's slot). On a
        # cluster a failed command is retried once, on a re-read slot map (what
        # follows a failover); redis-py's 10 would hold a user's sends on credit
        # for 11 s behind a hung master before this process fell back.
        opts: dict[str, Any] = {"retry": Retry(NoBackoff(), 1)} if redisurl.is_cluster(url) else {}
        self.redis: Any = redisurl.client(url, socket_connect_timeout=1.0, socket_timeout=1.0, **opts)
        self._take: Any = self.redis.register_script(TAKE)
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors = 0

    def wait(self, user: str) -> float:
        """0.0 if ``user`` may send now, else seconds to wait."""
        now = self.clock.monotonic()
        if now < self._down_until:
            return self.local.wait(user)
        lease = self.leases.get(user)
        if lease is None:
            if len(self.leases) >= MAX_USERS:
                self.leases = {u: x for u, x in self.leases.items() if x.avail > 0 or x.fetching}
            lease = self.leases[user] = _Lease()
        if lease.avail >= 1:
            lease.avail -= 1
            return 0.0
        if now < lease.blocked_until:
            return lease.blocked_until - now
        if not lease.fetching:
            lease.fetching = True
            task = asyncio.get_running_loop().create_task(self._fetch(user, lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if lease.avail > -self.chunk:  # on credit while the lease is fetched: up to one lease's worth
            lease.avail -= 1
            return 0.0
        return CREDIT_WAIT

    async def _fetch(self, user: str, lease: _Lease) -> None:
        try:
            granted, wait = await self._take(keys=[f"{self.prefix}:rl:{user}"], args=[self.rate, self.burst, self.chunk])
            granted, wait = int(granted), float(wait)
        except Exception as exc:  # Redis away: this process's own buckets meanwhile
            self.errors += 1
            if self.clock.monotonic() >= self._down_until:
                log.warning("send limits: Redis unreachable (%r); per-process limits for %.0f s", exc, RETRY_REDIS_AFTER)
            self._down_until = self.clock.monotonic() + RETRY_REDIS_AFTER
            lease.avail = max(lease.avail, 0)
            return
        finally:
            lease.fetching = False
        lease.avail += granted
        if granted < 1:
            lease.blocked_until = self.clock.monotonic() + wait

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
