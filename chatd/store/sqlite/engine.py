"""SQLite engine: one writer thread running batched transactions, aiosqlite readers.

A :class:`~chatd.store.base.Write` made by this engine's repositories holds a
plain function ``fn(tx, *args) -> result`` that runs inside the batch's
transaction (see :class:`Tx`), synchronously, without awaiting. :meth:`Engine.run_batch` runs a whole list of them in one
transaction, each inside a savepoint so that one refused operation (a domain
error) rolls back alone while the others commit. The caller is told the outcome
only after COMMIT returned, which is what lets chatd ack a message only once it
is durable while still committing thousands of messages per transaction.

Where a batch runs: its statements (BEGIN IMMEDIATE, the savepoints, every
op) run on the event loop, and only its COMMIT, which waits for the fsync, goes
to the writer thread. Statements are microseconds each; run on the writer
thread, each one handed the GIL back and forth with the loop (a context switch
or two per statement: 9.7 per message at 20,000 deliveries/s, 5.9 with the
batch staged on the loop; bench/results/2026-12-03-issue13-speed.md). When
another process holds the write lock (several processes on one file), BEGIN
IMMEDIATE does not wait on the loop: the whole batch goes to the writer thread,
which waits for the lock there as before. Nothing else uses the writer
connection, and a batch starts only once the previous COMMIT has returned, so
the connection is never used from two threads at once.

Why a dedicated thread and not aiosqlite for writes: group commit needs the
commit in one hop; aiosqlite would take one hop per statement. Reads go through
aiosqlite (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import aiosqlite
from chatd_protocol import Err, RequestError

from ..base import StoreUnavailable, Write
from .schema import migrate

T = TypeVar("T")


class Tx:
    """One batch transaction as the write ops see it.

    ``alloc(conv)`` hands out the next (seq, pos) from counters held in memory for
    the batch: the conversation's ``last_seq`` is read once per batch and written
    back once (``flush``), and so is the global ``pos`` counter. The
    batch runs under BEGIN IMMEDIATE, so no other writer (thread or process) can
    move those counters meanwhile.
    """

    __slots__ = ("_pos", "_pos_dirty", "_reads", "_seqs", "_undo", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._pos: int | None = None
        self._pos_dirty = False
        self._seqs: dict[str, list[int]] = {}  # conv -> [last_seq, last_pos]
        self._reads: dict[tuple[str, str], int] = {}  # (conv, user) -> read_seq
        self._undo: tuple[str, int, int, int] | None = None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def alloc(self, conv: str) -> tuple[int, int]:
        """Next (seq, pos) for a message in ``conv``. NOT_FOUND if no such conversation."""
        entry = self._seqs.get(conv)
        if entry is None:
            row = self.conn.execute("SELECT last_seq, last_pos FROM conversations WHERE id = ?", (conv,)).fetchone()
            if row is None:
                raise RequestError(Err.NOT_FOUND, f"no conversation {conv}")
            entry = self._seqs[conv] = [row[0], row[1]]
        if self._pos is None:
            self._pos = read_pos(self.conn)
        self._pos_dirty = True
        self._undo = (conv, entry[0], entry[1], self._pos)
        self._pos += 1
        entry[0] += 1
        entry[1] = self._pos
        return entry[0], self._pos

    def unalloc(self, conv: str) -> None:
        """Give back the allocation just made for ``conv`` (its INSERT failed)."""
        assert self._undo is not None and self._undo[0] == conv, "only the latest allocation can be undone"
        _, seq, last_pos, pos = self._undo
        self._seqs[conv] = [seq, last_pos]
        self._pos = pos
        self._undo = None

    def mark_read(self, conv: str, user: str, seq: int) -> None:
        """Deferred ``read_seq = max(read_seq, seq)``, written once per batch."""
        self._reads[(conv, user)] = seq

    def flush(self) -> None:
        """Write the batch's counters back (before any op that reads them via SQL)."""
        if self._pos_dirty:
            self.conn.execute("UPDATE counters SET value = ? WHERE name = 'pos'", (self._pos,))
            self._pos_dirty = False
        if self._seqs:
            self.conn.executemany(
                "UPDATE conversations SET last_seq = ?, last_pos = ? WHERE id = ?",
                [(seq, pos, conv) for conv, (seq, pos) in self._seqs.items()],
            )
            self._seqs.clear()
        if self._reads:
            self.conn.executemany(
                "UPDATE members SET read_seq = MAX(read_seq, ?) WHERE conv = ? AND user = ?",
                [(seq, conv, user) for (conv, user), seq in self._reads.items()],
            )
            self._reads.clear()

    def forget(self) -> None:
        """After ROLLBACK TO a savepoint taken right after ``flush``: drop the
        in-memory counters so they are read again from the database."""
        self._seqs.clear()
        self._reads.clear()
        self._pos = None
        self._pos_dirty = False


