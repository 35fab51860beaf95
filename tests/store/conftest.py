"""Store fixtures: one store per engine in ENGINES (storekit.py), each on a real
database: a SQLite file in the test's folder, or a fresh database on the session's
PostgreSQL server (tests/pgproc.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pgproc import PgProc
from storekit import ENGINES

from chatd.store import Store
from chatd.store.postgres import PostgresStore


@pytest.fixture(params=sorted([*ENGINES, "postgresql"]))
def engine(request: pytest.FixtureRequest) -> Callable[[Path, str], Store]:
    """A factory of stores of one engine: ``engine(tmp_path, name)`` (unopened).
    Two stores made with the same name share one database, as two processes do."""
    if request.param != "postgresql":
        return ENGINES[str(request.param)]
    server: PgProc = request.getfixturevalue("pg_server")
    server.start()  # a test may have killed it
    dbs: dict[tuple[Path, str], str] = {}

    def make(tmp: Path, name: str = "chatd.db") -> Store:
        if (tmp, name) not in dbs:
            dbs[(tmp, name)] = server.create_db(migrated=True)  # as `chatd migrate` leaves it
        return PostgresStore(dbs[(tmp, name)])

    return make


@pytest.fixture
async def store(engine: Callable[[Path, str], Store], tmp_path: Path) -> AsyncIterator[Store]:
    s = engine(tmp_path, "chatd.db")
    await s.open()
    yield s
    await s.close()
