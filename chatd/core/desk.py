"""The service desk's moving parts: coalesced ``inbox`` pushes and the
overdue scan (docs/service-groups.md, "Staff inbox" and "Response clocks").

- :class:`InboxPushes`: whatever changes a service group's inbox row (a
  message, a request, a close, an alert) *touches* it; one shared timer pushes
  each touched group's row a second after its first change (at most once per
  interval from this process), on the group's topic to every follower but the
  owner (the row is the staff's), so a busy group cannot flood a staff desktop;
  many due at once go out a slice per tick, each round's writes corked. A push that fails
  to read the store is kept for the next round: the row is pushed later, not lost.
- :class:`ServiceClocks`: a scheduler job (one process at a time, under its
  lease) that alerts the Fellow of an overdue group, escalates past the second
  threshold to the staff with the policy's badge, and closes idle episodes.
  Each alert level is recorded in the group's row in the same transaction that
  decides it, so a deployment alerts once per wait whichever process scans.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ..clock import Clock, Timer
from ..policy import ServicePolicy
from ..store.base import Campaigns, ServiceDesk
from ..store.records import SystemMessage
from .fanout import Fanout
from .pipeline import Pipeline

log = logging.getLogger("chatd.desk")

CAMPAIGN_CHUNK = 100  # groups per transaction: chat writes batched with a chunk wait for it (p99 ≤ 50 ms)
PUSH_EVERY = 1.0  # s: at most one inbox push per group this often, from each process
PUSH_SLICE = 100  # rows per push round
PUSH_TICK = 0.01  # s between rounds while more are due
SCAN_EVERY = 1.0  # s
SCAN_BATCH = 500
# the author of what the scan writes (an idle episode's close)
SYSTEM_ACTOR = ("chatd", {"name": "chatd", "type": "bot", "badges": [], "roles": []}, True)


class Corking(Protocol):
    """The edge's output (``chatd.edge.sink.Output``): writes between cork and
    uncork go out as one per socket."""

    def cork(self) -> None: ...

    def uncork(self) -> None: ...


class InboxPushes:
    def __init__(
        self, repo: ServiceDesk, fanout: Fanout, clock: Clock, output: Corking, owner_of: Callable[[str], str],
        every_s: float = PUSH_EVERY,
    ) -> None:
        self.output = output
        self.owner_of = owner_of
        self.repo = repo
        self.fanout = fanout
        self.clock = clock
        self.every_s = every_s
        # conv -> when its push is due (monotonic); insertion order is due order
        self._due: dict[str, float] = {}
        self._timer: Timer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.pushed = 0
        self._stopped = False

    def touch(self, conv: str) -> None:
        """``conv``'s row changed: push it ``every_s`` from now (a later change
        before then rides along)."""
        if self._stopped or conv in self._due:
            return
        self._due[conv] = self.clock.monotonic() + self.every_s
        if self._timer is None:
            self._timer = self.clock.call_later(self.every_s, self._fire)

    def _fire(self) -> None:
        """Push the rows that are due, at most PUSH_SLICE at a time: thousands of
        groups touched in one second (a campaign, 2,000 messages a second) go out
        spread over the following ticks, not as one burst that holds up acks."""
        self._timer = None
        now = self.clock.monotonic()
        ready: list[str] = []
        for conv, due in self._due.items():
            if due > now or len(ready) >= PUSH_SLICE:
                break
            ready.append(conv)
        for conv in ready:
            del self._due[conv]
        if ready:
            task = asyncio.get_running_loop().create_task(self._push(ready))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._due:
            first = next(iter(self._due.values()))
            self._timer = self.clock.call_later(max(first - now, PUSH_TICK), self._fire)

    async def _push(self, convs: list[str]) -> None:
        try:
            rows = await self.repo.rows(convs)  # a round is at most PUSH_SLICE groups
        except Exception as exc:  # the store failed: push them next round
            log.warning("inbox rows not read (%r); pushing them later", exc)
            for conv in convs:
                self.touch(conv)
            return
        self.output.cork()  # a staff member's rows of one round go out in one write
        try:
            for row in rows:
                # the staff's row, not the owner's: s:<owner> (the kind's id)
                self.fanout.publish_except(row["conv"], "inbox", row, self.owner_of(row["conv"]))
        finally:
            self.output.uncork()
        self.pushed += len(rows)

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


    def published(self, events: list[SystemMessage]) -> None:
        """After a job's commit: push the system messages it appended, and touch
        their groups' rows."""
        for event in events:
            conv = event.msg["conv"]
            self.fanout.publish(conv, "msg", event.msg)
            self.touch(conv)


class ServiceClocks:
    name = "service.clocks"  # its lease's name: keep it stable

    def __init__(
        self,
        repo: ServiceDesk,
        pipeline: Pipeline,
        fanout: Fanout,
        pushes: InboxPushes,
        policy: ServicePolicy,
        clock: Clock,
        every_s: float = SCAN_EVERY,
        batch: int = SCAN_BATCH,
    ) -> None:
        self.repo = repo
        self.pipeline = pipeline
        self.fanout = fanout
        self.pushes = pushes
        self.policy = policy
        self.clock = clock
        self.every_s = every_s
        self.batch = batch
        self.alerts = 0

    def leased(self) -> None:
        pass

    async def run(self) -> float:
        now = self.clock.wall_ms()
        policy = self.policy
        alerts = await self.pipeline.write(
            self.repo.alert(now, policy.escalate_after_s * 1000, policy.escalate_badge, self.batch)
        )
        for a in alerts:
            push = {k: a[k] for k in ("conv", "level", "reason", "waiting_since", "due")}
            for user in a["to"]:
                self.fanout.user_push(user, "service.alert", push)
            self.pushes.touch(a["conv"])
        self.alerts += len(alerts)
        closed = await self.pipeline.write(
            self.repo.close_idle(now - policy.episode_idle_s * 1000, SYSTEM_ACTOR, now, policy, self.batch),
            self.pushes.published,
        )
        busy = len(alerts) >= self.batch or len(closed) >= self.batch
        return 0.0 if busy else self.every_s


class CampaignPosts:
    """Posts care campaigns into their groups, a chunk per transaction, under a
    lease (one process at a time); between chunks, chat writes waiting go first."""

    name = "service.campaigns"

    def __init__(self, repo: Campaigns, pipeline: Pipeline, pushes: InboxPushes, clock: Clock,
                 chunk: int = CAMPAIGN_CHUNK, idle_s: float = SCAN_EVERY) -> None:
        self.repo = repo
        self.pipeline = pipeline
        self.pushes = pushes
        self.clock = clock
        self.chunk = chunk
        self.idle_s = idle_s
        self.posted = 0

    def leased(self) -> None:
        pass

    async def run(self) -> float:
        events, more = await self.pipeline.write(
            self.repo.post_chunk(self.clock.wall_ms(), self.chunk), lambda result: self.pushes.published(result[0])
        )
        self.posted += len(events)
        if not more:
            return self.idle_s
        return 0.005 if self.pipeline.backlog else 0.0