# Each connection's page cache (negative: KiB). SQLite's default is 2 MiB; a store of
# 100,000 service groups is ~220 MB, and a staff inbox over 5,000 groups touches pages
# all over it: with 2 MiB they are read again from the OS on every call (p99 20.6 ms
# for the first page in bench/service.py, against 20 ms wanted). At most 32 MiB per
# connection (reader and writer): memory the OS would spend on its own cache anyway.
CACHE_KIB = -32768


def set_wal(conn: sqlite3.Connection, wait: float = 10.0) -> None:
    """Switch to WAL. Two processes opening a new file at once: the switch needs an
    exclusive lock and SQLite does not wait for it (no busy handler): retry."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# How long the writer thread waits for another process's write lock (sqlite3's default).
BUSY_TIMEOUT_MS = 5000


def read_pos(conn: sqlite3.Connection) -> int:
    """The highest committed message position."""
    return int(conn.execute("SELECT value FROM counters WHERE name = 'pos'").fetchone()[0])


class Engine:
    """The SQLite file: the writer thread and the reader connection."""

    def __init__(self, path: str, *, sync: str = "full") -> None:
        self.path = path
        self.sync = sync
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chatd-writer")
        self._local = threading.local()
        self._reader: aiosqlite.Connection | None = None
        self._conn: sqlite3.Connection | None = None  # the writer connection
        self._committing: Future[None] | None = None  # the last COMMIT handed to the writer thread
        self.staged = 0  # batches whose statements ran on the loop
        self.handed = 0  # batches run wholly on the writer thread (the write lock was taken)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._in_writer(self._open_writer)
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA query_only = ON")
        await self._reader.execute(f"PRAGMA cache_size = {CACHE_KIB}")

    def _open_writer(self) -> None:
        # used from the loop (a batch's statements) and this thread (its COMMIT),
        # never at once: see the module docstring
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        set_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
        migrate(conn)
        conn.execute("PRAGMA busy_timeout = 0")  # BEGIN on the loop never waits (_batch_thread does)
        self._local.conn = conn
        self._conn = conn

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
        self._conn = None

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- writes ------------------------------------------------------------

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        """Run ``ops`` in one transaction. Returns each op's result (a value, or
        the exception that op raised after its savepoint rolled back) and the
        highest committed message ``pos``. Raises StoreUnavailable when the
        transaction as a whole failed: then nothing was committed."""
        try:
            committing = self._committing
            if committing is not None and not committing.done():
                # a batch whose caller stopped waiting: its COMMIT still holds the connection
                await asyncio.wait([asyncio.wrap_future(committing)])
            conn = self._conn
            if conn is None:
                raise StoreUnavailable("store is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                self.handed += 1
                return await self._in_writer(self._batch_thread, ops)
            try:
                done = self._stage(conn, ops)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.staged += 1
            committing = self._committing = self._executor.submit(self._commit, conn)
            # shielded: a caller that stops waiting must not cancel a COMMIT not
            # yet started, which would leave the transaction open
            await asyncio.shield(asyncio.wrap_future(committing))
            return done
        except StoreUnavailable:
            raise
        except (sqlite3.Error, RuntimeError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    @staticmethod
    def _commit(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _batch_thread(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        """The whole batch on the writer thread, waiting there for the write lock."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            raise StoreUnavailable("store is closed")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout = 0")
        try:
            done = self._stage(conn, ops)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._commit(conn)
        return done

    @staticmethod
    def _stage(conn: sqlite3.Connection, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        """Every op of the batch in the transaction just begun; COMMIT is the caller's."""
        results: list[Any] = []
        tx = Tx(conn)
        try:
            for op in ops:
                if not op.savepoint:
                    try:
                        results.append(op.fn(tx, *op.args))
                    except RequestError as exc:  # refused before writing anything
                        results.append(exc)
                    continue
                tx.flush()
                conn.execute("SAVEPOINT op")
                try:
                    results.append(op.fn(tx, *op.args))
                except Exception as exc:  # a refused op: undo it alone
                    conn.execute("ROLLBACK TO op")
                    tx.forget()
                    results.append(exc)
                conn.execute("RELEASE op")
            tx.flush()
            head = read_pos(conn)
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
            # one hop to the reader's thread for the statement and all its rows: two
            # hops (execute, then fetchall) let another read start in between, and
            # a statement started while one is still open reads that one's older
            # snapshot: it could miss a commit the caller knows of (a sync reply
            # claiming a position past messages it does not hold)
            return list(await self._reader.execute_fetchall(sql, args))
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None
