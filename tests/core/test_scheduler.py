"""Periodic work under a store lease (chatd/core/scheduler.py): two nodes on
one SQLite file, a ManualClock, real pipelines and fake jobs. Only the lease
holder runs jobs; when it stops renewing, the other takes over once the lease
has run out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import FakeClock, read_db

from chatd.clock import ManualClock
from chatd.core.pipeline import Pipeline
from chatd.core.scheduler import LEASE_MS, Scheduler
from chatd.metrics import Metrics
from chatd.store import Store, open_store

THIRD = LEASE_MS / 3000  # s: a holder renews this far into its lease


class FakeJob:
    name = "job"

    def __init__(self, clock: ManualClock, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        self.runs: list[int] = []  # wall ms of each run
        self.leases = 0

    async def run(self) -> float:
        self.runs.append(self.clock.now)
        return self.delay

    def leased(self) -> None:
        self.leases += 1


@pytest.fixture
async def pipelines(store: Store, db_path: Any) -> AsyncIterator[list[Pipeline]]:
    """One pipeline per node; the second node opens the same file (two processes)."""
    other = open_store(str(db_path), sync="normal")
    await other.open()
    pipes = [Pipeline(store, Metrics()), Pipeline(other, Metrics())]
    for p in pipes:
        p.start()
    yield pipes
    for p in pipes:
        await p.stop()
    await other.close()


def node(pipe: Pipeline, clock: ManualClock, name: str, delay: float = 1.0) -> tuple[Scheduler, FakeJob]:
    sched = Scheduler(pipe, pipe.store.leases, clock, name)
    job = FakeJob(clock, delay)
    sched.add(job)
    return sched, job


def lease_row(db: Path) -> tuple[str, int]:
    ((owner, until),) = read_db(db, "SELECT owner, until FROM leases WHERE name = ?", (FakeJob.name,))
    return str(owner), int(until)


async def test_taking_the_lease_calls_leased_and_runs_the_job(pipelines: list[Pipeline], db_path: Path) -> None:
    clock = ManualClock()
    sched, job = node(pipelines[0], clock, "n1", delay=5.0)
    wait = await sched.tick()
    assert sched.held and job.leases == 1 and job.runs == [clock.now]
    assert lease_row(db_path) == ("n1", clock.now + LEASE_MS)
    assert wait == pytest.approx(THIRD)  # the renewal is due before the job


async def test_the_delay_a_job_returns_is_honoured(pipelines: list[Pipeline]) -> None:
    clock = ManualClock()
    sched, job = node(pipelines[0], clock, "n1", delay=5.0)
    t0 = clock.now
    await sched.tick()
    clock.advance(4.0)  # past a renewal, before the job is due
    wait = await sched.tick()
    assert job.runs == [t0] and job.leases == 1  # renewing is not taking again
    assert wait == pytest.approx(1.0)
    clock.advance(0.9)
    await sched.tick()
    assert job.runs == [t0]
    clock.advance(0.1)
    await sched.tick()
    assert job.runs == [t0, t0 + 5000]


async def test_a_job_that_wants_to_run_again_at_once_runs_every_tick(pipelines: list[Pipeline]) -> None:
    clock = ManualClock()
    sched, job = node(pipelines[0], clock, "n1", delay=0.0)
    waits = [await sched.tick() for _ in range(3)]
    assert len(job.runs) == 3 and waits == [0.0, 0.0, 0.0]


async def test_only_the_lease_holder_runs_jobs(pipelines: list[Pipeline], db_path: Path) -> None:
    clock = ManualClock()
    a, job_a = node(pipelines[0], clock, "a")
    b, job_b = node(pipelines[1], clock, "b")
    await a.tick()
    wait_b = await b.tick()
    assert a.held and not b.held
    assert wait_b == pytest.approx(THIRD)  # it looks again well before the lease could run out
    for _ in range(20):
        clock.advance(1.0)
        await a.tick()
        await b.tick()
    assert len(job_a.runs) == 21 and job_b.runs == [] and job_b.leases == 0
    assert lease_row(db_path)[0] == "a"


async def test_when_the_holder_stops_renewing_the_other_takes_over_after_the_lease(
    pipelines: list[Pipeline], db_path: Path
) -> None:
    clock = ManualClock()
    a, job_a = node(pipelines[0], clock, "a")
    b, job_b = node(pipelines[1], clock, "b")
    await a.tick()
    await b.tick()
    clock.advance(3.5)
    await a.tick()  # a renews, then goes silent (killed, or stuck)
    _, until = lease_row(db_path)
    assert until == clock.now + LEASE_MS
    while not job_b.runs:
        clock.advance(0.25)
        await b.tick()
        assert clock.now <= until + 1000, "b did not take over within the lease"
    assert job_b.runs[0] > until  # not before a's lease ran out
    assert b.held and job_b.leases == 1
    assert lease_row(db_path)[0] == "b"
    # a comes back: it finds the lease taken, and its job does not run
    runs = len(job_a.runs)
    clock.advance(1.0)
    await a.tick()
    assert not a.held and len(job_a.runs) == runs


async def test_the_running_loops_hand_over_when_the_holder_stops(pipelines: list[Pipeline], db_path: Path) -> None:
    clock = FakeClock()
    a, job_a = node(pipelines[0], clock, "a")
    b, job_b = node(pipelines[1], clock, "b")
    a.start()
    try:
        async def a_ran_thrice() -> bool:
            return len(job_a.runs) >= 3

        await clock.run_until(a_ran_thrice, step=0.25)
        b.start()
        for _ in range(4):
            await clock.run_until(a_ran_thrice, step=0.25)
            job_a.runs.clear()
        assert job_b.runs == [] and not b.held
        await a.stop()  # no more renewals
        _, until = lease_row(db_path)
        stopped_runs = list(job_a.runs)

        async def b_ran() -> bool:
            return bool(job_b.runs)

        await clock.run_until(b_ran, step=0.25, within=10)
        assert job_b.runs[0] > until and job_b.leases == 1
        assert job_a.runs == stopped_runs
    finally:
        await a.stop()
        await b.stop()


class BusyJob(FakeJob):
    """Takes ``took`` s of the clock's time per run (a batch of work)."""

    def __init__(self, clock: ManualClock, delay: float, took: float, name: str = "job") -> None:
        super().__init__(clock, delay)
        self.took = took
        self.name = name

    async def run(self) -> float:
        self.clock.advance(self.took)
        return await super().run()


