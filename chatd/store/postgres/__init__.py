"""The PostgreSQL store (``--db postgresql://...``): the SQLite engine's repositories
and write ops, run by an asyncpg engine (engine.py) in PostgreSQL's dialect
(dialect.py), with the same migrations (schema.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import Write
from ..sqlite import Repositories
from .engine import PgEngine


class PostgresStore(Repositories):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = PgEngine(url)
        super().__init__(self.engine)

    async def open(self) -> None:
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        return await self.engine.run_batch(ops)


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def prepare_postgres(url: str) -> int:
    """Apply pending migrations (before processes fork, and ``chatd migrate``); the version."""
    import asyncio

    import asyncpg

    from .schema import migrate

    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if not running:
        return asyncio.run(run())
    # called from code running on a loop (a test): a loop of its own in a thread
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, run()).result()


def new_postgres_epoch(url: str) -> str:
    """A new epoch for the store (after restoring it from a backup)."""
    import asyncio
    import os

    import asyncpg

    from .schema import check_version

    async def run() -> str:
        conn = await asyncpg.connect(url)
        try:
            await check_version(conn)
            epoch = os.urandom(8).hex()
            await conn.execute("UPDATE meta SET value = $1 WHERE name = 'epoch'", epoch)
            return epoch
        finally:
            await conn.close()

    return asyncio.run(run())


__all__ = ["PostgresStore", "is_postgres", "new_postgres_epoch", "prepare_postgres"]
