"""SQLite engine: one writer thread running batched transactions, aiosqlite readers.

A :class:`~chatd.store.base.Write` made by this engine's repositories holds a
plain function ``fn(tx, *args) -> result`` that runs on the writer thread (see
:class:`Tx`). :meth:`Engine.run_batch` runs a whole list of them in one
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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import aiosqlite
from chatd_protocol import Err, RequestError

from ..base import StoreUnavailable, Write
from .schema import migrate

T = TypeVar("T")


class Cursor(Protocol):
    """What a write op reads back from :meth:`Tx.execute` (sqlite3's cursor, or the
    PostgreSQL engine's stand-in)."""

    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Reader(Protocol):
    """What the repositories read through: committed data only (both engines)."""

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...
    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any: ...


class StoreEngine(Reader, Protocol):
    """What a store asks of its engine (SQLite's, PostgreSQL's): opening, closing, and
    running a batch of write ops in one transaction."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]: ...


class Tx:
    """One batch transaction as the write ops see it.

    The write ops use only ``execute``, ``executemany``, ``head`` and the counter
    methods below; the PostgreSQL engine's transaction overrides the first three
    (chatd/store/postgres/engine.py) and runs the same ops.

    ``alloc(conv)`` hands out the next (seq, pos) from counters held in memory for
    the batch: the conversation's ``last_seq`` is read once per batch and written
    back once (``flush``), and so is the global ``pos`` counter. The
    batch runs under BEGIN IMMEDIATE, so no other writer (thread or process) can
    move those counters meanwhile.
    """

    __slots__ = ("_pos", "_pos_dirty", "_reads", "_seqs", "_undo", "conn")
    # whether run_ops hands a run of writes with ``many`` to it at once (base.Write):
    # not on SQLite, where a statement is a function call and the one-by-one path
    # (INSERT OR IGNORE, no read before) measured 3-5 % cheaper per ack; PgTx does
    RUNS_MANY = False

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._pos: int | None = None
        self._pos_dirty = False
        self._seqs: dict[str, list[int]] = {}  # conv -> [last_seq, last_pos]
        self._reads: dict[tuple[str, str], int] = {}  # (conv, user) -> read_seq
        self._undo: tuple[str, int, int, int] | None = None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, args)  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def head(self) -> int:
        """The highest message position committed or written in this transaction."""
        return read_pos(self.conn)

    def lookup(
        self, table: str, keys: tuple[str, ...], values: tuple[str, ...], wanted: Sequence[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The rows of ``table`` whose ``keys`` columns equal one of ``wanted``: key -> the
        ``values`` columns. One indexed read each here; one statement on PostgreSQL."""
        sql = f"SELECT {', '.join(values)} FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in keys)
        found = {}
        for key in wanted:
            row = self.execute(sql, key).fetchone()
            if row is not None:
                found[tuple(key)] = tuple(row)
        return found

    def insert_rows(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``sql``, an INSERT of one ``?`` per column (an ON CONFLICT clause allowed), for
        each row; the rows' conflict keys are distinct. One statement on PostgreSQL."""
        if rows:
            self.executemany(sql, rows)

    def alloc(self, conv: str) -> tuple[int, int]:
        """Next (seq, pos) for a message in ``conv``. NOT_FOUND if no such conversation."""
        entry = self._seqs.get(conv)
        if entry is None:
            row = self.execute("SELECT last_seq, last_pos FROM conversations WHERE id = ?", (conv,)).fetchone()
            if row is None:
                raise RequestError(Err.NOT_FOUND, f"no conversation {conv}")
            entry = self._seqs[conv] = [row[0], row[1]]
        if self._pos is None:
            self._pos = self.head()
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
            self.execute("UPDATE counters SET value = ? WHERE name = 'pos'", (self._pos,))
            self._pos_dirty = False
        if self._seqs:
            self.executemany(
                "UPDATE conversations SET last_seq = ?, last_pos = ? WHERE id = ?",
                [(seq, pos, conv) for conv, (seq, pos) in self._seqs.items()],
            )
            self._seqs.clear()
        if self._reads:
            self.executemany(
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


def run_ops(tx: Tx, ops: Sequence[Write[Any]]) -> list[Any]:
    """Run a batch's ops in its open transaction (both engines): each op's result, or
    the exception it raised. An op with a savepoint that fails is rolled back alone;
    a ``savepoint=False`` op may only refuse (RequestError) before writing."""
    results: list[Any] = []
    i, n = 0, len(ops)
    while i < n:
        op = ops[i]
        i += 1
        if op.many is not None and tx.RUNS_MANY:  # the run of writes like it that follows, at once
            j = i
            while j < n and ops[j].fn is op.fn:
                j += 1
            results.extend(op.many(tx, [op.args] + [o.args for o in ops[i:j]]))
            i = j
            continue
        if not op.savepoint:
            try:
                results.append(op.fn(tx, *op.args))
            except RequestError as exc:  # refused before writing anything
                results.append(exc)
            continue
        tx.flush()
        tx.execute("SAVEPOINT op")
        try:
            results.append(op.fn(tx, *op.args))
        except Exception as exc:  # a refused op: undo it alone
            tx.execute("ROLLBACK TO op")
            tx.forget()
            results.append(exc)
        tx.execute("RELEASE op")
    tx.flush()
    return results


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

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._in_writer(self._open_writer)
        self._reader = await aiosqlite.connect(self.path)
        await self._reader.execute("PRAGMA query_only = ON")
        await self._reader.execute(f"PRAGMA cache_size = {CACHE_KIB}")

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        set_wal(conn)
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
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

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
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

    def _batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            raise StoreUnavailable("store is closed")
        tx = Tx(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = run_ops(tx, ops)
            head = read_pos(conn)
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
