"""The Redis pub/sub bus: one Redis server, or a Redis Cluster with sharded pub/sub.

Links. The bus talks to Redis through *links*, one per server it needs: the only
server (``redis://``), or each master of a cluster (``redis+cluster://``, Redis 7's
``SSUBSCRIBE``/``SPUBLISH``). A link has one connection that publishes and one
that subscribes, both on chatd's own minimal RESP2 client (``resp.py``). On a
cluster, a channel's hash slot (``chatd.redisurl.slot``) says which master's link
carries it: the 1,024 shard channels per kind spread over the masters, a publish
goes to the master that owns the channel's slot, and each node subscribes on a
master only to the channels it needs there.

Publishing. On one server the publisher runs with ``CLIENT REPLY OFF`` (no reply
per PUBLISH); everything published during one loop turn goes out in one write per
link, in order, and once a second a checkpoint (``CLIENT REPLY ON``'s +OK) confirms
what was written. On a cluster, replies stay on: a ``MOVED`` (the slot has moved to
another master) must be seen, counted lost, and make the bus re-read the slot map.

Subscribing. Each link's subscriber is a loop that owns its connection: when Redis
goes away it marks the link down, and reconnects every 0.1-0.5 s; on the new
connection it subscribes to every channel the node still needs there, then sends a
``PING`` with a token, and only its answer (after every SUBSCRIBE was processed)
marks the link up (the resubscribe that Socket.IO's and python-socketio's Redis
adapters are known to miss). The bus is up while every link is; when it comes
back up after a loss (and after the first connect), the handler's ``bus_reset``
runs. A fresh connection each time, so no state of a dead connection leaks into
the next.

The cluster's shape. The slot map comes from ``CLUSTER SLOTS`` on any reachable
node (the URL's seeds, then the masters known), read at start, every 5 s, and at
once when a link is lost, a ``MOVED``/``CLUSTERDOWN`` arrives or the server
unsubscribes a channel (its slot migrated). A new map that moves channels makes
the links that gained them subscribe and mark themselves down until that is
confirmed; a master that left the map (failed over to its replica) has its link
closed. So a failover is: the dead master's link goes down (``/healthz``: the bus
is "degraded", the node keeps serving), its replica is promoted within the
cluster's node timeout, the map moves its slots, the new master's link
subscribes, the bus is up again and every client resyncs from the store.

Lost envelopes. Anything published while a link is down, dropped for a full
queue, refused (``MOVED``) or written on a publishing connection that died before
Redis confirmed it, may be missing on other nodes. The node then publishes a reset
on the all-nodes channel as soon as it can: every node runs ``bus_reset`` (at most
once a second; requests in between are coalesced into one at the end of it), so
their clients catch up from the store.

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
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

from .. import redisurl
from . import resp
from .base import BusHandler, channel_of

log = logging.getLogger("chatd.bus")

PING_AFTER = 2.0  # s of silence on the subscriber before a PING
DEAD_AFTER = 5.0  # s of silence (PINGs unanswered) before the connection counts as lost
MAX_QUEUED = 100_000  # envelopes waiting to be published (per link) before new ones are dropped
MAX_BUFFERED = 32 << 20  # bytes written to Redis and not yet taken by the socket
CONNECT_TIMEOUT = 1.0  # s to connect and set up a connection
CHECKPOINT_EVERY = 1.0  # s between confirmations of what the publisher wrote
RESET_EVERY = 1.0  # s: resets asked for by other nodes are coalesced to one per this
RESET_KEY = "!reset"  # envelope key on the all-nodes channel
UNSUBSCRIBE_AFTER = 10.0  # s a channel stays subscribed with no interest (phones reconnect often)
READY_TIMEOUT = 2.0  # s ready() waits for a SUBSCRIBE confirmation
TOPOLOGY_EVERY = 5.0  # s between reads of a cluster's slot map while all is well
TOPOLOGY_RETRY = 0.25  # s between reads while a link is down or the map is incomplete
CLUSTER_ERRORS = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")  # the slot map may have changed


class _Link:
    """One Redis server the bus uses: its publisher and its subscriber."""

    def __init__(self, bus: RedisBus, url: str) -> None:
        self.bus = bus
        self.url = url
        self.sub: resp.RespConnection | None = None  # the subscriber, while connected
        self.pub: resp.RespConnection | None = None
        self.pub_connecting = False
        self.out: list[bytes] = []  # packed PUBLISH commands not written yet
        self.flushing = False
        self.confirmed: set[str] = set()  # channels SUBSCRIBE confirmed on the current connection
        self.up = False  # subscribed to every channel it carries
        self.token = 0  # the PING token whose answer marks the link up
        self.broken = ""  # set: the subscriber drops its connection (and the node resyncs)
        self.running = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.running = True
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self._listen(), name=f"chatd-bus-listen {self.url}"),
            loop.create_task(self._watch_pub(), name=f"chatd-bus-publisher {self.url}"),
        ]

    async def stop(self) -> None:
        """Stop both loops; what is queued stays in ``out`` (``final_flush``)."""
        self.running = False
        self.up = False
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.flushing = False

    def drop(self) -> None:
        """Taken out of the slot map (its master failed over): close without waiting;
        what it had queued or not confirmed is lost."""
        self.running = False
        self.up = False
        for task in self.tasks:
            task.cancel()
        if self.out:
            self.bus._lost(len(self.out), f"{self.url} left the cluster")
            self.out.clear()
        if self.pub is not None:
            self.pub.close("left the cluster")  # unconfirmed: counted lost in _pub_closed
        if self.sub is not None:
            self.sub.close("left the cluster")

    # -- publish -------------------------------------------------------------

    def publish(self, command: bytes) -> None:
        pub = self.pub
        if not self.up and (pub is None or not pub.is_open):
            # other nodes miss it: they are told to resync when we are back
            self.bus._lost(1, "")
            return
        if len(self.out) >= MAX_QUEUED:  # Redis is not keeping up
            self.bus._lost(1, "publish queue full")
            return
        self.out.append(command)
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this loop turn published, in one write."""
        self.flushing = False
        if not self.out or not self.running:
            return
        pub = self.pub
        if pub is None or not pub.is_open:
            if not self.pub_connecting:
                self.pub_connecting = True
                self.bus._spawn(self._connect_pub())
            return
        if pub.buffered > MAX_BUFFERED:  # Redis stopped reading
            pub.close("Redis is not reading what we publish")  # counted as lost in _pub_closed
            return
        batch, self.out = self.out, []
        try:
            pub.write(b"".join(batch), len(batch))
        except ConnectionError as exc:
            self.bus._lost(len(batch), str(exc))
            return
        self.bus.published += len(batch)

    async def _connect_pub(self) -> None:
        conn: resp.RespConnection | None = None
        bus = self.bus
        try:
            conn = await resp.connect(self.url)
            conn.on_reply = self._on_publish_reply
            # refused here (an ACL without PUBLISH, a replica) rather than silently
            # once replies are off
            await asyncio.wait_for(conn.call(bus.pub_command, bus.probe_channel(self), b""), CONNECT_TIMEOUT)
            if not bus.cluster:
                await asyncio.wait_for(conn.replies_off(), CONNECT_TIMEOUT)
        except (OSError, ConnectionError, ValueError, TimeoutError, resp.RespError) as exc:
            if conn is not None:
                conn.close(f"setup failed: {exc!r}")
            if isinstance(exc, resp.RespError):
                bus.cluster_error(str(exc))
            bus._lost(len(self.out), f"publish connection to {self.url} failed: {exc!r}")
            self.out.clear()
            return
        except BaseException:  # cancelled (stop)
            if conn is not None:
                conn.close("stopped")
            raise
        finally:
            self.pub_connecting = False
        if not self.running:
            conn.close("stopped")
            return
        conn.closed.add_done_callback(lambda _: self._pub_closed(conn))
        self.pub = conn
        if bus._owe_reset and bus.up:
            bus._queue_reset()
        self._flush()

    async def final_flush(self, extra: list[bytes]) -> None:
        """At stop (every deploy): what is queued (and ``extra``) goes out and Redis
        confirms it, within about 1.5 s; said in the log if not."""
        pub = self.pub
        self.out += extra
        if not self.out and (pub is None or not pub.unconfirmed):
            if pub is not None:
                pub.close("stopped", flush=True)
            return
        refused: list[str] = []
        try:
            if pub is None or not pub.is_open:
                pub = await resp.connect(self.url, CONNECT_TIMEOUT)
            # a cluster answers every publish: one refused (MOVED) did not arrive
            pub.on_reply = lambda value: refused.append(str(value)) if isinstance(value, resp.RespError) else None
            if self.out:
                pub.write(b"".join(self.out), len(self.out))
                self.bus.published += len(self.out)
                self.out.clear()
            await asyncio.wait_for(pub.confirm(), 0.5)
            if refused:
                log.warning(
                    "bus: at stop, Redis refused %d envelopes (%s); other nodes were not told", len(refused), refused[0]
                )
        except (OSError, ConnectionError, ValueError, TimeoutError, resp.RespError) as exc:
            log.warning("bus: at stop, envelopes may not have reached Redis (%r); other nodes were not told", exc)
        finally:
            if pub is not None:
                pub.close("stopped", flush=True)

    def _on_publish_reply(self, value: object) -> None:
        # replies on: a cluster (or a server without CLIENT REPLY); an integer per publish
        if isinstance(value, resp.RespError):
            self.bus._lost(1, f"PUBLISH refused by {self.url}: {value}")
            self.bus.cluster_error(str(value))

    def _pub_closed(self, conn: resp.RespConnection) -> None:
        if conn is self.pub:
            self.pub = None
        if conn.unconfirmed_at_close and self.bus._running:
            # what it wrote since Redis last confirmed may or may not have arrived
            self.bus._lost(conn.unconfirmed_at_close, conn.reason)
        if self.out and self.running:
            self.schedule_flush()

    async def _watch_pub(self) -> None:
        """Confirm what the publisher wrote (replies are off) once a second; a
        publisher whose confirmations (or replies) stop coming is closed (and
        counted lost)."""
        bus = self.bus
        while self.running:
            await asyncio.sleep(CHECKPOINT_EVERY)
            if bus._owe_reset and bus.up:
                bus._queue_reset()
            pub = self.pub
            if pub is None or not pub.is_open:
                continue
            if pub.unanswered and time.monotonic() - pub.waiting_since > DEAD_AFTER:
                pub.close(f"no answer from Redis to the publisher for {DEAD_AFTER:.0f} s")
            elif pub.unconfirmed and not pub.unanswered:
                pub.checkpoint()

    # -- subscribe -------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.1
        bus = self.bus
        while self.running:
            conn: resp.RespConnection | None = None
            try:
                conn = await resp.connect(self.url)
                conn.on_push = self._on_push
                self.sub = conn
                self.subscribe(bus.wanted_on(self), on=conn)
                pinged = time.monotonic()
                while self.running:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(conn.closed), 0.5)
                    if conn.closed.done():
                        raise ConnectionError(conn.reason)
                    if self.broken:
                        raise ConnectionError(self.broken)
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
                if self.up:
                    log.warning("bus: lost Redis at %s (%s); reconnecting", self.url, exc)
                bus.cluster_error("link lost")
            except Exception:  # never let the listener die: that is the bug to avoid
                log.exception("bus: listener error; reconnecting")
            finally:
                if self.up:  # it was working: try again soon
                    backoff = 0.1
                self.sub = None
                self.broken = ""
                self.up = False
                self.confirmed.clear()
                bus._link_changed()
                if conn is not None:
                    conn.close("reconnecting")
            if self.running:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def subscribe(self, channels: Iterable[str], on: resp.RespConnection | None = None) -> None:
        """SUBSCRIBE on the live connection, then the PING whose answer marks the link
        up again; without a connection, the next one subscribes to every channel
        with interest anyway. On a cluster each SSUBSCRIBE names one slot's channels."""
        sub = on or self.sub
        if sub is None or not sub.is_open:
            return
        commands = self.bus.subscribe_commands(channels)
        self.token += 1
        self.up = False
        commands.append(resp.pack("PING", f"up {self.token}"))
        sub.write(b"".join(commands), len(commands))
        self.bus._link_changed()

    def subscribe_one(self, channel: str) -> None:
        """A channel that gained interest: SUBSCRIBE with no change to ``up`` (its
        ``ready()`` waits for the confirmation)."""
        sub = self.sub
        if sub is not None and sub.is_open:
            sub.write(b"".join(self.bus.subscribe_commands((channel,))), 1)

    def unsubscribe(self, channel: str) -> None:
        sub = self.sub
        if channel in self.confirmed and sub is not None and sub.is_open:
            # not confirmed from now on: interest arriving meanwhile re-subscribes
            # and its ready() waits for that
            self.confirmed.discard(channel)
            sub.send(self.bus.unsub_command, channel)

    def _on_push(self, value: object) -> None:
        """Everything the subscriber connection receives, as it is parsed."""
        bus = self.bus
        if not isinstance(value, list) or not value:
            if isinstance(value, resp.RespError):
                if not bus.moved(str(value), self.url):  # a moved slot is not a broken connection
                    self.broken = f"Redis: {value}"
                    bus.cluster_error(str(value))
            elif isinstance(value, bytes):  # PING's answer before any subscription
                self._pong(value)
            return
        kind = value[0]
        if kind == bus.message_kind and len(value) == 3:
            bus._on_message(value[2])
            return
        if len(value) < 2:
            return
        if kind == b"pong":
            self._pong(value[1])
            return
        channel = value[1].decode() if isinstance(value[1], bytes) else ""
        if kind == bus.subscribed_kind:
            self.confirmed.add(channel)
            bus._release_waiters(channel)
        elif kind == bus.unsubscribed_kind:
            self.confirmed.discard(channel)
            if bus.counts.get(channel, 0) > 0:
                bus.resubscribe(channel, self.url)

    def _pong(self, data: object) -> None:
        if data == f"up {self.token}".encode() and not self.up and not self.broken:
            self.up = True
            self.bus._link_changed()


