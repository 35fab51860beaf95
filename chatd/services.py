"""The bundle of collaborators every op handler sees (built in app.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .bus import Bus
from .config import Config
from .directory import Directory
from .fanout import Fanout
from .hub import Hub
from .interactions import Interactions
from .limits import TokenBucket
from .metrics import Metrics
from .output import Output
from .pipeline import Pipeline
from .presence import Presence
from .store import Store


@dataclass
class Services:
    config: Config
    store: Store
    pipeline: Pipeline
    hub: Hub
    directory: Directory
    metrics: Metrics
    interactions: Interactions
    output: Output
    bus: Bus
    fanout: Fanout
    presence: Presence
    send_buckets: dict[str, TokenBucket] = field(default_factory=dict)
    typing: dict[tuple[str, str], float] = field(default_factory=dict)  # (user, conv) -> last push
    draining: bool = False

    def now_ms(self) -> int:
        """Wall-clock ms (message timestamps, mutes, recall window)."""
        return self.config.clock()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    def send_allowed(self, user: str) -> float:
        """0.0 if ``user`` may send now, else seconds to wait (per user, all devices)."""
        now = time.monotonic()
        bucket = self.send_buckets.get(user)
        if bucket is None:
            if len(self.send_buckets) > 100_000:  # forget full buckets of idle users
                self.send_buckets = {u: b for u, b in self.send_buckets.items() if b.tokens < b.burst}
            bucket = self.send_buckets[user] = TokenBucket(self.config.send_rate, self.config.send_burst, now)
        return bucket.take(now)
