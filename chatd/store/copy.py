"""``chatd copy-store --from <sqlite file> --to postgresql://...``: move a deployment's
data from the embedded store to PostgreSQL, every row as it is.

Positions, seqs, the epoch, ledger entries, read cursors and hook cursors are copied,
not recomputed, so clients' catch-up tokens stay valid and the points hooks resume
where they were. The copy reads one snapshot of the SQLite file (one read
transaction: a server still writing to it meanwhile is not seen, so stop the servers
for the switch-over; docs/deployment.md), and writes it in one PostgreSQL transaction
(all or nothing) with ``COPY``. The target must be migrated to the same schema version
(``chatd migrate``) and hold no chat data yet; what the migrations seeded there
(counters, the epoch) is replaced by the source's. Identity columns continue after the
highest copied id.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from .postgres.dialect import schema_catalog
from .postgres.schema import check_version
from .sqlite.schema import MIGRATIONS

CHUNK = 5_000  # rows per COPY call: bounded memory for a store of any size


@dataclass
class Copied:
    tables: dict[str, int]  # rows per table

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def _chunks(cur: sqlite3.Cursor) -> Iterator[list[tuple[Any, ...]]]:
    while rows := cur.fetchmany(CHUNK):
        yield rows


async def copy_store(source: str, target: str) -> Copied:
    """Copy the SQLite file ``source`` (a ``file:`` URI, opened read-only) into the
    PostgreSQL database ``target``. A command-line tool: the SQLite reads block the
    loop, which runs nothing else."""
    cat = schema_catalog()
    src = sqlite3.connect(source, uri=True, isolation_level=None)
    try:
        version = src.execute("PRAGMA user_version").fetchone()[0]
        if version != len(MIGRATIONS):
            raise ValueError(
                f"the SQLite store is at schema version {version}, this chatd's is {len(MIGRATIONS)}: "
                "start this chatd on it once (or run chatd migrate on it) first"
            )
        conn = await asyncpg.connect(target)
        try:
            await check_version(conn)
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM conversations)"):
                raise ValueError("the target already holds chat data: copy into a freshly migrated database")
            counts: dict[str, int] = {}
            src.execute("BEGIN")  # one snapshot of the whole file
            async with conn.transaction():
                names = sorted(cat.tables)
                await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in names))  # what migrations seeded
                for table in names:
                    cols = cat.tables[table].columns
                    cur = src.execute(f"SELECT {', '.join(cols)} FROM {table}")
                    n = 0
                    for rows in _chunks(cur):
                        await conn.copy_records_to_table(table, records=rows, columns=list(cols))
                        n += len(rows)
                    counts[table] = n
                    rowid = cat.tables[table].rowid
                    if rowid is not None:  # the identity continues after the copied ids
                        await conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', '{rowid}'),"
                            f" COALESCE((SELECT MAX({rowid}) FROM {table}), 0) + 1, false)"
                        )
            src.execute("ROLLBACK")
            return Copied(counts)
        finally:
            await conn.close()
    finally:
        src.close()


def run_copy(source: str, target: str) -> Copied:
    """``chatd copy-store``: ValueError for locations it cannot take."""
    from pathlib import Path

    from .postgres import is_postgres

    if not is_postgres(target):
        raise ValueError(f"--to must be a postgresql:// URL, not {target.split('://', 1)[0]}")
    path = Path(source.removeprefix("sqlite:"))
    if not path.is_file():
        raise ValueError(f"--from {source}: no such SQLite file")
    return asyncio.run(copy_store(path.absolute().as_uri() + "?mode=ro", target))
