"""The points worker: runs the hooks over new interaction events, off the hot path.

Events come from the outbox (``chatd/core/outbox.py``), each source read past a
cursor kept per hook in the store. For each hook the worker reads a batch,
calls the hook (``hooks.py``), and commits the awards *and* the hook's cursor
in one transaction, through the same group-commit pipeline as chat. A crash
before that commit re-runs the hook on restart; the awards' keys make the
re-run apply nothing twice. So: at-least-once hook calls, exactly-once awards.

A hook that raises or times out (``hook_timeout``) is retried with exponential
backoff (0.5 s .. 60 s) from the failing event; after ``MAX_ATTEMPTS`` the event
is recorded in ``hook_failures`` and skipped. Only one process runs the worker
at a time: it is a job of the scheduler, which holds the store lease.
"""

from __future__ import annotations

import logging
from typing import Any

from ..clock import Clock
from ..core.fanout import Fanout
from ..core.hooks import MAX_ATTEMPTS, close_all, states
from ..core.outbox import Event, Outbox
from ..core.pipeline import Pipeline
from ..store.base import Ledger
from ..store.base import Outbox as OutboxRepo
from ..store.records import HookFailure
from . import hooks
from .hooks import HookState
from .model import Award

log = logging.getLogger("chatd.points")

BATCH = 500
MAX_LAG_MS = 60_000  # the worker stops yielding to chat once its oldest pending event is this old
EXPIRY_EVERY = 1.0  # s between red-packet expiry rounds


class PointsWorker:
    name = "points"

    def __init__(
        self,
        outbox: Outbox,
        repo: OutboxRepo,
        pipeline: Pipeline,
        fanout: Fanout,
        hook_list: list[Any],
        clock: Clock,
        hook_timeout: float = 5.0,
        idle_poll: float = 0.1,
        yield_s: float = 0.05,
    ) -> None:
        self.outbox = outbox
        self.repo = repo
        self.pipeline = pipeline
        self.fanout = fanout
        self.clock = clock
        self.hook_timeout = hook_timeout
        self.idle_poll = idle_poll
        self.yield_s = yield_s
        self.yields = 0
        self.lag_ms = 0  # the most behind hook's lag at its last batch
        self.hooks = states(hook_list, "points")
        self._fresh = True  # cursors to (re)read: first run, or the lease came back
        self._full = False  # a hook's last read filled a whole batch (a backlog)
        self.awards = 0
        self.failures = 0
        self.calls = 0

    async def init(self) -> None:
        """Create the cursors of hooks seen for the first time (at the current head)."""
        await self.pipeline.write(self.repo.init_cursors([h.name for h in self.hooks]))

    def leased(self) -> None:
        self._fresh = True  # another node may have moved the cursors meanwhile

    async def close(self) -> None:
        """Release what hooks hold (the stream forwarder's Redis client)."""
        await close_all(self.hooks)

    async def run(self) -> float:
        if self._fresh:
            for h in self.hooks:
                h.cursors = await self.repo.cursors(h.name)
            self._fresh = False
        busy = False
        self._full = False
        for h in self.hooks:
            busy |= await self._step(h)
        self.lag_ms = max((h.lag_ms for h in self.hooks), default=0)
        if not busy or not self._full:
            # Caught up (nothing, or less than a full batch, was waiting): the
            # next round waits a poll interval, so the events of that interval
            # share one read and one commit. Running again at once chased each
            # new event with its own read and its own durable commit: at 200
            # messages/s, as many points commits as chat ones.
            return self.idle_poll
        if self.yield_s and self.pipeline.backlog and self.lag_ms < MAX_LAG_MS:
            # chat writes are waiting: they go first. Under a saturating load the
            # worker falls behind and catches up when it eases; a minute behind,
            # it stops yielding (awards do not lag for ever)
            self.yields += 1
            return self.yield_s
        return 0.0

    async def _step(self, h: HookState) -> bool:
        if self.clock.monotonic() < h.retry_at:
            return False
        batch = await self.outbox.read(h.cursors.get("messages", 0), h.cursors.get("events", 0), BATCH)
        if len(batch) >= BATCH:
            self._full = True  # more may be waiting: the next round runs at once
        first = next((ev for _, _, ev in batch if ev is not None), None)
        h.lag_ms = max(0, self.clock.wall_ms() - first.ts) if first is not None else 0
        if not batch:
            return False
        awards: list[Award] = []
        cursors: dict[str, int] = {}
        failure: HookFailure | None = None
        events: list[Event] = [ev for _, _, ev in batch if ev is not None]
        self.calls += len(events)
        results = await hooks.call(h, events, self.hook_timeout)
        done = 0
        for source, pos, ev in batch:
            if ev is not None:
                if done >= len(results):
                    break
                outcome = results[done]
                if not isinstance(outcome, BaseException):
                    bad = next((a for a in outcome if not hooks.valid(a)), None)
                    if bad is not None:  # a hook bug counts as a failure of this event
                        outcome = ValueError(f"invalid award {bad!r}")
                if isinstance(outcome, BaseException):
                    self.failures += 1
                    attempt = h.attempts + 1 if h.failing == ev.key else 1
                    log.warning("points hook %s failed on %s (attempt %d): %r", h.name, ev.key, attempt, outcome)
                    if not h.failed(ev.key, self.clock):
                        break
                    failure = HookFailure(ev.key, MAX_ATTEMPTS, repr(outcome))  # give up on this event: record, skip
                else:
                    awards.extend(outcome)
                    h.succeeded(ev.key)
                done += 1
            cursors[source] = pos
        if not cursors:
            return False
        pushes = await self.pipeline.write(self.repo.commit(h.name, awards, cursors, self.clock.wall_ms(), failure))
        h.cursors.update(cursors)
        self.awards += sum(len(d["entries"]) for d in pushes.values())
        for user, d in pushes.items():
            self.fanout.user_push(user, "points", d)
        return h.retry_at <= self.clock.monotonic()


class RedPacketExpiry:
    """Refunds what expired red packets still hold, once a second."""

    name = "redpacket.expiry"

    def __init__(self, ledger: Ledger, pipeline: Pipeline, fanout: Fanout, clock: Clock) -> None:
        self.ledger = ledger
        self.pipeline = pipeline
        self.fanout = fanout
        self.clock = clock

    def leased(self) -> None:
        pass

    async def run(self) -> float:
        pushes = await self.pipeline.write(self.ledger.expire_red_packets(self.clock.wall_ms()))
        for user, d in pushes.items():
            self.fanout.user_push(user, "points", d)
        return EXPIRY_EVERY
