"""The one writer of interaction events (the outbox that makes awards exactly once).

Every write function of any feature that is an interaction calls
:func:`add_event` inside its own transaction, so an event is committed with its
interaction or not at all. Text messages and joins need no row: the message
row, written in the same transaction, is the event (ordered by ``pos``).
"""

from __future__ import annotations

from typing import Any

import msgpack

from .engine import Tx


def add_event(tx: Tx, key: str, kind: str, user: str, conv: str | None, ts: int, data: dict[str, Any]) -> None:
    """The outbox row of an interaction that is not a message (same transaction;
    idempotent on ``key``)."""
    tx.execute(
        "INSERT OR IGNORE INTO events(key, kind, user, conv, ts, data) VALUES (?, ?, ?, ?, ?, ?)",
        (key, kind, user, conv, ts, msgpack.packb(data)),
    )
