"""The clock every timer takes (chatd/clock.py): ManualClock moves only when
told, firing what fell due in deadline order; SystemClock is the real one."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import pytest

from chatd.clock import Deadlines, ManualClock, SystemClock, Timer


def test_call_later_fires_in_deadline_order_not_call_order() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(3, lambda: fired.append("c"))
    clock.call_later(1, lambda: fired.append("a"))
    clock.call_later(2, lambda: fired.append("b"))
    clock.call_later(2, lambda: fired.append("b2"))  # same deadline: in the order they were set
    assert clock.pending == 4
    clock.advance(1.5)
    assert fired == ["a"]
    clock.advance(10)
    assert fired == ["a", "b", "b2", "c"]
    assert clock.pending == 0


def test_nothing_fires_before_its_deadline_and_it_fires_once() -> None:
    clock = ManualClock()
    fired: list[int] = []
    clock.call_later(1.0, lambda: fired.append(clock.now))
    clock.advance(0.999)
    assert fired == []
    clock.advance(0.001)  # exactly at the deadline
    assert len(fired) == 1
    clock.advance(5)
    assert len(fired) == 1


def test_a_timer_sees_the_time_of_its_own_deadline() -> None:
    clock = ManualClock(start_ms=1_000_000)
    seen: list[tuple[int, float]] = []
    clock.call_later(2, lambda: seen.append((clock.wall_ms(), clock.monotonic())))
    mono = clock.monotonic()
    clock.advance(5)
    assert seen == [(1_002_000, mono + 2)]
    assert clock.now == 1_005_000


def test_cancel() -> None:
    clock = ManualClock()
    fired: list[str] = []
    keep = clock.call_later(1, lambda: fired.append("keep"))
    drop = clock.call_later(1, lambda: fired.append("drop"))
    drop.cancel()
    assert clock.pending == 1
    clock.advance(2)
    assert fired == ["keep"]
    keep.cancel()  # cancelling a timer that fired already is harmless
    assert fired == ["keep"]


def test_a_negative_delay_is_due_now() -> None:
    clock = ManualClock()
    fired: list[bool] = []
    clock.call_later(-5, lambda: fired.append(True))
    clock.advance(0)
    assert fired == [True]


def test_wall_time_moves_by_exactly_the_advanced_ms() -> None:
    clock = ManualClock(start_ms=1_763_900_000_000)
    start_mono = clock.monotonic()
    clock.advance(1.5)
    assert clock.now == clock.wall_ms() == clock() == 1_763_900_001_500
    for _ in range(10):
        clock.advance(0.1)
    assert clock.now == 1_763_900_002_500
    assert clock.monotonic() - start_mono == pytest.approx(2.5)
    clock.advance(86_400)
    assert clock.now == 1_763_900_002_500 + 86_400_000


def test_wall_time_keeps_pace_through_timers_fired_on_the_way() -> None:
    clock = ManualClock(start_ms=0)
    for i in range(1, 10):
        clock.call_later(i * 0.3, lambda: None)
    clock.advance(3.0)
    assert clock.now == 3000


def test_wall_time_keeps_pace_with_monotonic_time_over_sub_ms_steps() -> None:
    clock = ManualClock(start_ms=0)
    for _ in range(10):
        clock.advance(0.0004)
    assert clock.now == 4
    for _ in range(10):
        clock.advance(0.0006)
    assert clock.now == 10


def test_advancing_backwards_does_not_move_time() -> None:
    clock = ManualClock(start_ms=5000)
    clock.advance(-1)
    assert clock.now == 5000


async def test_sleep_wakes_on_advance_not_before() -> None:
    clock = ManualClock()
    task = asyncio.get_running_loop().create_task(clock.sleep(10))
    await asyncio.sleep(0)  # the sleeper registered its timer
    assert clock.pending == 1
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.1)
    await asyncio.sleep(0)
    assert task.done()
    assert clock.pending == 0


async def test_sleepers_wake_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper(s: float) -> None:
        await clock.sleep(s)
        woke.append(s)

    tasks = [asyncio.get_running_loop().create_task(sleeper(s)) for s in (3, 1, 2)]
    await asyncio.sleep(0)
    clock.advance(5)
    await asyncio.gather(*tasks)
    assert woke == [1, 2, 3]


async def test_a_cancelled_sleep_leaves_no_timer() -> None:
    clock = ManualClock()
    task = asyncio.get_running_loop().create_task(clock.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert clock.pending == 0
    clock.advance(20)  # nothing to wake: no error


def test_system_clock_reads_real_time() -> None:
    clock = SystemClock()
    before = time.time_ns() // 1_000_000
    wall = clock.wall_ms()
    after = time.time_ns() // 1_000_000
    assert before <= wall <= after
    a = clock.monotonic()
    b = clock.monotonic()
    assert b >= a


async def test_system_clock_waits_on_the_event_loop() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    clock.call_later(-1, fired.set)  # negative: at the loop's next turn
    await asyncio.wait_for(fired.wait(), 1)
    cancelled: list[bool] = []
    clock.call_later(0, lambda: cancelled.append(True)).cancel()
    t0 = loop.time()
    await clock.sleep(0.01)
    assert loop.time() - t0 >= 0.009
    assert cancelled == []


# -- Deadlines: many one-shot timers on one clock timer ----------------------------


def test_deadlines_fire_in_order_on_one_clock_timer() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []
    for name, after in [("c", 30.0), ("a", 10.0), ("b", 20.0), ("a2", 10.0)]:
        timers.call_later(after, functools.partial(fired.append, name))
    assert clock.pending == 1  # one clock timer, armed for the earliest
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == ["a", "a2"]
    clock.advance(20)
    assert fired == ["a", "a2", "b", "c"]
    assert len(timers) == 0 and clock.pending == 0


def test_an_earlier_deadline_rearms_the_clock_timer() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []
    timers.call_later(60, lambda: fired.append("late"))
    timers.call_later(5, lambda: fired.append("early"))
    assert clock.pending == 1
    clock.advance(5)
    assert fired == ["early"]
    clock.advance(55)
    assert fired == ["early", "late"]


def test_cancelled_deadlines_do_not_fire_and_are_compacted() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[int] = []
    handles = [timers.call_later(100 + i, functools.partial(fired.append, i)) for i in range(200)]
    for h in handles[:150]:
        h.cancel()
        h.cancel()  # twice is once
    assert len(timers) == 50
    assert len(timers._heap) < 200  # rebuilt once most of it was cancelled, not kept for 100 s
    clock.advance(400)
    assert fired == list(range(150, 200))
    handles[160].cancel()  # after it fired: nothing
    assert len(timers) == 0


def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.call_later(1, boom)
    timers.call_later(1, lambda: fired.append("after"))
    timers.call_later(2, lambda: fired.append("later"))
    clock.advance(3)
    assert fired == ["after", "later"]


def test_stopped_deadlines_never_fire() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []
    h = timers.call_later(1, lambda: fired.append("x"))
    timers.stop()
    h.cancel()
    clock.advance(5)
    assert fired == [] and len(timers) == 0 and clock.pending == 0


def test_a_burst_of_deadlines_wakes_the_clock_a_few_times_not_once_each() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[int] = []
    wakeups = 0
    real_call_later = clock.call_later

    def counting(seconds: float, fn: Callable[[], None]) -> Timer:
        def wake() -> None:
            nonlocal wakeups
            wakeups += 1
            fn()

        return real_call_later(seconds, wake)

    clock.call_later = counting  # type: ignore[method-assign]
    for i in range(1000):  # a reconnect storm's auth timeouts, one every millisecond
        timers.call_later(10 + i / 1000, functools.partial(fired.append, i))
    for _ in range(120):
        clock.advance(0.1)
    assert fired == list(range(1000))
    assert wakeups <= 60  # 1 s of deadlines: at most one wake-up per GAP (20 ms)


def test_a_callback_that_sets_a_later_deadline_does_not_delay_an_earlier_one() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []
    def first() -> None:
        timers.call_later(10, lambda: fired.append("later"))

    timers.call_later(1, first)
    timers.call_later(2, lambda: fired.append("second"))
    clock.advance(1)
    clock.advance(1)
    assert fired == ["second"]
    clock.advance(10)
    assert fired == ["second", "later"]


def test_cancelled_deadlines_at_the_front_arm_no_wakeup() -> None:
    clock = ManualClock()
    timers = Deadlines(clock)
    fired: list[str] = []
    timers.call_later(1, lambda: fired.append("first"))
    early = [timers.call_later(2 + i, lambda: fired.append("cancelled")) for i in range(10)]
    timers.call_later(100, lambda: fired.append("last"))
    for h in early:
        h.cancel()
    clock.advance(1)
    assert fired == ["first"]
    assert clock.pending == 1 and clock._due[0][0] == clock.monotonic() + 99  # armed for the live one
