"""The embedded store: SQLite in WAL mode, one writer thread, aiosqlite readers.

Layout (one module per aggregate, synapse's ``runInteraction`` idea without mixins):

* ``engine``        opening, the writer thread, batched transactions, readers
* ``schema``        versioned migrations
* ``messages``      message rows; append / recall / history / sync
* ``conversations`` conversations, users and blocks
* ``quotas``        per-user quotas over fixed windows
* ``members``       membership, roles, read cursors, mutes
* ``ledger``        points: entries, balances, tips, red packets
* ``outbox``        interaction events and their consumers' cursors
* ``leases``        one holder at a time
* ``notify``        offline notifications, users' notification settings
* ``service``       service groups: provisioning, staff, the Fellow, backend posts
* ``desk``          service requests, episodes, ratings, the staff inbox, overdue scan
* ``campaigns``     care campaigns: a claimable card into many service groups
* ``live``          live Q&A sessions: questions, votes, audience chat, polls, attendance

This folder is the only code in chatd that speaks SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..base import Write
from .campaigns import SqliteCampaigns
from .conversations import SqliteBlocks, SqliteConversations, SqliteUsers
from .desk import SqliteDesk
from .engine import Engine, StoreEngine, set_wal
from .leases import SqliteLeases
from .ledger import SqliteLedger
from .live import SqliteLive
from .members import SqliteMembers
from .messages import SqliteMessages
from .notify import SqliteNotifications
from .outbox import SqliteOutbox
from .schema import migrate
from .service import SqliteService


class Repositories:
    """A store: every repository, reading through ``engine``, whose batch transaction
    runs their write ops (either engine's: the PostgreSQL store reuses them, one copy
    of the SQL)."""

    def __init__(self, engine: StoreEngine) -> None:
        self.engine = engine
        reader = engine
        self.messages = SqliteMessages(reader)
        self.conversations = SqliteConversations(reader)
        self.members = SqliteMembers(reader)
        self.users = SqliteUsers(reader)
        self.blocks = SqliteBlocks(reader)
        self.ledger = SqliteLedger(reader)
        self.outbox = SqliteOutbox(reader)
        self.leases = SqliteLeases()
        self.notify = SqliteNotifications(reader)
        self.service = SqliteService(reader)
        self.desk = SqliteDesk(reader)
        self.campaigns = SqliteCampaigns(reader)
        self.live = SqliteLive(reader)

    async def open(self) -> None:
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        return await self.engine.run_batch(ops)


class SqliteStore(Repositories):
    def __init__(self, path: str, *, sync: str = "full") -> None:
        self.path = path
        self.engine: Engine = Engine(path, sync=sync)
        super().__init__(self.engine)


def prepare(path: str) -> None:
    """Create or migrate the file before processes fork (``--workers``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        set_wal(conn)
        migrate(conn)
    finally:
        conn.close()


def new_epoch(path: str) -> str:
    """Give the store at ``path`` a new epoch (after restoring it from a backup:
    positions clients were given since the backup mean nothing any more). The file
    must exist already; the store should not be serving."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"no store at {path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn)
        epoch = os.urandom(8).hex()
        conn.execute("UPDATE meta SET value = ? WHERE name = 'epoch'", (epoch,))
        return epoch
    finally:
        conn.close()


__all__ = ["Repositories", "SqliteStore", "new_epoch", "prepare"]
