"""One scheduler for periodic work, each job under a store lease.

Work that one process of a deployment must do, and only one (the points worker,
red-packet expiry; service-group SLA clocks and the live-session lifecycle
next), runs as :class:`Job` s of a scheduler. Each job has a lease of its own
(a row in the store, taken and renewed through the same pipeline as chat
writes), so only processes that have a job compete for it (a ``--no-points``
process never keeps the points hooks from running elsewhere), and a job that
keeps failing holds up no other. Holding a lease, the node renews it a third
of the way in; not holding it, it tries again as soon as the holder's lease
runs out, so a node killed with -9 is taken over within the lease (10 s).

Jobs say when they want to run again; time comes from the clock, so tests
drive the scheduler with a :class:`~chatd.clock.ManualClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock
from ..store.base import Leases
from .pipeline import Pipeline

log = logging.getLogger("chatd.scheduler")

LEASE_MS = 10_000
MAX_BACKOFF = 30.0  # s: a failing job is retried at most this far apart


class Job(Protocol):
    name: str  # its lease's name in the store, too: keep it stable across versions

    async def run(self) -> float:
        """One round of work. Returns the seconds until the job wants to run
        again (0: as soon as other work of the event loop had its turn)."""
        ...

    def leased(self) -> None:
        """This node just took the job's lease (another node may have run it until now)."""
        ...


@dataclass
class _Slot:
    job: Job
    held: bool = False
    renew_at: float = 0.0  # monotonic: when to take or renew the lease again
    due: float = 0.0  # monotonic: when the job wants to run
    failures: int = 0


class Scheduler:
    def __init__(
        self, pipeline: Pipeline, leases: Leases, clock: Clock, node: str, lease_ms: int = LEASE_MS
    ) -> None:
        self.pipeline = pipeline
        self.leases = leases
        self.clock = clock
        self.node = node
        self.lease_ms = lease_ms
        self._slots: dict[str, _Slot] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, job: Job) -> None:
        if job.name in self._slots:
            raise ValueError(f"a job named {job.name!r} is scheduled already")
        self._slots[job.name] = _Slot(job)

    @property
    def jobs(self) -> list[Job]:
        return [slot.job for slot in self._slots.values()]

    def holds(self, name: str) -> bool:
        """Whether this node holds the lease of job ``name`` (runs it)."""
        slot = self._slots.get(name)
        return slot is not None and slot.held

    @property
    def held(self) -> bool:
        """Whether this node holds the lease of every job it has."""
        return bool(self._slots) and all(slot.held for slot in self._slots.values())

    def start(self) -> None:
        if self._slots and self._task is None:
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
            except Exception:  # a lease write failed (the store is unavailable)
                log.exception("scheduler error; retrying in 1 s")
                wait = 1.0
            if wait > 0:
                await self.clock.sleep(wait)
            else:
                await asyncio.sleep(0)

    async def tick(self) -> float:
        """Take or renew the leases that are due, run the held jobs that are
        due; the seconds until something is due again, counted from now (after
        the jobs ran: a job that took a while and wants to run again at once
        gets no pause)."""
        for slot in self._slots.values():
            now = self.clock.monotonic()
            if now >= slot.renew_at:
                await self._lease(slot, now)
            if slot.held and now >= slot.due:
                await self._run_job(slot)
        end = self.clock.monotonic()
        due = min(min(slot.renew_at, slot.due) if slot.held else slot.renew_at for slot in self._slots.values())
        return max(0.0, due - end)

    async def _run_job(self, slot: _Slot) -> None:
        try:
            again = await slot.job.run()
            slot.failures = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            slot.failures += 1
            again = min(MAX_BACKOFF, 0.5 * 2 ** (slot.failures - 1))
            log.exception("scheduled job %s failed (%d in a row); again in %.1f s", slot.job.name, slot.failures, again)
        slot.due = self.clock.monotonic() + again

    async def _lease(self, slot: _Slot, now: float) -> None:
        was = slot.held
        wall = self.clock.wall_ms()
        slot.held, until = await self.pipeline.write(self.leases.take(slot.job.name, self.node, wall, self.lease_ms))
        third = self.lease_ms / 3000
        # holding it: renew a third of the way in; not: try again when it runs out
        slot.renew_at = now + (third if slot.held else min(third, max(0.05, (until - wall) / 1000 + 0.01)))
        if slot.held and not was:
            slot.due = now
            slot.job.leased()
