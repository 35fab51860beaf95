"""Time as a parameter (STYLE.md practice 8): one clock object that every timer,
bucket, lease and expiry takes.

A :class:`Clock` gives wall time (message timestamps, mutes, the recall window,
leases and expiries written to the store), monotonic time (rate limits,
throttles, retry backoff) and waiting (``sleep`` for periodic loops,
``call_later`` for one-shot timers such as the auth timeout).

:class:`SystemClock` is the real one. :class:`ManualClock` only moves when a
test calls :meth:`ManualClock.advance`, which fires the timers and wakes the
sleepers that fell due, in order: tests drive time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("chatd.clock")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def wall_ms(self) -> int:
        """Wall-clock time in ms since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` on the event loop once ``seconds`` have passed."""
        ...


class SystemClock:
    __slots__ = ()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), fn)


class _ManualTimer:
    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = _nothing  # as asyncio's handles do: what it would have called is freed


def _nothing() -> None:
    pass


class ManualClock:
    """A clock that moves only when told. ``now`` is the wall time in ms (tests
    read and compare it); monotonic time moves with it."""

    def __init__(self, start_ms: int = 1_763_900_000_000) -> None:
        self.now = start_ms
        self._start = start_ms
        self._mono = self._mono0 = 1000.0
        self._due: list[tuple[float, int, _ManualTimer]] = []  # (monotonic deadline, order, timer)
        self._order = itertools.count()

    def __call__(self) -> int:  # a ManualClock reads like the wall-ms callables tests used before
        return self.now

    def wall_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        timer = _ManualTimer(fn)
        heapq.heappush(self._due, (self._mono + max(0.0, seconds), next(self._order), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward; run every timer that fell due, oldest deadline first
        (a sleeper resumes at the event loop's next turn)."""
        target = self._mono + max(0.0, seconds)
        while self._due and self._due[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._due)
            self._move(deadline)
            if not timer.cancelled:
                timer.fn()
        self._move(target)

    def _move(self, mono: float) -> None:
        # wall time follows the total monotonic offset, so steps shorter than a
        # millisecond add up instead of rounding away
        self._mono = max(self._mono, mono)
        self.now = self._start + round((self._mono - self._mono0) * 1000)

    @property
    def pending(self) -> int:
        """Timers and sleepers still waiting."""
        return sum(1 for _, _, t in self._due if not t.cancelled)


class _Deadline:
    __slots__ = ("fn", "owner")

    def __init__(self, fn: Callable[[], None], owner: Deadlines) -> None:
        self.fn = fn
        self.owner = owner

    def cancel(self) -> None:
        if self.fn is not _nothing:
            self.fn = _nothing  # what it would have called is freed at once
            self.owner._cancelled_one()


class Deadlines:
    """Many one-shot timers on one clock timer, for a timer per socket (the
    auth timeout, the token's expiry): a heap of (deadline, order, entry) costs
    ~0.17 KiB per timer where an event-loop timer costs ~0.6 KiB (its handle,
    libuv's timer and their context). Only the earliest deadline holds a timer
    of ``clock``; cancelled entries are dropped when they come due, or all at
    once when they are most of the heap (as asyncio does with its own).

    ``call_later`` has the clock's semantics: ``fn`` runs on the event loop once
    ``seconds`` have passed on ``clock`` (tests drive a ManualClock), give or
    take the two tolerances below, which keep a burst of deadlines (a
    reconnect storm's auth timeouts, one every millisecond) from waking the
    loop once each: the timer is never armed less than ``GAP`` ahead (what
    falls due meanwhile runs up to that much late), and deadlines within
    ``GRACE`` of now run at once (the event loop's millisecond timers may
    fire that much early; re-arming for the remainder would spin)."""

    COMPACT_MIN = 64  # cancelled entries before a rebuild is considered
    GAP = 0.02  # s: the shortest arming, at most 50 wake-ups a second
    GRACE = 0.002  # s

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._timer: Timer | None = None
        self._armed = math.inf  # the deadline self._timer fires at
        self._cancelled = 0

    def __len__(self) -> int:
        """Deadlines still to come (cancelled ones not counted)."""
        return len(self._heap) - self._cancelled

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        entry = _Deadline(fn, self)
        when = self.clock.monotonic() + max(0.0, seconds)
        heapq.heappush(self._heap, (when, next(self._order), entry))
        if when < self._armed:
            self._arm(when)
        return entry

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = math.inf
        for _, _, entry in self._heap:
            entry.fn = _nothing
        self._heap.clear()
        self._cancelled = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self.clock.call_later(when - self.clock.monotonic(), self._run)

    def _run(self) -> None:
        self._timer = None
        self._armed = math.inf
        heap = self._heap
        now = self.clock.monotonic()
        due = now + self.GRACE
        while heap and heap[0][0] <= due:
            entry = heapq.heappop(heap)[2]
            fn = entry.fn
            if fn is _nothing:
                self._cancelled -= 1
                continue
            entry.fn = _nothing
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")
        while heap and heap[0][2].fn is _nothing:  # cancelled: no wake-up for them
            heapq.heappop(heap)
            self._cancelled -= 1
        if heap:
            when = max(heap[0][0], now + self.GAP)
            if when < self._armed:  # (a callback may have armed it already, for later)
                self._arm(when)

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled >= self.COMPACT_MIN and self._cancelled * 2 > len(self._heap):
            self._heap = [item for item in self._heap if item[2].fn is not _nothing]
            heapq.heapify(self._heap)
            self._cancelled = 0
