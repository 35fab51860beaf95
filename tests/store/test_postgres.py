"""What is PostgreSQL's own in the PostgreSQL store (the shared behaviour is the
contract suite's): migrations applied only by ``chatd migrate``, a server refusing a
schema it was not built for, ``new-epoch``, and a batch across a server restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
from pgproc import PgProc
from storekit import new_circle, one, text
from support import read_db

from chatd.cli import main as cli
from chatd.store import StoreUnavailable, open_store
from chatd.store.postgres import PostgresStore, prepare_postgres
from chatd.store.sqlite.schema import MIGRATIONS


async def test_a_server_refuses_an_unmigrated_store_until_chatd_migrate(
    pg_server: PgProc, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_server.create_db()
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    with pytest.raises(StoreUnavailable, match=r"version 0, this chatd needs \d+: run `chatd migrate"):
        await store.open()
    await store.close()
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, cli, ["migrate", "--db", url]) == 0
    assert f"is at schema version {len(MIGRATIONS)}" in capsys.readouterr().out
    assert await loop.run_in_executor(None, cli, ["migrate", "--db", url]) == 0  # again: nothing to do
    assert read_db(url, "SELECT version FROM chatd_schema") == [(len(MIGRATIONS),)]
    store = open_store(url)
    await store.open()
    try:
        conv = await new_circle(store)
        ack = await one(store, text(store, conv, "alice", "c1"))
        assert (ack.seq, ack.dup) == (2, False)
    finally:
        await store.close()


def test_processes_migrating_at_once_apply_each_version_once(pg_server: PgProc) -> None:
    url = pg_server.create_db()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        versions = list(ex.map(lambda _: prepare_postgres(url), range(4)))
    assert versions == [len(MIGRATIONS)] * 4
    assert read_db(url, "SELECT version FROM chatd_schema") == [(len(MIGRATIONS),)]
    assert read_db(url, "SELECT name FROM counters WHERE name = 'pos'") == [("pos",)]  # seeded once


async def test_a_server_refuses_a_schema_newer_than_itself(pg_server: PgProc) -> None:
    url = pg_server.create_db(migrated=True)
    pg_server.psql("UPDATE chatd_schema SET version = 999", db=url.rsplit("/", 1)[1])
    store = open_store(url)
    with pytest.raises(StoreUnavailable, match="version 999, newer than this chatd's"):
        await store.open()
    await store.close()


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("redis://127.0.0.1/0", "redis:// is not supported"),
        ("postgresql:///chatd", "needs a host"),
        ("postgresql://chatd@127.0.0.1:notaport/x", "not a PostgreSQL URL"),
        ("postgresql://chatd@127.0.0.1:1/x", "chatd migrate:"),  # nothing listens there
        ("x" * 5000, "chatd migrate:"),  # a SQLite path too long for the file system
    ],
)
def test_migrate_refuses_bad_locations_with_exit_2(db: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["migrate", "--db", db]) == 2
    assert says in capsys.readouterr().err


def test_migrate_refuses_a_role_the_server_does_not_know(pg_server: PgProc, capsys: pytest.CaptureFixture[str]) -> None:
    url = pg_server.create_db().replace("chatd@", "intruder@")
    assert cli(["migrate", "--db", url]) == 2
    assert 'role "intruder" does not exist' in capsys.readouterr().err


def test_migrate_creates_and_migrates_a_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new.db"
    assert cli(["migrate", "--db", str(db)]) == 0
    assert f"schema version {len(MIGRATIONS)}" in capsys.readouterr().out
    assert read_db(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]


def test_new_epoch_on_postgresql(pg_server: PgProc, capsys: pytest.CaptureFixture[str]) -> None:
    url = pg_server.create_db(migrated=True)
    (before,) = read_db(url, "SELECT value FROM meta WHERE name = 'epoch'")[0]
    assert cli(["new-epoch", "--db", url]) == 0
    printed = capsys.readouterr().out.strip()
    assert read_db(url, "SELECT value FROM meta WHERE name = 'epoch'") == [(printed,)]
    assert printed != before and len(printed) == 16


async def test_a_batch_fails_while_the_server_is_down_and_the_next_one_commits_after_it_restarts(
    pg_server: PgProc,
) -> None:
    url = pg_server.create_db(migrated=True)
    store = open_store(url)
    await store.open()
    try:
        conv = await new_circle(store)
        first = await one(store, text(store, conv, "alice", "c1"))
        pg_server.kill()
        with pytest.raises(StoreUnavailable):
            await store.run_batch([text(store, conv, "alice", "c2")])
        with pytest.raises(StoreUnavailable):
            await store.messages.head()
        pg_server.start()
        retry = await one(store, text(store, conv, "alice", "c2"))  # the client's retry, same cid
        assert (retry.seq, retry.dup) == (first.seq + 1, False)  # nothing of the failed batch was kept
        again = await one(store, text(store, conv, "alice", "c2"))
        assert again.dup and again.seq == retry.seq
        assert await store.messages.head() == retry.pos
    finally:
        await store.close()
        pg_server.start()


async def test_the_writer_keeps_a_bounded_number_of_prepared_statements(pg_server: PgProc) -> None:
    from chatd.store import Write
    from chatd.store.postgres.engine import STATEMENTS

    store = open_store(pg_server.create_db(migrated=True))
    await store.open()
    try:

        def many(tx: Any) -> int:
            return sum(int(tx.execute(f"SELECT {i} + ?", (1,)).fetchone()[0]) for i in range(STATEMENTS + 200))

        def prepared(tx: Any) -> int:
            return int(tx.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0])

        assert await one(store, Write(many)) == sum(range(1, STATEMENTS + 201))
        await one(store, Write(many))  # the statements dropped from the cache are closed on the server by now
        assert await one(store, Write(prepared)) <= STATEMENTS + 5
    finally:
        await store.close()
