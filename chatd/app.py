"""Composition root: config -> engines -> core -> kinds -> ops -> edge.

Everything is built here with constructor injection; feature modules never
build their own collaborators, and nothing else picks an engine.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .auth import Verifier
from .bus import make_bus
from .clock import Deadlines
from .config import DEV_SECRET, Config
from .core.desk import CampaignPosts, InboxPushes, ServiceClocks
from .core.directory import Directory
from .core.fanout import Fanout
from .core.hub import Hub
from .core.live import LiveHub, RedisCounter
from .core.outbox import Outbox
from .core.pipeline import Pipeline
from .core.scheduler import Scheduler
from .core.users import UserBook
from .edge import wsframe
from .edge.admin import AdminServer
from .edge.console import console_routes
from .edge.http import Routes, health_routes
from .edge.session import Env, Lifecycle
from .edge.sink import Output
from .edge.ws import SocketServer
from .kinds import default_kinds
from .limits import Limiter, SendLimiter, Throttle
from .limits_shared import SharedSendLimiter
from .logs import Throttled
from .metrics import Metrics
from .notify import load_hooks as notify_hooks
from .notify.worker import NotifyWorker
from .ops import (
    AdminOps,
    CampaignOps,
    Circles,
    DeskOps,
    DirectOps,
    LiveOps,
    Messaging,
    NotifyOps,
    PointsOps,
    PresenceOps,
    ServiceOps,
    SessionOps,
    table,
)
from .ops.base import Commit
from .ops.presence import TYPING_EVERY
from .points.model import entry_point_hooks, load_ref
from .points.rules import RulesHook
from .points.stream import StreamHook
from .points.worker import PointsWorker, RedPacketExpiry
from .policy import ServicePolicy
from .presence import Presence, make_backend
from .store import open_store

log = logging.getLogger("chatd.app")


class App:
    def __init__(self, config: Config) -> None:
        config.check()
        self.config = config
        verifier = Verifier.from_files(
            config.signing_secret, config.token_public_key, config.token_jwks, config.token_algorithms
        )
        clock = self.clock = config.clock
        # -- engines
        metrics = self.metrics = Metrics()
        store = self.store = open_store(config.db_path, sync=config.sync)
        bus = self.bus = make_bus(config.redis_url, config.bus_shards, config.bus_prefix)
        backend = make_backend(config.redis_url, bus.node, config.bus_prefix, config.presence_lease_ms)
        backend.on_node_dead = lambda dead: bus.reset_all(f"node {dead} died; it may not have published all it committed")
        # -- core
        policy = ServicePolicy.from_file(config.service_policy) if config.service_policy else ServicePolicy()
        kinds = self.kinds = default_kinds(policy)
        output = Output()
        pipeline = self.pipeline = Pipeline(store, metrics, output, config.max_batch)
        hub = self.hub = Hub(metrics, wsframe.frame)
        directory = self.directory = Directory(store.conversations, store.blocks, kinds)
        fanout = self.fanout = Fanout(hub, directory, bus, store.messages, store.members, kinds, metrics)
        directory.ready = fanout.conv_ready
        fanout.resync.sign_outs = store.users.sign_outs  # sign-outs whose envelope a bus loss dropped
        presence = self.presence = Presence(
            backend, bus, clock, hub.encode, config.presence_max_subs, config.presence_lease_ms
        )
        fanout.presence = presence
        outbox = Outbox(store.outbox, metrics, kinds, config.points_day_offset_h)
        # -- ops
        commit = Commit(pipeline, fanout, metrics)
        pushes = self.inbox_pushes = InboxPushes(store.desk, fanout, clock, output, kinds.service.owner_of)
        # a user's send budget: shared by every process when they share a Redis
        self.limiter: Limiter = (
            SharedSendLimiter(config.redis_url, config.send_rate, config.send_burst, clock, config.bus_prefix)
            if config.redis_url
            else SendLimiter(config.send_rate, config.send_burst, clock)
        )
        self.live = LiveHub(
            store.live, hub, fanout, pipeline, clock,
            RedisCounter(config.redis_url, bus.node, config.bus_prefix) if config.redis_url else None,
            config.live_attend_s,
        )
        self.ops = table(
            SessionOps(store.members, kinds, clock),
            DirectOps(
                commit, store.conversations, store.blocks, fanout, kinds.dm, clock,
                known_peers=not config.dm_unknown_users, new_per_hour=config.new_dms_per_hour,
            ),
            Circles(
                commit, store.conversations, store.members, directory, fanout, outbox, kinds.circle, clock,
                per_hour=config.circles_per_hour,
            ),
            Messaging(
                pipeline, commit, store.messages, store.members, directory, fanout, outbox,
                self.limiter, metrics, clock, pushes.touch,
                config.max_text, config.recall_window_s, config.read_receipt_max_members,
            ),
            PresenceOps(presence, directory, fanout, Throttle(TYPING_EVERY, clock)),
            PointsOps(commit, store.ledger, fanout, directory, clock, config.red_packet_ttl_s),
            NotifyOps(commit, store.notify, directory),
            AdminOps(commit, store.users, fanout, clock),
            ServiceOps(commit, store.service, fanout, kinds.service, clock, pushes.touch),
            DeskOps(commit, store.desk, directory, pushes, fanout, kinds.service, clock),
            CampaignOps(commit, store.campaigns, fanout, kinds.service, clock),
            LiveOps(commit, store.live, self.live, fanout, kinds.live, self.limiter, clock, config.live_question_max),
            metrics,
            clock,
        )
        # -- periodic work, one process at a time (a store lease). With
        # --no-points the hooks do not run, but their cursors exist from the
        # first start: a later start with points on awards what happened meanwhile
        self.points = PointsWorker(
            outbox, store.outbox, pipeline, fanout, self._hooks(config), clock, config.hook_timeout_s,
            yield_s=config.points_yield_ms / 1000,
        )
        self.scheduler = Scheduler(pipeline, store.leases, clock, bus.node)
        self.scheduler.add(RedPacketExpiry(store.ledger, pipeline, fanout, clock))
        self.clocks = ServiceClocks(store.desk, pipeline, fanout, pushes, policy, clock)
        self.scheduler.add(self.clocks)
        self.campaigns = CampaignPosts(store.campaigns, pipeline, pushes, clock)
        self.scheduler.add(self.campaigns)
        if config.points:
            self.scheduler.add(self.points)
        # offline notifications, only where a hook will deliver them
        hooks = notify_hooks(config.notify_hooks, config.notify_stream, config.redis_url)
        self.notify = NotifyWorker(
            store.notify, pipeline, backend, kinds, hooks, clock, metrics, config.notify_coalesce_s,
            config.hook_timeout_s,
        ) if hooks else None
        if self.notify is not None:
            self.scheduler.add(self.notify)
        # -- edge
        life = Lifecycle()
        users = UserBook(pipeline, store.users, clock)
        auth_failures = Throttled(logging.getLogger("chatd.auth"), clock)
        env = Env(config, clock, self.ops, hub, fanout, presence, store.members, store.messages, pipeline, bus,
                  metrics, output, life, users, auth_failures, verifier, Deadlines(clock))
        routes = {
            **health_routes(life, bus, metrics, pipeline),
            **console_routes(config.signing_secret == DEV_SECRET, clock.wall_ms),
        }
        self.server = SocketServer(env, Routes(routes, life))
        self.admin = (
            AdminServer(
                self.ops, verifier, users, clock, config.admin_host, config.admin_port, config.admin_max_body,
                config.reuse_port,
            )
            if config.admin_port is not None
            else None
        )
        self.admin_port = 0
        self._metrics_sources(metrics)
        self.port = 0

    def _metrics_sources(self, metrics: Metrics) -> None:
        bus, fanout, presence, points, scheduler = self.bus, self.fanout, self.presence, self.points, self.scheduler

        def bus_stats() -> dict[str, int]:
            return {**bus.stats(), "up": int(bus.up), "gaps_filled": fanout.gaps_filled, "presence_errors": presence.errors}

        metrics.bus_stats = bus_stats
        metrics.points_stats = lambda: {
            "lag_s": points.lag_ms / 1000 if scheduler.holds(points.name) else 0,  # else another node runs the hooks
            "awards": points.awards,
            "yields": points.yields,
        }

    @staticmethod
    def _hooks(config: Config) -> list[Any]:
        """The built-in rules hook, then entry-point hooks, then configured ones,
        then the Redis stream forwarder if asked for."""
        hooks: list[Any] = [RulesHook.from_file(config.points_rules) if config.points_rules else RulesHook()]
        hooks += entry_point_hooks()
        hooks += [load_ref(ref) for ref in config.points_hooks]
        if config.points_stream and config.redis_url:
            hooks.append(StreamHook.from_url(config.redis_url, config.points_stream))
        return hooks

    async def start(self) -> None:
        """Start everything; when a step fails (the port in use, the store
        unreadable), stop what had started and raise: nothing is left running,
        no thread keeps the process alive."""
        try:
            await self.store.open()
            self.pipeline.head = await self.store.messages.head()
            self.pipeline.epoch = await self.store.messages.epoch()
            self.pipeline.start()
            await self.bus.start()
            self.presence.start()
            await self.points.init()
            if self.notify is not None:
                await self.notify.init()
            self.scheduler.start()
            if self.admin is not None:  # before the socket server: a failed start stops it in _abort
                self.admin_port = await self.admin.start()
            self.port = await self.server.start()
        except BaseException:
            await self._abort()
            raise
        log.info("chatd listening on ws://%s:%d/ (db %s)", self.config.host, self.port, self.config.db_path)
        if self.admin is not None:
            log.info("admin API on http://%s:%d/v1/", self.config.admin_host, self.admin_port)
        if self.config.signing_secret == DEV_SECRET:
            # loopback only, but a reverse proxy in front makes loopback public
            log.warning(
                "tokens are checked with the development secret: anyone who reaches this port, through a proxy "
                "too, can sign any token; set --secret, --token-public-key or --token-jwks in production"
            )

    async def _abort(self) -> None:
        for step in (
            self._stop_admin,
            self.scheduler.stop,
            self.inbox_pushes.stop,
            self.live.stop,
            self.pipeline.stop,
            self.points.close,
            self._close_notify,
            self.presence.stop,
            self.fanout.stop,
            self.limiter.close,
            self.bus.stop,
            self.store.close,
        ):
            try:
                await asyncio.wait_for(step(), 5)
            except Exception as exc:  # best effort: what failed to start may fail to stop
                log.debug("while stopping after a failed start: %r", exc)

    async def _close_notify(self) -> None:
        if self.notify is not None:
            await self.notify.close()

    async def _stop_admin(self) -> None:
        if self.admin is not None:
            await self.admin.stop()

    async def stop(self) -> None:
        await self._stop_admin()  # no new admin op; those under way finish first
        await self.server.drain()
        await self.scheduler.stop()  # before the pipeline: its jobs write through it
        await self.inbox_pushes.stop()
        await self.live.stop()
        await self.pipeline.stop()
        await self.points.close()
        await self._close_notify()
        await self.presence.stop()
        await self.fanout.stop()
        await self.limiter.close()
        await self.bus.stop()
        await self.store.close()
        log.info("chatd stopped")
