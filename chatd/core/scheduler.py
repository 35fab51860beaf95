"""One scheduler for periodic work under a store lease.

Work that one process of a deployment must do, and only one (the points worker,
red-packet expiry; service-group SLA clocks and the live-session lifecycle
next), runs as :class:`Job`\\ s of the process that holds the lease. The lease
is a row in the store, taken and renewed through the same pipeline as chat
writes: holding it, the node renews it a third of the way in; not holding it,
it tries again as soon as the holder's lease runs out, so a node killed with -9
is taken over within the lease (10 s).

Jobs say when they want to run again; time comes from the clock, so tests
drive the scheduler with a :class:`~chatd.clock.ManualClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ..clock import Clock
from ..store.base import Leases
from .pipeline import Pipeline

log = logging.getLogger("chatd.scheduler")

LEASE_MS = 10_000
LEASE_NAME = "scheduler"


class Job(Protocol):
    name: str

    async def run(self) -> float:
        """One round of work. Returns the seconds until the job wants to run
        again (0: as soon as other work of the event loop had its turn)."""
        ...

    def leased(self) -> None:
        """This node just took the lease (another node may have run the job until now)."""
        ...


class Scheduler:
    def __init__(
        self, pipeline: Pipeline, leases: Leases, clock: Clock, node: str, lease_ms: int = LEASE_MS
    ) -> None:
        self.pipeline = pipeline
        self.leases = leases
        self.clock = clock
        self.node = node
        self.lease_ms = lease_ms
        self.jobs: list[Job] = []
        self.held = False
        self._renew_at = 0.0  # monotonic: when to take or renew the lease again
        self._due: dict[str, float] = {}  # job name -> monotonic time it wants to run
        self._task: asyncio.Task[None] | None = None

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    def start(self) -> None:
        if self.jobs and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="chatd-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                wait = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler error; retrying in 1 s")
                wait = 1.0
            if wait > 0:
                await self.clock.sleep(wait)
            else:
                await asyncio.sleep(0)

    async def tick(self) -> float:
        """Renew the lease if due, run the jobs that are due; the seconds until
        something is due again."""
        now = self.clock.monotonic()
        if now >= self._renew_at:
            await self._lease(now)
        if not self.held:
            return max(0.0, self._renew_at - now)
        wait = self._renew_at - now
        for job in self.jobs:
            due = self._due.get(job.name, 0.0)
            if now >= due:
                again = await job.run()
                due = self.clock.monotonic() + again
                self._due[job.name] = due
            wait = min(wait, due - now)
        return max(0.0, wait)

    async def _lease(self, now: float) -> None:
        was = self.held
        wall = self.clock.wall_ms()
        self.held, until = await self.pipeline.write(self.leases.take(LEASE_NAME, self.node, wall, self.lease_ms))
        third = self.lease_ms / 3000
        # holding it: renew a third of the way in; not: try again when it runs out
        self._renew_at = now + (third if self.held else min(third, max(0.05, (until - wall) / 1000 + 0.01)))
        if self.held and not was:
            self._due.clear()
            for job in self.jobs:
                job.leased()