async def test_a_job_that_took_a_while_and_wants_more_runs_again_at_once(pipelines: list[Pipeline]) -> None:
    clock = ManualClock()
    sched = Scheduler(pipelines[0], pipelines[0].store.leases, clock, "n1")
    sched.add(BusyJob(clock, delay=0.0, took=0.02))
    assert await sched.tick() == 0.0  # no pause as long as the job itself took
    paced = Scheduler(pipelines[0], pipelines[0].store.leases, clock, "n2")
    paced.add(BusyJob(clock, delay=0.05, took=0.02, name="paced"))
    assert await paced.tick() == pytest.approx(0.05)  # counted from when it finished


class FailingJob(FakeJob):
    name = "failing"

    async def run(self) -> float:
        await super().run()
        raise RuntimeError("a bad row")


async def test_a_failing_job_backs_off_and_holds_up_no_other(pipelines: list[Pipeline]) -> None:
    clock = ManualClock()
    sched = Scheduler(pipelines[0], pipelines[0].store.leases, clock, "n1")
    failing, fine = FailingJob(clock, 0.0), FakeJob(clock, 0.5)
    sched.add(failing)
    sched.add(fine)
    for _ in range(8):
        await sched.tick()
        clock.advance(0.5)
    assert len(fine.runs) == 8  # every half second, whatever the other does
    assert 2 <= len(failing.runs) <= 4  # retried at 0.5, 1, 2 s... apart, not every tick
    with pytest.raises(ValueError):
        sched.add(FakeJob(clock, 1.0))  # names are leases: one job per name


async def test_each_job_has_its_own_lease_and_only_nodes_with_the_job_compete(
    pipelines: list[Pipeline], db_path: Path
) -> None:
    """A node that does not run a job (``--no-points``) never takes its lease: the
    node that has it runs it, whichever started first."""
    clock = ManualClock()
    without = Scheduler(pipelines[0], pipelines[0].store.leases, clock, "no-points")
    other = FakeJob(clock, 1.0)
    other.name = "expiry"
    without.add(other)
    with_points = Scheduler(pipelines[1], pipelines[1].store.leases, clock, "points-on")
    points = FakeJob(clock, 1.0)
    points.name = "points"
    with_points.add(points)
    await without.tick()
    await with_points.tick()
    assert without.holds("expiry") and with_points.holds("points") and not with_points.holds("expiry")
    assert points.runs and other.runs
    rows = dict(read_db(db_path, "SELECT name, owner FROM leases"))
    assert rows == {"expiry": "no-points", "points": "points-on"}
