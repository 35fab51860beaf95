"""The points worker: runs the hooks over new interaction events, off the hot path.

Events come from two places, each read past a cursor kept per hook in the store:
message rows (``message.sent`` for text, ``circle.joined`` for join events; the
message *is* the outbox entry, written in the same transaction) and the
``events`` table (tips, red packets, later kinds). For each hook the worker
reads a batch, calls the hook, and writes the awards *and* the hook's cursor in
one transaction, through the same group-commit pipeline as chat. A crash before
that commit re-runs the hook on restart; the awards' keys make the re-run apply
nothing twice. So: at-least-once hook calls, exactly-once awards.

A hook that raises or times out (``hook_timeout``) is retried with exponential
backoff (0.5 s .. 60 s) from the failing event; after ``MAX_ATTEMPTS`` the event
is recorded in ``hook_failures`` and skipped. Synchronous hooks run in a thread
of their own (a hook that blocks cannot stall the event loop), except those
marked ``inline = True`` (the built-in rules hook: pure and fast). Only one
process runs the worker at a time (a lease row in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgpack

from ..store import messages
from ..store.engine import Store, Tx, write_op
from . import ledger
from .model import Award, Event, hook_name

if TYPE_CHECKING:
    from ..fanout import Fanout
    from ..pipeline import Pipeline

log = logging.getLogger("chatd.points")

BATCH = 500
MAX_ATTEMPTS = 10
MAX_STUCK = 4  # calls of a sync hook left blocked on their threads before the hook counts as failing
MAX_LAG_MS = 60_000  # the worker stops yielding to chat once its oldest pending event is this old
LEASE_MS = 10_000
DAY_MS = 86_400_000


def day_of(ts_ms: int, offset_hours: int) -> str:
    """The calendar day of ``ts_ms`` at UTC+``offset_hours``, ``YYYY-MM-DD``."""
    return _day((ts_ms + offset_hours * 3_600_000) // DAY_MS)


@functools.lru_cache(maxsize=64)
def _day(index: int) -> str:  # one conversion per day, not per event
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=index)).date().isoformat()


@dataclass
class HookState:
    hook: Any
    name: str
    inline: bool
    is_async: bool
    cursors: dict[str, int] = field(default_factory=dict)  # source -> last processed
    attempts: int = 0
    retry_at: float = 0.0
    failing: str = ""
    lag_ms: int = 0  # age of its oldest pending event at its last read
    stuck: list[threading.Thread] = field(default_factory=list)  # calls that timed out


# -- store functions (writer thread) -------------------------------------------


def init_cursors(tx: Tx, names: list[str]) -> None:
    """A hook seen for the first time starts at the current head: it is not run
    over history that predates it."""
    head = tx.execute("SELECT value FROM counters WHERE name = 'pos'").fetchone()[0]
    last_event = tx.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    for name in names:
        tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'messages', ?)", (name, head))
        tx.execute("INSERT OR IGNORE INTO hook_cursors VALUES (?, 'events', ?)", (name, last_event))


def apply_batch(
    tx: Tx, hook: str, awards: list[Award], cursors: dict[str, int], ts: int, failure: tuple[str, int, str] | None
) -> dict[str, dict[str, Any]]:
    """Awards and the hook's cursors in one transaction. Returns, per user who
    got a new entry that moved points, ``{"entries": [...], "balance": {...}}``
    for the push."""
    entries = ledger.apply_awards(tx, awards, ts)
    for source, pos in cursors.items():
        tx.execute("UPDATE hook_cursors SET pos = ? WHERE hook = ? AND source = ?", (pos, hook, source))
    if failure is not None:
        key, attempts, error = failure
        tx.execute(
            "INSERT OR REPLACE INTO hook_failures VALUES (?, ?, ?, ?, ?)", (hook, key, attempts, error[:500], ts)
        )
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.amount:  # a 0-point entry (past a daily cap) changes nothing: it is in the ledger only
            out.setdefault(e.user, {"entries": []})["entries"].append(e.wire())
    for user, d in out.items():
        d["balance"] = {"points": 0, "cv": 0}
        for currency, amount in tx.execute("SELECT currency, amount FROM balances WHERE user = ?", (user,)):
            d["balance"][currency] = amount
    return out


def take_lease(tx: Tx, name: str, owner: str, now: int, ms: int) -> tuple[bool, int]:
    """(whether ``owner`` holds the lease now, when the lease runs out)."""
    tx.execute(
        "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner = excluded.owner,"
        " until = excluded.until WHERE leases.owner = excluded.owner OR leases.until < ?",
        (name, owner, now + ms, now),
    )
    row = tx.execute("SELECT owner, until FROM leases WHERE name = ?", (name,)).fetchone()
    return bool(row and row[0] == owner), int(row[1]) if row else now


def expire_packets(tx: Tx, now: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pid, sender, held in ledger.expire_red_packets(tx, now):
        if held:
            entry = {"key": f"{pid}:refund", "currency": "points", "amount": held, "rule": "redpacket.refund"}
            out.setdefault(sender, {"entries": []})["entries"].append({**entry, "ref": pid, "ts": now})
    for user, d in out.items():
        row = tx.execute("SELECT amount FROM balances WHERE user = ? AND currency = 'points'", (user,)).fetchone()
        d["balance"] = {"points": row[0] if row else 0}
    return out


# -- reading events ------------------------------------------------------------


async def read_events(store: Store, after_pos: int, after_id: int, offset_h: int) -> list[tuple[str, int, Event | None]]:
    """Up to BATCH events past the cursors: (source, position, event or None for a
    row that is no interaction, which still moves the cursor)."""
    out: list[tuple[str, int, Event | None]] = []
    rows = await store.fetchall(
        "SELECT m.pos, m.conv, m.seq, m.sender, m.ts, m.kind, CASE WHEN m.kind = 1 THEN m.data END, c.kind"
        " FROM messages m JOIN conversations c ON c.id = m.conv WHERE m.pos > ? ORDER BY m.pos LIMIT ?",
        (after_pos, BATCH),
    )
    for pos, conv, seq, sender, ts, kind, data, conv_kind in rows:
        event = None
        if kind == messages.TEXT:
            event = Event(
                "message.sent", f"message.sent:{conv}:{seq}", sender, conv, ts, day_of(ts, offset_h),
                {"conv_kind": conv_kind, "seq": seq},
            )
        elif data is not None:
            e = msgpack.unpackb(data).get("e") or {}
            if e.get("type") == "join":
                event = Event(
                    "circle.joined", f"circle.joined:{conv}:{seq}", e.get("user", sender), conv, ts,
                    day_of(ts, offset_h), {"conv_kind": conv_kind, "seq": seq},
                )
        out.append(("messages", pos, event))
    rows = await store.fetchall(
        "SELECT id, key, kind, user, conv, ts, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, BATCH)
    )
    for rid, key, kind, user, conv, ts, data in rows:
        out.append(("events", rid, Event(kind, key, user, conv, ts, day_of(ts, offset_h), msgpack.unpackb(data))))
    return out


# -- the worker ----------------------------------------------------------------


class PointsWorker:
    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        fanout: Fanout,
        hooks: list[Any],
        node: str,
        clock: Callable[[], int],
        day_offset_h: int = 8,
        hook_timeout: float = 5.0,
        idle_poll: float = 0.1,
        yield_s: float = 0.05,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.fanout = fanout
        self.node = node
        self.clock = clock
        self.day_offset_h = day_offset_h
        self.hook_timeout = hook_timeout
        self.idle_poll = idle_poll
        self.yield_s = yield_s
        self.yields = 0
        self.lag_ms = 0  # the most behind hook's lag (0 on a node without the lease)
        self.hooks: list[HookState] = []
        for hook in hooks:
            is_async = inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)
            inline = bool(getattr(hook, "inline", False))
            self.hooks.append(HookState(hook, hook_name(hook), inline, is_async))
        names = [h.name for h in self.hooks]
        if len(set(names)) != len(names):
            raise ValueError(f"points hooks need distinct names: {names}")
        self._task: asyncio.Task[None] | None = None
        self._leased = False
        self._lease_until = 0.0
        self._next_expiry = 0.0
        self.awards = 0
        self.failures = 0
        self.calls = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chatd-points")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def init(self) -> None:
        """Create the cursors of hooks seen for the first time (at the current head)."""
        await self.pipeline.write(write_op(init_cursors, names=[h.name for h in self.hooks]))

    async def _run(self) -> None:
        while True:
            try:
                busy = False
                if await self._lease():
                    for h in self.hooks:
                        busy |= await self._step(h)
                    await self._expire()
                    self.lag_ms = max((h.lag_ms for h in self.hooks), default=0)
                else:
                    self.lag_ms = 0  # another node runs the hooks
                if not busy:
                    await asyncio.sleep(self.idle_poll)
                elif self.yield_s and self.pipeline.backlog and self.lag_ms < MAX_LAG_MS:
                    # chat writes are waiting: they go first. Under a saturating
                    # load the worker falls behind and catches up when it eases;
                    # a minute behind, it stops yielding (awards do not lag for ever)
                    self.yields += 1
                    await asyncio.sleep(self.yield_s)
                else:
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("points worker error; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _lease(self) -> bool:
        now = time.monotonic()
        if now < self._lease_until:
            return self._leased
        was = self._leased
        wall = self.clock()
        self._leased, until = await self.pipeline.write(
            write_op(take_lease, name="points", owner=self.node, now=wall, ms=LEASE_MS)
        )
        # holding it: renew a third of the way in; not: try again when it runs out
        # (a node killed with -9 is taken over as soon as its lease ends)
        again = LEASE_MS / 3000 if self._leased else min(LEASE_MS / 3000, max(0.05, (until - wall) / 1000 + 0.01))
        self._lease_until = now + again
        if self._leased and not was:
            for h in self.hooks:
                rows = await self.store.fetchall("SELECT source, pos FROM hook_cursors WHERE hook = ?", (h.name,))
                h.cursors = dict(rows)
        return self._leased

    async def _step(self, h: HookState) -> bool:
        if time.monotonic() < h.retry_at:
            return False
        batch = await read_events(
            self.store, h.cursors.get("messages", 0), h.cursors.get("events", 0), self.day_offset_h
        )
        first = next((ev for _, _, ev in batch if ev is not None), None)
        h.lag_ms = max(0, self.clock() - first.ts) if first is not None else 0
        if not batch:
            return False
        awards: list[Award] = []
        cursors: dict[str, int] = {}
        failure: tuple[str, int, str] | None = None
        results = await self._call(h, [ev for _, _, ev in batch if ev is not None])
        done = 0
        for source, pos, ev in batch:
            if ev is not None:
                if done >= len(results):
                    break
                outcome = results[done]
                if not isinstance(outcome, BaseException):
                    bad = next((a for a in outcome if not _valid(a)), None)
                    if bad is not None:  # a hook bug counts as a failure of this event
                        outcome = ValueError(f"invalid award {bad!r}")
                if isinstance(outcome, BaseException):
                    h.attempts = h.attempts + 1 if h.failing == ev.key else 1
                    h.failing = ev.key
                    self.failures += 1
                    log.warning("points hook %s failed on %s (attempt %d): %r", h.name, ev.key, h.attempts, outcome)
                    if h.attempts < MAX_ATTEMPTS:
                        h.retry_at = time.monotonic() + min(60.0, 0.5 * 2 ** (h.attempts - 1))
                        break
                    failure = (ev.key, h.attempts, repr(outcome))  # give up on this event: record, skip
                    h.attempts, h.failing = 0, ""
                else:
                    awards.extend(outcome)
                    if h.failing == ev.key:
                        h.attempts, h.failing = 0, ""
                done += 1
            cursors[source] = pos
        if not cursors:
            return False
        pushes = await self.pipeline.write(
            write_op(apply_batch, hook=h.name, awards=awards, cursors=cursors, ts=self.clock(), failure=failure)
        )
        h.cursors.update(cursors)
        self.awards += sum(len(d["entries"]) for d in pushes.values())
        for user, d in pushes.items():
            self.fanout.user_push(user, "points", d)
        return h.retry_at <= time.monotonic()

    async def _call(self, h: HookState, events: list[Event]) -> list[Any]:
        """The hook over ``events`` in order; stops at the first failure (its
        exception takes that event's place in the result)."""
        self.calls += len(events)
        if h.inline:
            return _run_all(h.hook, events)
        if h.is_async:
            out: list[Any] = []
            for ev in events:
                try:
                    out.append(list(await asyncio.wait_for(h.hook(ev), self.hook_timeout)))
                except Exception as exc:
                    out.append(exc)
                    break
            return out
        # A call runs on a daemon thread of its own: one that hangs for good is
        # left behind (it cannot hold up the next call, nor the process's exit),
        # up to MAX_STUCK per hook; past that the hook fails until one returns.
        h.stuck = [t for t in h.stuck if t.is_alive()]
        if len(h.stuck) >= MAX_STUCK:
            return [RuntimeError(f"{len(h.stuck)} calls of this hook are still blocked")]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()

        def run() -> None:
            try:
                result: list[Any] = _run_all(h.hook, events)
            except BaseException as exc:  # _run_all catches what a hook raises; this is a bug guard
                result = [exc]
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (stopped)
                loop.call_soon_threadsafe(_settle, fut, result)

        thread = threading.Thread(target=run, name=f"chatd-hook-{h.name}", daemon=True)
        thread.start()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.hook_timeout + 0.01 * len(events))
        except TimeoutError as exc:
            h.stuck.append(thread)
            log.error("points hook %s: a call is blocked past %.1f s; left on its thread", h.name, self.hook_timeout)
            return [exc]

    async def _expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + 1.0
        pushes = await self.pipeline.write(write_op(expire_packets, now=self.clock()))
        for user, d in pushes.items():
            self.fanout.user_push(user, "points", d)


def _valid(a: Any) -> bool:
    return (
        isinstance(a, Award)
        and a.currency in ("points", "cv")
        and isinstance(a.amount, int)
        and not isinstance(a.amount, bool)
        and a.amount >= 0
        and isinstance(a.key, str)
        and 0 < len(a.key) <= 200
        and isinstance(a.user, str)
        and bool(a.user)
    )


def _settle(fut: asyncio.Future[list[Any]], result: list[Any]) -> None:
    if not fut.done():
        fut.set_result(result)


def _run_all(hook: Any, events: list[Event]) -> list[Any]:
    out: list[Any] = []
    for ev in events:
        try:
            out.append(list(hook(ev)))
        except Exception as exc:
            out.append(exc)
            break
    return out
