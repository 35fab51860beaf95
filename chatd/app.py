"""Composition root: config -> store, pipeline, hub, directory, server.

Everything is built here with constructor injection; feature modules never
build their own collaborators.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool

from .bus import Bus, make_bus
from .bus.redis import RedisBus
from .config import Config
from .directory import Directory
from .fanout import Fanout
from .hub import Hub
from .interactions import Interactions
from .metrics import Metrics
from .output import Output
from .pipeline import Pipeline
from .points.model import entry_point_hooks, load_ref
from .points.rules import RulesHook
from .points.stream import StreamHook
from .points.worker import PointsWorker
from .presence import MemoryPresence, Presence, PresenceBackend, RedisPresence
from .server import SocketServer
from .services import Services
from .store import Store
from .store.messages import head

log = logging.getLogger("chatd.app")


class App:
    def __init__(self, config: Config) -> None:
        config.check()
        self.config = config
        metrics = Metrics()
        store = Store(config.db_path, sync=config.sync)
        output = Output()
        bus = make_bus(config.redis_url, config.bus_shards, config.bus_prefix)
        hub = Hub(metrics)

        async def ready(conv: str) -> None:
            await bus.ready("c:" + conv)

        directory = Directory(store, ready=ready)
        backend: PresenceBackend
        if isinstance(bus, RedisBus):
            # a pool of its own, bounded and waiting when busy: a burst of presence
            # changes (a Redis restart re-puts every device) must not starve the bus
            pool = BlockingConnectionPool.from_url(
                config.redis_url or "", max_connections=16, timeout=5, socket_connect_timeout=1, socket_timeout=2
            )
            backend = RedisPresence(
                aioredis.Redis(connection_pool=pool), bus.node, config.bus_prefix, config.presence_lease_ms
            )
            backend.on_node_dead = lambda dead: bus.reset_all(f"node {dead} died; it may not have published all it committed")
        else:
            backend = MemoryPresence(bus.node)
        fanout = Fanout(hub, directory, bus, store, metrics)
        presence = Presence(backend, bus, config.clock, config.presence_max_subs, config.presence_lease_ms)
        fanout.presence = presence
        self.svc = Services(
            config=config,
            store=store,
            pipeline=Pipeline(store, metrics, output, config.max_batch),
            hub=hub,
            directory=directory,
            metrics=metrics,
            interactions=Interactions(metrics),
            output=output,
            bus=bus,
            fanout=fanout,
            presence=presence,
        )
        self.server = SocketServer(self.svc)
        # with --no-points the hooks do not run, but their cursors exist from the
        # first start: a later start with points on awards what happened meanwhile
        self.points = PointsWorker(
            store,
            self.svc.pipeline,
            fanout,
            self._hooks(config, bus),
            bus.node,
            config.clock,
            config.points_day_offset_h,
            config.hook_timeout_s,
            yield_s=config.points_yield_ms / 1000,
        )

        def bus_stats() -> dict[str, int]:
            return {
                **bus.stats(),
                "up": int(bus.up),
                "gaps_filled": fanout.gaps_filled,
                "presence_errors": presence.errors,
            }

        metrics.bus_stats = bus_stats
        worker = self.points
        metrics.points_stats = lambda: {"lag_s": worker.lag_ms / 1000, "awards": worker.awards, "yields": worker.yields}
        self.port = 0

    @staticmethod
    def _hooks(config: Config, bus: Bus) -> list[Any]:
        """The built-in rules hook, then entry-point hooks, then configured ones,
        then the Redis stream forwarder if asked for."""
        hooks: list[Any] = [RulesHook.from_file(config.points_rules) if config.points_rules else RulesHook()]
        hooks += entry_point_hooks()
        hooks += [load_ref(ref) for ref in config.points_hooks]
        if config.points_stream:
            assert isinstance(bus, RedisBus)
            hooks.append(StreamHook(bus.client, config.points_stream))
        return hooks

    async def start(self) -> None:
        await self.svc.store.open()
        self.svc.pipeline.head = await head(self.svc.store)
        self.svc.pipeline.start()
        await self.svc.bus.start()
        self.svc.presence.start()
        await self.points.init()
        if self.config.points:
            self.points.start()
        self.port = await self.server.start()
        log.info("chatd listening on ws://%s:%d/ (db %s)", self.config.host, self.port, self.config.db_path)

    async def stop(self) -> None:
        await self.server.drain()
        await self.svc.pipeline.stop()
        await self.points.stop()
        await self.svc.presence.stop()
        await self.svc.fanout.stop()
        await self.svc.bus.stop()
        await self.svc.store.close()
        log.info("chatd stopped")
