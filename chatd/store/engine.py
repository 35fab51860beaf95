"""SQLite engine: one writer thread running batched transactions, aiosqlite readers.

Writes are *operations*: plain functions ``op(conn) -> result`` that run on the
writer thread. :meth:`Store.run_batch` runs a whole list of them in one
transaction, each inside a savepoint so that one refused operation (a domain
error) rolls back alone while the others commit. The caller is told the outcome
only after COMMIT returned, which is what lets chatd ack a message only once it
is durable while still committing thousands of messages per transaction.

Why a dedicated thread and not aiosqlite for writes: group commit needs the whole
batch (savepoints, statements, commit) in one hop to the SQLite thread; aiosqlite
would take one hop per statement. Reads go through aiosqlite (WAL lets them run
beside the writer).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiosqlite

from .schema import migrate

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], Any]


class StoreUnavailable(Exception):
    """The transaction could not commit (disk full, I/O error, closed store)."""


class Store:
    def __init__(self, path: str, *, sync: str = "full") -> None:
        self.path = path
        self.sync = sync
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chatd-writer")
        self._local = threading.local()
        self._reader: aiosqlite.Connection | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._in_writer(self._open_writer)
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA query_only = ON")

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        migrate(conn)
        self._local.conn = conn

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        try:
            await self._in_writer(self._close_writer)
        finally:
            self._executor.shutdown(wait=True)

    def _close_writer(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- writes ------------------------------------------------------------

    async def run_batch(self, ops: Sequence[WriteOp]) -> tuple[list[Any], int]:
        """Run ``ops`` in one transaction. Returns each op's result (a value, or
        the exception that op raised after its savepoint rolled back) and the
        highest committed message ``pos``. Raises StoreUnavailable when the
        transaction as a whole failed: then nothing was committed."""
        try:
            return await self._in_writer(self._batch, ops)
        except StoreUnavailable:
            raise
        except (sqlite3.Error, RuntimeError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _batch(self, ops: Sequence[WriteOp]) -> tuple[list[Any], int]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            raise StoreUnavailable("store is closed")
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    results.append(op(conn))
                except Exception as exc:  # a refused op: undo it alone
                    conn.execute("ROLLBACK TO op")
                    results.append(exc)
                conn.execute("RELEASE op")
            (head,) = conn.execute("SELECT IFNULL(MAX(pos), 0) FROM messages").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results, head

    # -- reads -------------------------------------------------------------

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StoreUnavailable("store is closed")
        try:
            async with self._reader.execute(sql, args) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None
