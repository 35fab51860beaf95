"""The notification worker: plans offline notifications from committed messages
and hands them to the deployment's hooks (its APNs/FCM bridge), off the hot path.

One round, under the scheduler's lease (one process at a time):

1. **flush**: coalesced messages whose interval has passed go out as one;
2. **plan**: the text messages past the planner's cursor, with their
   recipients' read cursors, settings, blocks and coalescing state read from
   the store and their presence from the presence backend, are decided by
   ``rules.py``; the notifications, the new state and the cursor commit in one
   transaction through the pipeline. A crash before that commit plans the batch
   again; after it nothing is planned twice (and a notification's key is
   unique): exactly once per event, like awards;
3. **deliver**: each hook reads notifications past its own cursor and is
   called with each (at least once: it deduplicates on ``key``); a failure is
   retried with backoff, and after ``MAX_ATTEMPTS`` recorded in
   ``hook_failures`` and skipped.

If presence cannot be read (Redis down) the round fails and is retried: a
notification is never sent on a guess that the user is offline.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

from ..clock import Clock
from ..core import hooks
from ..core.hooks import MAX_ATTEMPTS, HookState
from ..core.pipeline import Pipeline
from ..kinds import Kinds
from ..metrics import Metrics
from ..presence.base import PresenceBackend
from ..store.base import Notifications
from ..store.records import HookFailure
from .rules import Planner

log = logging.getLogger("chatd.notify")

BATCH = 500
RETAIN_MS = 7 * 86_400_000  # delivered notifications are kept this long (an audit trail), then pruned
PRUNE_EVERY = 3600.0  # s
YIELD_S = 0.02  # pause between busy rounds while chat writes are queued


def _ignore(result: Any) -> None:
    """A notification hook's return value means nothing."""


class NotifyWorker:
    name = "notify"

    def __init__(
        self,
        repo: Notifications,
        pipeline: Pipeline,
        presence: PresenceBackend,
        kinds: Kinds,
        hook_list: Sequence[Any],
        clock: Clock,
        metrics: Metrics,
        coalesce_s: float = 60.0,
        hook_timeout: float = 5.0,
        idle_poll: float = 0.2,
    ) -> None:
        self.repo = repo
        self.pipeline = pipeline
        self.presence = presence
        self.kinds = kinds
        self.clock = clock
        self.metrics = metrics
        self.window_ms = int(coalesce_s * 1000)
        self.hook_timeout = hook_timeout
        self.idle_poll = idle_poll
        self.hooks = hooks.states(hook_list, "notification")
        self.cursor = 0
        self._fresh = True
        self._full = False  # the last round read a whole batch somewhere (a backlog): run again at once
        self._pruned_at: float | None = None

    async def init(self) -> None:
        await self.pipeline.write(self.repo.init([h.name for h in self.hooks]))

    def leased(self) -> None:
        self._fresh = True  # another node may have moved the cursors meanwhile

    async def close(self) -> None:
        await hooks.close_all(self.hooks)

    async def run(self) -> float:
        if self._fresh:
            self.cursor, cursors = await self.repo.cursors()
            for h in self.hooks:
                h.cursors = {"notifications": cursors.get(h.name, 0)}
            self._fresh = False
        self._full = False
        busy = await self._plan()
        for h in self.hooks:
            busy |= await self._deliver(h)
        mono = self.clock.monotonic()
        if self._pruned_at is None or mono - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = mono
            now = self.clock.wall_ms()
            await self.pipeline.write(self.repo.prune(now - RETAIN_MS, now - self.window_ms))
        if not busy or not self._full:
            # caught up: the next round waits a poll interval, so what comes
            # meanwhile shares one round of reads and one commit (points/worker.py)
            return self.idle_poll
        # chat writes waiting go first (a notification a few ms later is no loss)
        return YIELD_S if self.pipeline.backlog else 0.0

    async def _presence(self, users: set[str], now: int) -> tuple[set[str], dict[str, int]]:
        """Who has a device now, and when each other one's last device went."""
        if not users:
            return set(), {}
        states = await self.presence.get_many(sorted(users), now)
        online = {u for u, (_, st) in states.items() if st.status != "offline"}
        gone = {u: st.last_seen for u, (_, st) in states.items() if u not in online and st.last_seen is not None}
        return online, gone

    async def _plan(self) -> bool:
        now = self.clock.wall_ms()
        due = await self.repo.due(now - self.window_ms, BATCH)
        last, sources = await self.repo.sources(self.cursor, BATCH)
        if len(sources) >= BATCH or len(due) >= BATCH:
            self._full = True
        if not due and last == self.cursor:
            return False
        notified: dict[int, Collection[str] | None] = {}  # by source position: whom the kind has it notify
        for src in sources:
            kind = self.kinds.get(src.conv_kind)
            notified[src.pos] = kind.notifies(src.conv, src.sender) if kind is not None else ()
        wanted = [s for s in sources if notified[s.pos] != () or s.mentions or s.mention_all]
        audience = await self.repo.audience(sorted({s.conv for s in wanted})) if wanted else {}
        pairs = {(st.user, st.conv) for st, _ in due}
        senders = {(st.user, st.sender) for st, _ in due}
        for s in wanted:
            for user in audience[s.conv]:
                pairs.add((user, s.conv))
                senders.add((user, s.sender))
        ctx = await self.repo.context(sorted(pairs), sorted(senders))
        online, gone = await self._presence({u for u, _ in pairs}, now)
        planner = Planner(ctx, online, now, self.window_ms, self.pipeline.epoch, gone)
        planner.flush(due)
        for s in wanted:
            planner.message(s, notified[s.pos], audience[s.conv])
        added = await self.pipeline.write(
            self.repo.plan(last if last != self.cursor else None, planner.notes, list(planner.changed.values()))
        )
        self.cursor = last
        for outcome, n in planner.outcomes.items():
            self.metrics.notifications.labels(outcome).inc(n)
        if added != len(planner.notes):
            log.warning("notify: %d of %d notifications existed already", len(planner.notes) - added, len(planner.notes))
        return len(sources) > 0 or len(due) >= BATCH

    async def _deliver(self, h: HookState) -> bool:
        if self.clock.monotonic() < h.retry_at:
            return False
        notes = await self.repo.after(h.cursors["notifications"], BATCH)
        if not notes:
            return False
        if len(notes) >= BATCH:
            self._full = True
        results = await hooks.call(h, notes, self.hook_timeout, _ignore)
        last = h.cursors["notifications"]
        failure: HookFailure | None = None
        for note, outcome in zip(notes, results, strict=False):
            if isinstance(outcome, BaseException):
                self.metrics.notify_hook_failures.inc()
                attempt = h.attempts + 1 if h.failing == note.key else 1
                log.warning("notification hook %s failed on %s (attempt %d): %r", h.name, note.key, attempt, outcome)
                if not h.failed(note.key, self.clock):
                    break
                failure = HookFailure(note.key, MAX_ATTEMPTS, repr(outcome))
            else:
                h.succeeded(note.key)
            last = note.id
        if last == h.cursors["notifications"]:
            return False
        await self.pipeline.write(self.repo.delivered(h.name, last, failure, self.clock.wall_ms()))
        h.cursors["notifications"] = last
        return h.retry_at <= self.clock.monotonic()
