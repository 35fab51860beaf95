"""Interaction events: the outbox (what makes points awards exactly once).

Every interaction that can earn something is an :class:`Event`. It is written
in the interaction's own transaction by the store (``events.add_event`` in the
SQLite engine; a text message or a join needs no extra row: its message row is
the event), so a crash can neither lose it nor invent it. Consumers (the points
hooks) read events past a cursor with :meth:`Outbox.read`; features only say
which interaction happened, and never import points code to do so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..kinds import Kinds
from ..metrics import Metrics
from ..store.base import Outbox as OutboxRepo

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Event:
    """An interaction that can earn something.

    ``key`` is the event's idempotency key (``message.sent:c:12:7``); ``day`` is the
    community's calendar day of ``ts`` (UTC+8 by default), for daily rules."""

    kind: str  # message.sent, circle.joined, tip.sent, redpacket.sent, ...
    key: str
    user: str
    conv: str | None
    ts: int  # ms
    day: str  # YYYY-MM-DD
    data: dict[str, Any] = field(default_factory=dict)


def day_of(ts_ms: int, offset_hours: int) -> str:
    """The calendar day of ``ts_ms`` at UTC+``offset_hours``, ``YYYY-MM-DD``."""
    return _day((ts_ms + offset_hours * 3_600_000) // DAY_MS)


@functools.lru_cache(maxsize=64)
def _day(index: int) -> str:  # one conversion per day, not per event
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=index)).date().isoformat()


Batch = list[tuple[str, int, Event | None]]  # (source, position, event or None for a row that is none)


class Outbox:
    def __init__(self, repo: OutboxRepo, metrics: Metrics, kinds: Kinds, day_offset_h: int = 8) -> None:
        self.repo = repo
        self.metrics = metrics
        self.kinds = kinds
        self.day_offset_h = day_offset_h

    def happened(self, kind: str) -> None:
        """Count an interaction once committed (``chatd_interactions_total``)."""
        counts = self.metrics.interactions
        counts[kind] = counts.get(kind, 0) + 1

    async def read(self, after_pos: int, after_id: int, limit: int) -> Batch:
        """Up to ``limit`` events of each source past the cursors: message rows
        (``messages``, by pos) and event rows (``events``, by id). A message row
        that is no interaction (most system messages) still moves the cursor."""
        offset = self.day_offset_h
        out: Batch = []
        for m in await self.repo.messages_after(after_pos, limit):
            event = None
            if m.text:
                event = Event(
                    "message.sent", f"message.sent:{m.conv}:{m.seq}", m.sender, m.conv, m.ts, day_of(m.ts, offset),
                    {"conv_kind": m.conv_kind, "seq": m.seq},
                )
            elif m.event is not None and m.event.get("type") == "join":
                kind = self.kinds.get(m.conv_kind)
                name = kind.join_event if kind is not None else None
                if name is not None:  # the kind says what a join is worth naming
                    event = Event(
                        name, f"{name}:{m.conv}:{m.seq}", m.event.get("user", m.sender), m.conv, m.ts,
                        day_of(m.ts, offset), {"conv_kind": m.conv_kind, "seq": m.seq},
                    )
            out.append(("messages", m.pos, event))
        for e in await self.repo.events_after(after_id, limit):
            out.append(("events", e.id, Event(e.kind, e.key, e.user, e.conv, e.ts, day_of(e.ts, offset), e.data)))
        return out
