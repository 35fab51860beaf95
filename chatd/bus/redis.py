"""The Redis pub/sub bus (redis-py asyncio).

One connection publishes (pipelined: everything published during one loop turn
goes out in one round trip, in order), one connection subscribes. The subscriber
is a loop that owns its connection: when Redis goes away it marks the bus down,
and reconnects every 0.1-0.5 s; on the new connection it subscribes to every
channel the node still needs *before* marking the bus up and calling the
handler's ``bus_reset`` (the resubscribe that Socket.IO's and python-socketio's
Redis adapters are known to miss). A fresh redis-py ``PubSub`` per connection, so
no state of a dead connection leaks into the next.

Envelope: ``node id (8 bytes) | key length (2 bytes, big-endian) | key | payload``;
a receiver can skip its own envelopes and those for keys it has no interest in
without decoding the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import BusHandler, channel_of

log = logging.getLogger("chatd.bus")

PING_AFTER = 2.0  # s of silence on the subscriber before a PING
DEAD_AFTER = 5.0  # s of silence (PINGs unanswered) before the connection counts as lost
MAX_QUEUED = 100_000  # envelopes waiting to be published before new ones are dropped
UNSUBSCRIBE_AFTER = 10.0  # s a channel stays subscribed with no interest (phones reconnect often)
READY_TIMEOUT = 2.0  # s ready() waits for a SUBSCRIBE confirmation


class RedisBus:
    shared = True  # other nodes may exist whenever Redis is used

    def __init__(self, url: str, shards: int = 1024, prefix: str = "chatd") -> None:
        self.url = url
        self.shards = shards
        self.prefix = prefix
        self.node = os.urandom(4).hex()
        self._node_b = self.node.encode()
        self._control = f"{prefix}:n:{self.node}"  # always subscribed: a connection loss is noticed
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, socket_keepalive=True
        )
        self._sub_client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_keepalive=True, health_check_interval=5
        )
        self.handler: BusHandler | None = None
        self.counts: dict[str, int] = {}  # channel -> local interest (0: unsubscribe on next sweep)
        self.confirmed: set[str] = set()  # channels SUBSCRIBE confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._ps: Any = None  # the current PubSub, while connected
        self._up = False
        self._running = False
        self._out: list[tuple[str, bytes]] = []
        self._flushing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._first = asyncio.Event()
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.malformed = 0
        self._broken = ""  # set: the listener drops the connection (and the node resyncs)

    # -- lifecycle ---------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def attach(self, handler: BusHandler) -> None:
        self.handler = handler

    async def start(self, wait: float = 2.0) -> None:
        """Start the subscriber; wait up to ``wait`` s for Redis (the node serves
        without it meanwhile: /healthz says not ready until the bus is up)."""
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="chatd-bus-listen"),
            loop.create_task(self._command(), name="chatd-bus-command"),
            loop.create_task(self._sweep(), name="chatd-bus-sweep"),
        ]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first.wait(), wait)
        if not self._up:
            log.warning("bus: Redis at %s is not reachable yet; serving without cross-process fan-out", self.url)

    async def stop(self) -> None:
        self._running = False
        self._up = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._release_waiters()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        with contextlib.suppress(Exception):
            await self._sub_client.aclose()

    # -- interest ------------------------------------------------------------

    def channel(self, key: str) -> str:
        return channel_of(self.prefix, key, self.shards)

    def interest(self, key: str, delta: int) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        before = self.counts.get(channel, 0)
        self.counts[channel] = before + delta
        if before <= 0 < before + delta and channel not in self.confirmed and self._ps is not None:
            self._commands.put_nowait(("subscribe", channel))

    async def ready(self, key: str) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        if not self._up or channel in self.confirmed or self.counts.get(channel, 0) <= 0:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, READY_TIMEOUT)

    def _release_waiters(self, channel: str | None = None) -> None:
        if channel is None:
            waiters = [f for fs in self._waiters.values() for f in fs]
            self._waiters.clear()
        else:
            waiters = self._waiters.pop(channel, [])
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- publish -------------------------------------------------------------

    def publish(self, key: str, payload: bytes) -> None:
        if not self._up:
            self.dropped += 1
            return
        if len(self._out) >= MAX_QUEUED:  # Redis is not keeping up: drop, and resync everyone
            self.dropped += 1
            self._broken = "publish queue full"
            return
        k = key.encode()
        self._out.append((channel_of(self.prefix, key, self.shards), b"".join((self._node_b, len(k).to_bytes(2, "big"), k, payload))))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._out:
                batch, self._out = self._out, []
                for attempt in (1, 2):  # a pooled connection from before a Redis restart fails once
                    try:
                        await self._send(batch)
                        self.published += len(batch)
                        break
                    except (RedisError, OSError) as exc:
                        if attempt == 2 or not self._up:
                            self.dropped += len(batch)
                            log.warning("bus: publish of %d envelopes failed: %s", len(batch), exc)
                            # other nodes missed them: reconnect, so that every node resyncs
                            self._broken = f"publish failed: {exc}"
                            break
        finally:
            self._flushing = False

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        if len(batch) == 1:
            await self.client.publish(*batch[0])
            return
        pipe = self.client.pipeline(transaction=False)
        for channel, envelope in batch:
            pipe.publish(channel, envelope)
        await pipe.execute()

    # -- subscriber ------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.1
        while self._running:
            ps = self._sub_client.pubsub()
            try:
                wanted = [self._control, *(c for c, n in self.counts.items() if n > 0)]
                await ps.subscribe(*wanted)
                self._ps = ps
                pending: set[str] | None = set(wanted)
                heard = pinged = time.monotonic()
                while self._running:
                    msg = await ps.get_message(timeout=0.5)
                    now = time.monotonic()
                    if msg is not None:
                        heard = now
                        self._on_message(msg, pending)
                        if pending is not None and not pending:
                            pending = None
                            self._connected()
                            backoff = 0.1
                    if self._broken:
                        raise ConnectionError(self._broken)
                    # a connection that goes quiet without closing (a partition, a
                    # stalled Redis) is noticed by PINGs that get no answer
                    if now - heard > PING_AFTER and now - pinged > PING_AFTER:
                        pinged = now
                        await ps.ping()
                    if now - heard > DEAD_AFTER:
                        raise ConnectionError(f"no answer from Redis for {now - heard:.1f} s")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._up:
                    log.warning("bus: lost Redis (%s); reconnecting", exc)
            except Exception:  # never let the listener die: that is the bug to avoid
                log.exception("bus: listener error; reconnecting")
            finally:
                self._ps = None
                self._broken = ""
                self._disconnected()
                with contextlib.suppress(Exception):
                    await ps.aclose()
            if self._running:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def _on_message(self, msg: dict[str, Any], pending: set[str] | None) -> None:
        kind = msg["type"]
        if kind == b"message" or kind == "message":
            data: bytes = msg["data"]
            if data[:8] == self._node_b:
                return
            self.received += 1
            try:  # one bad envelope (another version, a stray PUBLISH) is dropped, not a reset
                klen = int.from_bytes(data[8:10], "big")
                if len(data) <= 10 + klen or klen == 0:
                    raise ValueError(f"short envelope ({len(data)} bytes)")
                key = data[10 : 10 + klen].decode()
                if self.handler is not None:
                    self.handler.bus_message(key, data[10 + klen :])
            except Exception as exc:
                self.malformed += 1
                log.warning("bus: dropped an envelope that could not be handled: %r", exc)
            return
        channel = msg["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind in (b"subscribe", "subscribe"):
            if pending is not None:
                pending.discard(channel)
            self.confirmed.add(channel)
            self._release_waiters(channel)
        elif kind in (b"unsubscribe", "unsubscribe"):
            self.confirmed.discard(channel)
            if self.counts.get(channel, 0) > 0:  # interest came back while unsubscribing
                self._commands.put_nowait(("subscribe", channel))

    async def _command(self) -> None:
        """(Un)subscribe on the live connection as interest changes; a command
        that fails is dropped: the listener reconnects and subscribes to all."""
        while self._running:
            cmd, channel = await self._commands.get()
            ps = self._ps
            if ps is None:
                continue
            want = self.counts.get(channel, 0) > 0
            try:
                if cmd == "subscribe" and want and channel not in self.confirmed:
                    await ps.subscribe(channel)
                elif cmd == "unsubscribe" and not want and channel in self.confirmed:
                    # not confirmed from now on: interest arriving meanwhile re-subscribes
                    # and its ready() waits for that
                    self.confirmed.discard(channel)
                    await ps.unsubscribe(channel)
            except (RedisError, OSError) as exc:
                log.debug("bus: %s %s failed: %s", cmd, channel, exc)

    def _connected(self) -> None:
        self._up = True
        self._first.set()
        self.resets += 1
        log.info("bus: subscribed to %d channels on %s", len(self.confirmed), self.url)
        # channels that gained interest while we were subscribing
        for channel, n in self.counts.items():
            if n > 0 and channel not in self.confirmed:
                self._commands.put_nowait(("subscribe", channel))
        if self.handler is not None:
            self.handler.bus_reset()

    def _disconnected(self) -> None:
        self._up = False
        self.confirmed.clear()
        while not self._commands.empty():
            self._commands.get_nowait()
        self._release_waiters()

    async def _sweep(self) -> None:
        while self._running:
            await asyncio.sleep(UNSUBSCRIBE_AFTER)
            for channel in [c for c, n in self.counts.items() if n <= 0]:
                del self.counts[channel]
                if channel in self.confirmed and self._up:
                    self._commands.put_nowait(("unsubscribe", channel))

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.confirmed),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "resets": self.resets,
            "malformed": self.malformed,
        }
