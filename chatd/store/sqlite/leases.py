"""Leases: one holder at a time for work only one process may do (the scheduler)."""

from __future__ import annotations

from ..base import Write
from .engine import Tx


def take(tx: Tx, name: str, owner: str, now: int, ms: int) -> tuple[bool, int]:
    tx.execute(
        "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner = excluded.owner,"
        " until = excluded.until WHERE leases.owner = excluded.owner OR leases.until < ?",
        (name, owner, now + ms, now),
    )
    row = tx.execute("SELECT owner, until FROM leases WHERE name = ?", (name,)).fetchone()
    return bool(row and row[0] == owner), int(row[1]) if row else now


class SqliteLeases:
    def take(self, name: str, owner: str, now: int, ms: int) -> Write[tuple[bool, int]]:
        return Write(take, (name, owner, now, ms))
