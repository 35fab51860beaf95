"""The Redis pub/sub bus.

One connection publishes, one subscribes, both on chatd's own minimal RESP2
client (``resp.py``). The publisher runs with ``CLIENT REPLY OFF`` (no reply per
PUBLISH); everything published during one loop turn goes out in one write, in
order, and once a second a checkpoint (``CLIENT REPLY ON``'s +OK) confirms what
was written. The subscriber hands envelopes over as they are parsed. It is a loop
that owns its connection: when Redis goes away it marks the bus down, and
reconnects every 0.1-0.5 s; on the new connection it subscribes to every channel
the node still needs *before* marking the bus up and calling the handler's
``bus_reset`` (the resubscribe that Socket.IO's and python-socketio's Redis
adapters are known to miss). A fresh connection each time, so no state of a dead
connection leaks into the next.

Lost envelopes. Anything published while this node's bus is down, dropped for a
full queue, or written on a publishing connection that died before Redis
confirmed it, may be missing on other nodes. The node then publishes a reset on
the all-nodes channel as soon as it can: every node runs ``bus_reset`` (at most
once a second; requests in between are coalesced into one at the end of it), so
their clients catch up from the store.

Envelope: ``node id (8 bytes) | key length (2 bytes, big-endian) | key | payload``;
a receiver can skip its own envelopes and those for keys it has no interest in
without decoding the payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

from . import resp
from .base import BusHandler, channel_of

log = logging.getLogger("chatd.bus")

PING_AFTER = 2.0  # s of silence on the subscriber before a PING
DEAD_AFTER = 5.0  # s of silence (PINGs unanswered) before the connection counts as lost
MAX_QUEUED = 100_000  # envelopes waiting to be published before new ones are dropped
MAX_BUFFERED = 32 << 20  # bytes written to Redis and not yet taken by the socket
CONNECT_TIMEOUT = 1.0  # s to connect and set up a connection
CHECKPOINT_EVERY = 1.0  # s between confirmations of what the publisher wrote
RESET_EVERY = 1.0  # s: resets asked for by other nodes are coalesced to one per this
RESET_KEY = "!reset"  # envelope key on the all-nodes channel
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
        self._all = f"{prefix}:n:all"  # always subscribed: resets asked for by other nodes
        self._probe = f"{prefix}:n:probe"  # nobody subscribes: PUBLISH permission check
        self.handler: BusHandler | None = None
        self.counts: dict[str, int] = {}  # channel -> local interest (0: unsubscribe on next sweep)
        self.confirmed: set[str] = set()  # channels SUBSCRIBE confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._sub: resp.RespConnection | None = None  # the subscriber, while connected
        self._pub: resp.RespConnection | None = None
        self._pub_connecting = False
        self._owe_reset = False  # envelopes were lost: tell every node to resync when we can
        self._last_reset = 0.0
        self._reset_timer: asyncio.TimerHandle | None = None
        self.remote_resets = 0
        self._side: set[asyncio.Task[None]] = set()
        self._up = False
        self._running = False
        self._out: list[bytes] = []  # packed PUBLISH commands not written yet
        self._flushing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._first = asyncio.Event()
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.malformed = 0
        self._broken = ""  # set: the subscriber drops its connection (and the node resyncs)

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
            loop.create_task(self._sweep(), name="chatd-bus-sweep"),
            loop.create_task(self._watch_pub(), name="chatd-bus-publisher"),
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
        if self._reset_timer is not None:
            self._reset_timer.cancel()
        side = list(self._side)
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        self._flushing = False
        await self._final_flush()

    # -- interest ------------------------------------------------------------

    def channel(self, key: str) -> str:
        return channel_of(self.prefix, key, self.shards)

    def interest(self, key: str, delta: int) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        before = self.counts.get(channel, 0)
        self.counts[channel] = before + delta
        if before <= 0 < before + delta and channel not in self.confirmed:
            self._subscribe(channel)

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
        pub = self._pub
        if not self._up and (pub is None or not pub.is_open):
            # other nodes miss it: they are told to resync when we are back
            self._lost(1, "")
            return
        if len(self._out) >= MAX_QUEUED:  # Redis is not keeping up
            self._lost(1, "publish queue full")
            return
        self._out.append(resp.pack("PUBLISH", channel_of(self.prefix, key, self.shards), self._envelope(key, payload)))
        self._schedule_flush()

    def _envelope(self, key: str, payload: bytes) -> bytes:
        k = key.encode()
        return b"".join((self._node_b, len(k).to_bytes(2, "big"), k, payload))

    def _schedule_flush(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this loop turn published, in one write."""
        self._flushing = False
        if not self._out or not self._running:
            return
        pub = self._pub
        if pub is None or not pub.is_open:
            if not self._pub_connecting:
                self._pub_connecting = True
                self._spawn(self._connect_pub())
            return
        if pub.buffered > MAX_BUFFERED:  # Redis stopped reading
            pub.close("Redis is not reading what we publish")  # counted as lost in _pub_closed
            return
        batch, self._out = self._out, []
        try:
            pub.write(b"".join(batch), len(batch))
        except ConnectionError as exc:
            self._lost(len(batch), str(exc))
            return
        self.published += len(batch)

    async def _connect_pub(self) -> None:
        conn: resp.RespConnection | None = None
        try:
            conn = await resp.connect(self.url)
            conn.on_reply = self._on_publish_reply
            # refused here (an ACL without PUBLISH, a replica) rather than silently
            # once replies are off
            await asyncio.wait_for(conn.call("PUBLISH", self._probe, b""), CONNECT_TIMEOUT)
            await asyncio.wait_for(conn.replies_off(), CONNECT_TIMEOUT)
        except (OSError, ConnectionError, ValueError, TimeoutError, resp.RespError) as exc:
            if conn is not None:
                conn.close(f"setup failed: {exc!r}")
            self._lost(len(self._out), f"publish connection failed: {exc!r}")
            self._out.clear()
            return
        except BaseException:  # cancelled (stop)
            if conn is not None:
                conn.close("stopped")
            raise
        finally:
            self._pub_connecting = False
        if not self._running:
            conn.close("stopped")
            return
        conn.closed.add_done_callback(lambda _: self._pub_closed(conn))
        self._pub = conn
        if self._owe_reset and self._up:
            self._queue_reset()
        self._flush()

    async def _final_flush(self) -> None:
        """At stop (every deploy): what is queued, and a reset still owed, go out
        and Redis confirms them, within about 1.5 s; said in the log if not."""
        pub = self._pub
        if not self._out and not self._owe_reset and (pub is None or not pub.unconfirmed):
            if pub is not None:
                pub.close("stopped", flush=True)
            return
        try:
            if pub is None or not pub.is_open:
                pub = await resp.connect(self.url, CONNECT_TIMEOUT)
            if self._owe_reset:
                self._owe_reset = False
                self._out.append(self._reset_envelope())
            if self._out:
                pub.write(b"".join(self._out), len(self._out))
                self.published += len(self._out)
                self._out.clear()
            await asyncio.wait_for(pub.confirm(), 0.5)
        except (OSError, ConnectionError, ValueError, TimeoutError, resp.RespError) as exc:
            log.warning("bus: at stop, envelopes may not have reached Redis (%r); other nodes were not told", exc)
        finally:
            if pub is not None:
                pub.close("stopped", flush=True)

    def _on_publish_reply(self, value: object) -> None:
        if isinstance(value, resp.RespError):  # (replies on: a server without CLIENT REPLY)
            self._lost(1, f"PUBLISH refused: {value}")

    def _pub_closed(self, conn: resp.RespConnection) -> None:
        if conn is self._pub:
            self._pub = None
        if conn.unconfirmed_at_close and self._running:
            # what it wrote since Redis last confirmed may or may not have arrived
            self._lost(conn.unconfirmed_at_close, conn.reason)
        if self._out and self._running:
            self._schedule_flush()

    def _lost(self, n: int, why: str) -> None:
        """``n`` envelopes other nodes may have missed: once this node's bus is up
        and publishing again, it tells every node to resync (``_queue_reset``;
        never from here, so that a Redis refusing connections is not retried in a
        tight loop)."""
        self.dropped += n
        if not n:
            return
        if why:
            log.warning("bus: %d envelopes may be lost (%s); other nodes will be told to resync", n, why)
        self._owe_reset = True  # sent by _connected or, within a second, by _watch_pub

    def _queue_reset(self) -> None:
        """Publish a reset on the all-nodes channel: every node that may have
        missed our envelopes drops its caches and has its clients catch up."""
        self._owe_reset = False
        self._out.append(self._reset_envelope())
        self._schedule_flush()

    def reset_all(self, why: str) -> None:
        log.warning("bus: every node resyncs (%s)", why)
        self._remote_reset()  # this node (coalesced like the others')
        if self._up:
            self._queue_reset()
        else:
            self._owe_reset = True

    def _reset_envelope(self) -> bytes:
        return resp.pack("PUBLISH", self._all, self._envelope(RESET_KEY, b"\x00"))

    async def _watch_pub(self) -> None:
        """Confirm what the publisher wrote (replies are off) once a second; a
        publisher whose confirmations stop coming is closed (and counted lost)."""
        while self._running:
            await asyncio.sleep(CHECKPOINT_EVERY)
            if self._owe_reset and self._up:
                self._queue_reset()
            pub = self._pub
            if pub is None or not pub.is_open:
                continue
            if pub.unanswered and time.monotonic() - pub.waiting_since > DEAD_AFTER:
                pub.close(f"no answer from Redis to the publisher for {DEAD_AFTER:.0f} s")
            elif pub.unconfirmed and not pub.unanswered:
                pub.checkpoint()

    def _remote_reset(self) -> None:
        """Another node may have lost envelopes: reset, at most once a second."""
        now = time.monotonic()
        wait = self._last_reset + RESET_EVERY - now
        if wait <= 0:
            self._reset("another node lost envelopes")
        elif self._reset_timer is None:
            self._reset_timer = asyncio.get_running_loop().call_later(wait, self._reset, "coalesced")

    def _reset(self, why: str) -> None:
        self._reset_timer = None
        self._last_reset = time.monotonic()
        self.remote_resets += 1
        log.info("bus: resync (%s)", why)
        if self.handler is not None:
            try:
                self.handler.bus_reset(reconnected=False)
            except Exception:
                log.exception("bus: reset handler failed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    # -- subscriber ------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.1
        while self._running:
            conn: resp.RespConnection | None = None
            try:
                conn = await resp.connect(self.url)
                wanted = [self._control, self._all, *(c for c, n in self.counts.items() if n > 0)]
                pending: set[str] = set(wanted)
                conn.on_push = functools.partial(self._on_push, pending=pending)
                self._sub = conn
                conn.send("SUBSCRIBE", *wanted)
                pinged = time.monotonic()
                while self._running:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(conn.closed), 0.5)
                    if conn.closed.done():
                        raise ConnectionError(conn.reason)
                    if self._broken:
                        raise ConnectionError(self._broken)
                    # a connection that goes quiet without closing (a partition, a
                    # stalled Redis) is noticed by PINGs that get no answer
                    now = time.monotonic()
                    if now - conn.heard > PING_AFTER and now - pinged > PING_AFTER:
                        pinged = now
                        conn.send("PING")
                    if now - conn.heard > DEAD_AFTER:
                        raise ConnectionError(f"no answer from Redis for {now - conn.heard:.1f} s")
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, ValueError) as exc:
                if self._up:
                    log.warning("bus: lost Redis (%s); reconnecting", exc)
            except Exception:  # never let the listener die: that is the bug to avoid
                log.exception("bus: listener error; reconnecting")
            finally:
                if self._up:  # it was working: try again soon
                    backoff = 0.1
                self._sub = None
                self._broken = ""
                self._disconnected()
                if conn is not None:
                    conn.close("reconnecting")
            if self._running:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def _on_push(self, value: object, pending: set[str]) -> None:
        """Everything the subscriber connection receives, as it is parsed."""
        if not isinstance(value, list) or not value:
            if isinstance(value, resp.RespError):
                self._broken = f"Redis: {value}"
            return
        kind = value[0]
        if kind == b"message" and len(value) == 3:
            self._on_message(value[2])
            return
        if len(value) < 2:
            return
        channel = value[1].decode() if isinstance(value[1], bytes) else ""
        if kind == b"subscribe":
            self.confirmed.add(channel)
            self._release_waiters(channel)
            if pending:
                pending.discard(channel)
                if not pending:
                    self._connected()
        elif kind == b"unsubscribe":
            self.confirmed.discard(channel)
            if self.counts.get(channel, 0) > 0:  # interest came back while unsubscribing
                self._subscribe(channel)

    def _on_message(self, data: bytes) -> None:
        if data[:8] == self._node_b:
            return
        self.received += 1
        try:  # one bad envelope (another version, a stray PUBLISH) is dropped, not a reset
            klen = int.from_bytes(data[8:10], "big")
            if len(data) <= 10 + klen or klen == 0:
                raise ValueError(f"short envelope ({len(data)} bytes)")
            key = data[10 : 10 + klen].decode()
            if key == RESET_KEY:
                self._remote_reset()
                return
            if self.handler is not None:
                self.handler.bus_message(key, data[10 + klen :])
        except Exception as exc:
            self.malformed += 1
            log.warning("bus: dropped an envelope that could not be handled: %r", exc)

    def _subscribe(self, channel: str) -> None:
        """SUBSCRIBE on the live connection; without one, the next connection
        subscribes to every channel with interest anyway."""
        sub = self._sub
        if sub is not None and sub.is_open:
            sub.send("SUBSCRIBE", channel)

    def _unsubscribe(self, channel: str) -> None:
        sub = self._sub
        if channel in self.confirmed and sub is not None and sub.is_open:
            # not confirmed from now on: interest arriving meanwhile re-subscribes
            # and its ready() waits for that
            self.confirmed.discard(channel)
            sub.send("UNSUBSCRIBE", channel)

    def _connected(self) -> None:
        self._up = True
        self._first.set()
        self.resets += 1
        self._last_reset = time.monotonic()
        if self._owe_reset:  # our envelopes were lost meanwhile: the others resync too
            self._queue_reset()
        log.info("bus: subscribed to %d channels on %s", len(self.confirmed), self.url)
        # channels that gained interest while we were subscribing were sent their
        # own SUBSCRIBE on this connection; nothing else to do
        if self.handler is not None:
            try:
                self.handler.bus_reset()
            except Exception:
                log.exception("bus: reset handler failed")

    def _disconnected(self) -> None:
        self._up = False
        self.confirmed.clear()
        self._release_waiters()

    async def _sweep(self) -> None:
        while self._running:
            await asyncio.sleep(UNSUBSCRIBE_AFTER)
            for channel in [c for c, n in self.counts.items() if n <= 0]:
                del self.counts[channel]
                self._unsubscribe(channel)

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.confirmed),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "resets": self.resets,
            "remote_resets": self.remote_resets,
            "malformed": self.malformed,
        }