class RedisBus:
    shared = True  # other nodes may exist whenever Redis is used

    def __init__(self, url: str, shards: int = 1024, prefix: str = "chatd") -> None:
        self.url = url
        self.cluster = redisurl.is_cluster(url)
        self.seeds = [redisurl.node_url(url, h, p) for h, p in redisurl.seeds(url)] if self.cluster else [url]
        self.shards = shards
        self.prefix = prefix
        self.node = os.urandom(4).hex()
        self._node_b = self.node.encode()
        self._control = f"{prefix}:n:{self.node}"  # always subscribed: a connection loss is noticed
        self._all = f"{prefix}:n:all"  # always subscribed: resets asked for by other nodes
        if self.cluster:
            self.pub_command, self.sub_command, self.unsub_command = "SPUBLISH", "SSUBSCRIBE", "SUNSUBSCRIBE"
            self.message_kind, self.subscribed_kind, self.unsubscribed_kind = b"smessage", b"ssubscribe", b"sunsubscribe"
        else:
            self.pub_command, self.sub_command, self.unsub_command = "PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE"
            self.message_kind, self.subscribed_kind, self.unsubscribed_kind = b"message", b"subscribe", b"unsubscribe"
        self.handler: BusHandler | None = None
        # channel -> local interest (0: unsubscribe on next sweep); the node's own
        # two channels always have one
        self.counts: dict[str, int] = {self._control: 1, self._all: 1}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.links: dict[str, _Link] = {}  # url -> link
        self._only: _Link | None = None  # one server: its link (every channel's)
        self._slot_links: list[_Link | None] = []  # a cluster: slot -> its master's link
        self._slot_of: dict[str, int] = {}  # channel -> hash slot (a cache)
        self._probes: dict[str, str] = {}  # link url -> a channel on it nobody subscribes to
        self._map_wanted = asyncio.Event()  # a cluster: read the slot map now
        self._map_hint: str | None = None  # a cluster: the node to ask first (it just moved a slot away)
        self._orphans: set[str] = set()  # a cluster: channels the server dropped, subscribed again after the map read
        self._owe_reset = False  # envelopes were lost: tell every node to resync when we can
        self._last_reset = 0.0
        self._reset_timer: asyncio.TimerHandle | None = None
        self.remote_resets = 0
        self._side: set[asyncio.Task[None]] = set()
        self._up = False
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._first = asyncio.Event()
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.resets = 0
        self.malformed = 0
        self.map_changes = 0
        self.moved_answers = 0  # MOVED/ASK answered to a subscriber (a cluster)

    # -- lifecycle ---------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def attach(self, handler: BusHandler) -> None:
        self.handler = handler

    async def start(self, wait: float = 2.0) -> None:
        """Start the subscribers; wait up to ``wait`` s for Redis (the node serves
        without it meanwhile: /healthz says not ready until the bus is up)."""
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sweep(), name="chatd-bus-sweep")]
        if self.cluster:
            self._tasks.append(loop.create_task(self._watch_map(), name="chatd-bus-slot-map"))
        else:
            self._only = _Link(self, self.url)
            self.links[self.url] = self._only
            self._only.start()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first.wait(), wait)
        if not self._up:
            log.warning(
                "bus: Redis at %s is not reachable yet; serving without cross-process fan-out", redisurl.redact(self.url)
            )

    async def stop(self) -> None:
        self._running = False
        self._up = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        links = list(self.links.values())
        for link in links:
            await link.stop()
        self._release_waiters()
        if self._reset_timer is not None:
            self._reset_timer.cancel()
        side = list(self._side)
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        reset: dict[str, list[bytes]] = {}
        if self._owe_reset:
            self._owe_reset = False
            home = self.route(self._all)
            if home is not None:
                reset[home.url] = [self._reset_envelope()]
        await asyncio.gather(*(link.final_flush(reset.get(link.url, [])) for link in links))

    # -- routing ----------------------------------------------------------------

    def route(self, channel: str) -> _Link | None:
        """The link that carries ``channel`` (None: a cluster whose map is not known
        or does not cover its slot)."""
        if self._only is not None:
            return self._only
        slot = self._slot_of.get(channel)
        if slot is None:
            slot = self._slot_of[channel] = redisurl.slot(channel)
        return self._slot_links[slot] if self._slot_links else None

    def wanted_on(self, link: _Link) -> list[str]:
        return [c for c, n in self.counts.items() if n > 0 and self.route(c) is link]

    def subscribe_commands(self, channels: Iterable[str]) -> list[bytes]:
        """SUBSCRIBE commands for ``channels``: one for them all on one server; on a
        cluster one per hash slot (SSUBSCRIBE's channels must share one)."""
        chans = list(channels)
        if not chans:
            return []
        if not self.cluster:
            return [resp.pack(self.sub_command, *chans)]
        by_slot: dict[int, list[str]] = {}
        for c in chans:
            by_slot.setdefault(redisurl.slot(c), []).append(c)
        return [resp.pack(self.sub_command, *cs) for cs in by_slot.values()]

    def probe_channel(self, link: _Link) -> str:
        """A channel on ``link`` that nobody subscribes to: the PUBLISH permission check."""
        probe = f"{self.prefix}:n:probe"
        if not self.cluster:
            return probe
        found = self._probes.get(link.url)
        if found is None:
            # 65,536 tags reach every slot; a master with none of them keeps the plain name
            found = next((f"{probe}:{{{i}}}" for i in range(1 << 16) if self.route(f"{probe}:{{{i}}}") is link), probe)
            self._probes[link.url] = found
        return found

    # -- the cluster's slot map ----------------------------------------------------

    def resubscribe(self, channel: str, dropped_by: str) -> None:
        """A channel still wanted was unsubscribed. On one server, interest came back
        while it was unsubscribing: subscribed again at once. On a cluster the server
        dropped it because its slot moved: subscribed again once the slot map is read
        again, from the node that dropped it first (it knows the new owner). The old
        route would answer MOVED."""
        if not self.cluster:
            link = self.route(channel)
            if link is not None:
                link.subscribe_one(channel)
            return
        self._orphans.add(channel)
        self._map_hint = dropped_by
        self.cluster_error("a channel was unsubscribed by the server")

    def moved(self, error: str, at: str) -> bool:
        """A subscriber's ``MOVED <slot> <host:port>`` (or ASK): the channels of that
        slot are subscribed again after the map is read, from that node first; the
        link's other channels are not disturbed. False for any other error."""
        parts = error.split()
        if not self.cluster or len(parts) != 3 or parts[0] not in ("MOVED", "ASK") or not parts[1].isdigit():
            return False
        slot = int(parts[1])
        self.moved_answers += 1
        self._orphans.update(c for c, n in self.counts.items() if n > 0 and redisurl.slot(c) == slot)
        host, _, port = parts[2].rpartition(":")
        if port.isdigit():
            self._map_hint = redisurl.node_url(self.url, host or urlsplit(at).hostname or "localhost", int(port))
        self.cluster_error(parts[0])
        return True

    def _adopt_orphans(self) -> None:
        """After a map read: the channels the server dropped, subscribed where they
        live. Their link counts as down until that is confirmed, and coming up again
        resyncs every socket: what was published to them meanwhile reached nobody."""
        orphans, self._orphans = self._orphans, set()
        by_link: dict[_Link, list[str]] = {}
        for channel in orphans:
            link = self.route(channel) if self.counts.get(channel, 0) > 0 else None
            if link is not None and channel not in link.confirmed:
                by_link.setdefault(link, []).append(channel)
        for link, channels in by_link.items():
            link.subscribe(channels)

    def cluster_error(self, why: str) -> None:
        """A sign the slot map may have changed: read it again now."""
        if self.cluster and (why == "link lost" or why.startswith(CLUSTER_ERRORS) or "unsubscribed" in why):
            self._map_wanted.set()

    async def _watch_map(self) -> None:
        failing = False
        while self._running:
            try:
                ranges = await self._read_map()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per outage, not every 0.25 s
                    log.warning("bus: no node of the cluster gave its slot map (%s); retrying", exc)
                failing = True
                ranges = None
            else:
                failing = False
            if ranges is not None:
                self._apply_map(ranges)
                self._adopt_orphans()
            self._map_wanted.clear()
            healthy = self._up and ranges is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._map_wanted.wait(), TOPOLOGY_EVERY if healthy else TOPOLOGY_RETRY)

    async def _read_map(self) -> list[tuple[int, int, str]]:
        """``CLUSTER SLOTS`` from the first node that answers: the masters known,
        then the URL's seeds."""
        tried: list[str] = []
        hint, self._map_hint = self._map_hint, None
        for url in dict.fromkeys([*([hint] if hint else []), *self.links, *self.seeds]):
            conn: resp.RespConnection | None = None
            try:
                conn = await resp.connect(url, CONNECT_TIMEOUT)
                reply = await asyncio.wait_for(conn.call("CLUSTER", "SLOTS"), CONNECT_TIMEOUT)
                return self._parse_map(reply, url)
            except (OSError, ConnectionError, ValueError, TimeoutError, resp.RespError) as exc:
                tried.append(f"{url}: {exc}")
            finally:
                if conn is not None:
                    conn.close("slot map read")
        raise ConnectionError("; ".join(tried) or "no seeds")

    def _parse_map(self, reply: Any, asked: str) -> list[tuple[int, int, str]]:
        if not isinstance(reply, list):
            raise ValueError(f"CLUSTER SLOTS answered {reply!r}")
        asked_host = urlsplit(asked).hostname or "localhost"
        out = []
        for entry in reply:
            start, end, master = entry[0], entry[1], entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) and master[0] else asked_host
            if host == "?":  # the node does not know its address yet
                continue
            out.append((int(start), int(end), redisurl.node_url(self.url, host, int(master[1]))))
        return out

    def _apply_map(self, ranges: list[tuple[int, int, str]]) -> None:
        slot_urls: list[str | None] = [None] * redisurl.SLOTS
        for start, end, url in ranges:
            for s in range(max(start, 0), min(end, redisurl.SLOTS - 1) + 1):
                slot_urls[s] = url
        current = [link.url if link is not None else None for link in self._slot_links]
        if slot_urls == current:
            return
        self.map_changes += 1
        self._probes.clear()  # a probe whose slot moved would be refused (MOVED) on every reconnect
        before = {c: self.route(c) for c, n in self.counts.items() if n > 0}
        masters = {u for u in slot_urls if u is not None}
        gone = [link for url, link in self.links.items() if url not in masters]
        for link in gone:
            del self.links[link.url]
            link.drop()
            self._spawn(link.stop())
        for url in masters - set(self.links):
            self.links[url] = _Link(self, url)
        self._slot_links = [self.links[u] if u is not None else None for u in slot_urls]
        log.info(
            "bus: cluster slot map %s: %d masters%s",
            "read" if not current else "changed",
            len(masters),
            "" if None not in slot_urls else f", {slot_urls.count(None)} slots unserved",
        )
        moved: dict[_Link, list[str]] = {}
        for channel, old in before.items():
            new = self.route(channel)
            if new is not old and new is not None:
                moved.setdefault(new, []).append(channel)
        for link in self.links.values():
            if not link.running:
                link.start()  # its first connection subscribes to what it carries
            elif link in moved:
                link.subscribe(moved[link])
        self._link_changed()

    # -- state -------------------------------------------------------------------

    def _link_changed(self) -> None:
        """A link went up or down: the bus is up while every link is (and, on a
        cluster, the map serves every slot)."""
        links = self.links.values()
        complete = self._only is not None or (bool(self._slot_links) and None not in self._slot_links)
        up = self._running and complete and bool(links) and all(link.up for link in links)
        if up == self._up:
            return
        self._up = up
        if not up:
            self._release_waiters()
            return
        self._first.set()
        self.resets += 1
        self._last_reset = time.monotonic()
        if self._owe_reset:  # our envelopes were lost meanwhile: the others resync too
            self._queue_reset()
        log.info(
            "bus: subscribed to %d channels on %d Redis server(s)",
            sum(len(link.confirmed) for link in links),
            len(self.links),
        )
        if self.handler is not None:
            try:
                self.handler.bus_reset()
            except Exception:
                log.exception("bus: reset handler failed")

    def health(self) -> dict[str, int]:
        """Links (Redis servers) in use and how many are up."""
        return {"links": len(self.links), "links_up": sum(link.up for link in self.links.values())}

    # -- interest ------------------------------------------------------------

    def channel(self, key: str) -> str:
        return channel_of(self.prefix, key, self.shards)

    @property
    def confirmed(self) -> set[str]:
        """Every channel subscribed and confirmed, on every link."""
        return set().union(*(link.confirmed for link in self.links.values()))

    def interest(self, key: str, delta: int) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        before = self.counts.get(channel, 0)
        self.counts[channel] = before + delta
        if before <= 0 < before + delta:
            link = self.route(channel)
            if link is not None and channel not in link.confirmed:
                link.subscribe_one(channel)

    async def ready(self, key: str) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        link = self.route(channel)
        if not self._up or link is None or channel in link.confirmed or self.counts.get(channel, 0) <= 0:
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

    async def _sweep(self) -> None:
        while self._running:
            await asyncio.sleep(UNSUBSCRIBE_AFTER)
            for channel in [c for c, n in self.counts.items() if n <= 0]:
                del self.counts[channel]
                link = self.route(channel)
                if link is not None:
                    link.unsubscribe(channel)

    # -- publish -------------------------------------------------------------

    def publish(self, key: str, payload: bytes) -> None:
        channel = channel_of(self.prefix, key, self.shards)
        link = self.route(channel)
        if link is None:
            self._lost(1, "")
            return
        link.publish(resp.pack(self.pub_command, channel, self._envelope(key, payload)))

    def _envelope(self, key: str, payload: bytes) -> bytes:
        k = key.encode()
        return b"".join((self._node_b, len(k).to_bytes(2, "big"), k, payload))

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
        self._owe_reset = True  # sent when the bus is up or, within a second, by a link's _watch_pub

    def _queue_reset(self) -> None:
        """Publish a reset on the all-nodes channel: every node that may have
        missed our envelopes drops its caches and has its clients catch up."""
        home = self.route(self._all)
        if home is None:
            return
        self._owe_reset = False
        home.out.append(self._reset_envelope())
        home.schedule_flush()

    def reset_all(self, why: str) -> None:
        log.warning("bus: every node resyncs (%s)", why)
        self._remote_reset()  # this node (coalesced like the others')
        if self._up:
            self._queue_reset()
        else:
            self._owe_reset = True

    def _reset_envelope(self) -> bytes:
        return resp.pack(self.pub_command, self._all, self._envelope(RESET_KEY, b"\x00"))

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

    # -- receive -------------------------------------------------------------

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

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.confirmed),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "resets": self.resets,
            "remote_resets": self.remote_resets,
            "malformed": self.malformed,
            "map_changes": self.map_changes,
            **self.health(),
        }
