"""Interaction events: the one place the message path reports what could earn points.

DESIGN.md §6: every interaction that can earn something produces an event; hooks
turn events into awards. The points issue replaces this in-process sink with an
outbox written in the interaction's own transaction; until then events are
counted (metrics) and handed to registered listeners, after commit, off the
caller's path (a listener that raises is logged and ignored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics

log = logging.getLogger("chatd.interactions")


@dataclass(frozen=True, slots=True)
class Interaction:
    kind: str  # "message.sent", "circle.joined", ...
    user: str
    conv: str
    seq: int
    ts: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Idempotency key: one event per (kind, conversation, seq)."""
        return f"{self.kind}:{self.conv}:{self.seq}"


class Interactions:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.listeners: list[Callable[[Interaction], None]] = []

    def emit(self, event: Interaction) -> None:
        counts = self.metrics.interactions
        counts[event.kind] = counts.get(event.kind, 0) + 1
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("interaction listener failed on %s", event.key)
