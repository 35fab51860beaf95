"""The PostgreSQL store (``--db postgresql://...``): the SQLite engine's repositories
and write ops, run by an asyncpg engine (engine.py) in PostgreSQL's dialect
(dialect.py), with the same migrations (schema.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from ..sqlite import Repositories
from .engine import PgEngine
from .schema import check_version, migrate

T = TypeVar("T")


class PostgresStore(Repositories):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: PgEngine = PgEngine(url)
        super().__init__(self.engine)


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def on_connection(url: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``fn`` on a connection of its own, from code without a loop (the CLI) or, in a
    thread with a loop of its own, from code running on one (a test)."""

    async def run() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, run()).result()


def prepare_postgres(url: str) -> int:
    """Apply pending migrations (``chatd migrate``); the version."""
    return on_connection(url, migrate)


def new_postgres_epoch(url: str) -> str:
    """A new epoch for the store (after restoring it from a backup)."""

    async def renew(conn: asyncpg.Connection) -> str:
        await check_version(conn)
        epoch = os.urandom(8).hex()
        await conn.execute("UPDATE meta SET value = $1 WHERE name = 'epoch'", epoch)
        return epoch

    return on_connection(url, renew)


__all__ = ["PostgresStore", "is_postgres", "new_postgres_epoch", "prepare_postgres"]
