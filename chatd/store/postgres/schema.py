"""PostgreSQL migrations: the one versioned list of ``chatd/store/sqlite/schema.py``,
each script translated by ``dialect.pg_migration``. ``chatd_schema.version`` holds
the applied version (SQLite keeps it in ``PRAGMA user_version``)."""

from __future__ import annotations

import asyncpg

from ..base import StoreUnavailable
from ..sqlite.schema import MIGRATIONS
from .dialect import pg_migration

LOCK = 727_100  # pg_advisory_xact_lock key: one process migrates at a time


async def version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('chatd_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT version FROM chatd_schema"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply pending migrations, each in its own transaction; returns the version.
    Several processes starting at once: the advisory lock lets one migrate while
    the others wait, then find the work done."""
    while True:
        async with conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK})")
            await conn.execute("CREATE TABLE IF NOT EXISTS chatd_schema(version BIGINT NOT NULL)")
            await conn.execute("INSERT INTO chatd_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM chatd_schema)")
            v = await version(conn)
            if v >= len(MIGRATIONS):
                return len(MIGRATIONS)
            for stmt in pg_migration(MIGRATIONS[v]):
                await conn.execute(stmt)
            await conn.execute("UPDATE chatd_schema SET version = $1", v + 1)


async def check_version(conn: asyncpg.Connection) -> None:
    """A server does not migrate a PostgreSQL store (an operator runs ``chatd migrate``
    before a deploy, so that a rolling deploy never has two versions migrating): it
    refuses a schema that is not the one it was built for."""
    v = await version(conn)
    want = len(MIGRATIONS)
    if v < want:
        raise StoreUnavailable(
            f"the store's schema is at version {v}, this chatd needs {want}: run `chatd migrate --db <url>` first"
        )
    if v > want:
        raise StoreUnavailable(f"the store's schema is at version {v}, newer than this chatd's {want}: upgrade chatd")
