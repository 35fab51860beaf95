"""PostgreSQL engine: the same batched transactions as SQLite's, on asyncpg.

The write ops are the SQLite engine's (``chatd/store/sqlite/``): plain functions
``fn(tx, *args)`` that run one after the other inside a batch transaction. Here they
run on one writer thread that owns a private event loop and one asyncpg connection:
each ``tx.execute`` runs its statement there (the statement translated once by
``dialect.pg`` and prepared once per connection) and returns when PostgreSQL
answered. The caller's event loop is free meanwhile; the batch is one hop to the
writer thread, as on SQLite. Reads go through an asyncpg pool on the caller's loop
and see committed data only.

Positions (invariants 2 and 3 of ``chatd/store/base.py``). PostgreSQL runs writers
on several connections and machines at once, and a sequence number is not commit
ordered: a reader could see pos 11 commit before pos 10 and skip 10 forever. So a
batch takes the ``counters`` row ``pos`` with ``SELECT ... FOR UPDATE`` as its first
statement and holds it to COMMIT: batches that write (from every chatd process)
commit one at a time, in position order, as SQLite's ``BEGIN IMMEDIATE`` makes them.
Taking it first, not at the first message, also orders every other row lock after
it, so two batches cannot deadlock on a conversation row and the counter. The cost
is that writing batches never overlap; group commit is what pays for it (one
batch carries many messages), and reads are not serialised at all. The reasoning
and the alternative (per-writer positions with a "persisted up to" watermark, as
Synapse's multi-writer streams do) are in docs/design.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg

from ..base import StoreUnavailable, Write
from ..sqlite.engine import Tx, run_ops
from ..sqlite.messages import append
from .dialect import pg, pg_lookup, pg_rows
from .schema import check_version

T = TypeVar("T")
_CONTROL = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")
POS_LOCK = "SELECT value FROM counters WHERE name = 'pos' FOR UPDATE"
# Tx.flush in one statement: the position, the conversations' counters and the read
# cursors the batch moved (data-modifying CTEs run whether or not anything reads them)
FLUSH = (
    "WITH p AS (UPDATE counters SET value = $1::bigint WHERE name = 'pos' AND $1::bigint IS NOT NULL),"
    " r AS (UPDATE members mb SET read_seq = GREATEST(mb.read_seq, u.seq)"
    ' FROM unnest($5::bigint[], $6::text[], $7::text[]) AS u(seq, conv, usr) WHERE mb.conv = u.conv AND mb."user" = u.usr)'
    " UPDATE conversations c SET last_seq = u.seq, last_pos = u.pos"
    " FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(seq, pos, id) WHERE c.id = u.id"
)
# the seq counters of the batch's conversations and, as the row with no id, the position
COUNTERS = (
    "SELECT id, last_seq, last_pos FROM conversations WHERE id = ANY($1::text[])"
    " UNION ALL SELECT NULL, value, NULL FROM counters WHERE name = 'pos'"
)
STATEMENTS = 512  # prepared statements the writer keeps: some texts vary (IN lists), the server's memory must not
# InternalClientError: what asyncpg raises for a pooled connection whose server was
# killed while it was idle ("cannot switch to state ...; another operation is in
# progress"): as lost as the others (seen in the restart test, 1 run in ~8)
ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


def lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection is gone (the server restarted, a network
    failure), rather than that a statement failed on a working connection."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith(("08", "57"))  # connection exception, operator intervention (shutdown)
    return isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError, asyncio.TimeoutError))


class PgCursor:
    """The part of sqlite3's cursor the write ops use."""

    __slots__ = ("_i", "_rows", "lastrowid", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self._i = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        if self._i >= len(self._rows):
            return None
        self._i += 1
        return self._rows[self._i - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._i :]
        self._i = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _count(status: str | None) -> int:
    """Rows affected, from a command tag ("INSERT 0 1", "UPDATE 3", "SELECT 2")."""
    if not status:
        return -1
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class PgTx(Tx):
    """One batch transaction on the writer's connection (see sqlite's Tx for the counters)."""

    __slots__ = ("_loop", "_stmts")
    RUNS_MANY = True  # a statement is a round trip: a batch's texts are one INSERT (messages.append_many)

    def __init__(self, conn: asyncpg.Connection, loop: asyncio.AbstractEventLoop, stmts: dict[str, Any]) -> None:
        super().__init__(conn)
        self._loop = loop
        self._stmts = stmts

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def _prepared(self, sql: str) -> Any:
        stmt = self._stmts.get(sql)
        if stmt is None:
            if len(self._stmts) >= STATEMENTS:  # the oldest goes (asyncpg closes it on the server once unused)
                del self._stmts[next(iter(self._stmts))]
            stmt = self._stmts[sql] = self._run(self.conn.prepare(sql))
        return stmt

    def execute(self, sql: str, args: Sequence[Any] = ()) -> PgCursor:
        if not args and sql.lstrip()[:9].upper().startswith(_CONTROL):
            self._run(self.conn.execute(sql))
            return PgCursor([], -1, None)
        st = pg(sql)
        stmt = self._prepared(st.sql)
        rows = self._run(stmt.fetch(*args))
        count = _count(stmt.get_statusmsg())
        if st.rowid is not None:
            return PgCursor([], count, rows[0][0] if rows else None)
        return PgCursor(rows, count, None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._run(self.conn.executemany(pg(sql).sql, rows))

    def lookup(
        self, table: str, keys: tuple[str, ...], values: tuple[str, ...], wanted: Sequence[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """One statement for every key (sqlite's Tx reads them one by one)."""
        if not wanted:
            return {}
        rows = self._run(self._prepared(pg_lookup(table, keys, values)).fetch(*_columns(wanted, len(keys))))
        n = len(keys)
        return {tuple(r[:n]): tuple(r[n:]) for r in rows}

    def insert_rows(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """One INSERT of every row, its columns as arrays (executemany runs one each)."""
        if rows:
            self._run(self._prepared(pg_rows(sql)).fetch(*_columns(rows)))

    def head(self) -> int:
        if self._pos is not None and not self._pos_dirty:
            return self._pos  # read under the lock at BEGIN and written back since: what the row says
        return int(self._run(self._prepared(pg("SELECT value FROM counters WHERE name = 'pos'").sql).fetchval()))

    def begin(self, ops: Sequence[Write[Any]]) -> None:
        """BEGIN, the position counter taken FOR UPDATE and held to COMMIT (the batch's
        first lock), then its value and the seq counters of every conversation the
        batch's texts go to: two round trips (``alloc`` would read the counters one
        statement each; a batch of texts to 200 circles is 200 round trips fewer)."""
        self._run(self.conn.execute(f"BEGIN; {POS_LOCK}"))
        convs = list({op.args[0] for op in ops if op.fn is append})
        for conv, seq, pos in self._run(self._prepared(COUNTERS).fetch(convs)):
            if conv is None:
                self._pos = int(seq)
            else:
                self._seqs[conv] = [seq, pos]

    def flush(self) -> None:
        """The batch's counters and read cursors in one statement (Tx.flush writes them
        with one statement per conversation and per member)."""
        if not (self._pos_dirty or self._seqs or self._reads):
            return
        seqs = [(seq, pos, conv) for conv, (seq, pos) in self._seqs.items()]
        reads = [(seq, conv, user) for (conv, user), seq in self._reads.items()]
        pos = self._pos if self._pos_dirty else None
        self._run(self._prepared(FLUSH).fetch(pos, *_columns(seqs, 3), *_columns(reads, 3)))
        self._pos_dirty = False
        self._seqs.clear()
        self._reads.clear()


class PgEngine:
    """A PostgreSQL database: the writer thread and the reader pool."""

    def __init__(self, url: str, *, readers: int = 4) -> None:
        self.url = url
        self.readers = readers
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chatd-pg-writer")
        self._local = threading.local()
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._in_writer(self._open_writer)
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.readers)
        except ERRORS as exc:
            raise StoreUnavailable(f"cannot open {_safe(self.url)}: {exc}") from exc

    def _open_writer(self) -> None:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(asyncpg.connect(self.url))
        try:
            loop.run_until_complete(check_version(conn))
        except BaseException:
            _close(loop, conn)
            raise
        self._local.conn = conn
        self._local.stmts = {}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        try:
            await self._in_writer(self._close_writer)
        finally:
            self._executor.shutdown(wait=True)

    def _close_writer(self) -> None:
        conn = getattr(self._local, "conn", None)
        loop = getattr(self._local, "loop", None)
        if conn is not None and loop is not None:
            _close(loop, conn)
        self._local.conn = None
        if loop is not None:
            loop.close()
            self._local.loop = None

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- writes ------------------------------------------------------------

    async def run_batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        """As the SQLite engine's: every op's result (or the exception it raised after
        its savepoint rolled back) and the highest committed ``pos``; StoreUnavailable
        when the transaction as a whole failed and nothing was committed."""
        try:
            return await self._in_writer(self._batch, ops)
        except StoreUnavailable:
            raise
        except (*ERRORS, RuntimeError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _batch(self, ops: Sequence[Write[Any]]) -> tuple[list[Any], int]:
        conn: asyncpg.Connection | None = getattr(self._local, "conn", None)
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None:
            raise StoreUnavailable("store is closed")
        if conn is None or conn.is_closed():
            if conn is not None:
                _close(loop, conn)
            self._open_writer()  # the server restarted, or the connection broke in an earlier batch
            conn = self._local.conn
        tx = PgTx(conn, loop, self._local.stmts)
        try:
            tx.begin(ops)
            results = run_ops(tx, ops)
            head = tx.head()
            tx.execute("COMMIT")
        except BaseException as exc:
            broken = lost(exc) or conn.is_closed()
            if not broken and conn.is_in_transaction():
                try:
                    tx.execute("ROLLBACK")
                except ERRORS:
                    broken = True
            if broken:  # the next batch connects again
                _close(loop, conn)
                self._local.conn = None
            raise
        return results, head

    # -- reads -------------------------------------------------------------

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        if self._pool is None:
            raise StoreUnavailable("store is closed")
        sql = pg(sql).sql
        try:
            try:
                return list(await self._pool.fetch(sql, *args))
            except ERRORS as exc:
                if not lost(exc):
                    raise
                # a pooled connection from before a server restart: the pool drops it; once more on a new one
                return list(await self._pool.fetch(sql, *args))
        except ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None


def _columns(rows: Sequence[Sequence[Any]], n: int | None = None) -> list[list[Any]]:
    """Rows as one list per column (``n`` of them: the rows may be none), the arrays an
    ``unnest`` statement takes."""
    if not rows:
        return [[] for _ in range(n or 0)]
    return [list(col) for col in zip(*rows, strict=True)]


def _close(loop: asyncio.AbstractEventLoop, conn: asyncpg.Connection) -> None:
    """Close the writer's connection on its loop; a broken one is aborted, and the loop
    runs once more so that the transport is really gone."""
    try:
        loop.run_until_complete(conn.close(timeout=5))
    except ERRORS:
        conn.terminate()
        loop.run_until_complete(asyncio.sleep(0))


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url
