"""Rate limits as pure functions of ``now`` (seconds on the clock's monotonic
time), and the limiters built on them. ``SendLimiter`` and ``Throttle`` are per
process; with Redis configured the send budget is shared (``limits_shared.py``)."""

from __future__ import annotations

from typing import Protocol

from .clock import Clock


class Limiter(Protocol):
    """A user's send budget: per process (``SendLimiter``), or shared by every
    process on one Redis (``limits_shared.SharedSendLimiter``)."""

    def wait(self, user: str) -> float:
        """0.0 if ``user`` may send now, else seconds to wait."""
        ...

    async def close(self) -> None: ...


class TokenBucket:
    """Classic token bucket. ``take(now)`` returns 0.0 if allowed, else seconds to wait."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class SendLimiter:
    """Messages per user across all of the user's sockets on this node."""

    MAX_USERS = 100_000  # past this, full buckets (idle users) are forgotten

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def wait(self, user: str) -> float:
        """0.0 if ``user`` may send now, else seconds to wait."""
        now = self.clock.monotonic()
        bucket = self.buckets.get(user)
        if bucket is None:
            if len(self.buckets) > self.MAX_USERS:
                self.buckets = {u: b for u, b in self.buckets.items() if b.tokens < b.burst}
            bucket = self.buckets[user] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    async def close(self) -> None:
        pass


class Throttle:
    """At most one event per key every ``every`` seconds (typing indicators)."""

    MAX_KEYS = 100_000

    def __init__(self, every: float, clock: Clock) -> None:
        self.every = every
        self.clock = clock
        self.last: dict[tuple[str, str], float] = {}

    def allow(self, key: tuple[str, str]) -> bool:
        now = self.clock.monotonic()
        last = self.last.get(key)
        if last is not None and now - last < self.every:
            return False
        if len(self.last) > self.MAX_KEYS:  # forget stale entries
            self.last = {k: t for k, t in self.last.items() if now - t < self.every}
        self.last[key] = now
        return True
