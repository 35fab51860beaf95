"""Fixtures of the server test suite: an in-process chatd on a free loopback port
with a real SQLite file, and a factory of raw test clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterkit import session_cluster  # noqa: F401  (the fixture: one real 3+3 Redis Cluster per run, shared)
from pgproc import pg_server  # noqa: F401  (the fixture: one real PostgreSQL server per run)
from redisclusterproc import redis_cluster  # noqa: F401  (the fixture: a real 3+3 Redis Cluster per test)
from redisproc import redis_proc  # noqa: F401  (the fixture: a real redis-server per test)
from support import FakeClock, stop_app, token, url
from wsclient import WsClient

from chatd.app import App
from chatd.config import Config
from chatd.store import Store, open_store

ServerFactory = Callable[..., Awaitable[App]]
ClientFactory = Callable[..., Awaitable[WsClient]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the engine of the servers the tests start: a SQLite file in the test's folder (default), "
        "or a fresh database on one real PostgreSQL server for the run (tests/pgproc.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--store postgresql``, a test marked ``sqlite_only`` (it reads the SQLite
    file itself, or tests SQLite's own behaviour) is deselected and listed, not skipped."""
    if config.getoption("--store") != "postgresql":
        return
    keep = [i for i in items if i.get_closest_marker("sqlite_only") is None]
    dropped = [i for i in items if i.get_closest_marker("sqlite_only") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where the test's server keeps its store: a SQLite file (a Path), or with
    ``--store postgresql`` the URL of a fresh database (a str)."""
    if request.config.getoption("--store") == "postgresql":
        server = request.getfixturevalue("pg_server")
        server.start()
        return server.create_db(migrated=True)
    return tmp_path / "chatd.db"


@pytest.fixture
async def store(db_path: Any) -> AsyncIterator[Store]:
    """An opened store on the test's database (SQLite, or PostgreSQL with ``--store
    postgresql``), without a server (tests of the core over a real engine).
    tests/store/ has its own: one per engine."""
    s = open_store(str(db_path), sync="normal")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def make_server(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[ServerFactory]:
    """``await make_server(**config_overrides)``: a started App, stopped at teardown.

    The test's own redis-server, when it has one, is started first so that it is
    stopped last: pytest tears fixtures down in the reverse order of their setup,
    and servers stopped after their Redis wait out a presence update per socket
    (``Presence.stop``: up to 1 s each, one after another; 20 sockets were 20 s)."""
    if "redis_proc" in request.fixturenames:
        request.getfixturevalue("redis_proc")
    apps: list[App] = []

    async def make(**overrides: Any) -> App:
        cfg: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "db_path": str(db_path),
            "sync": "normal",  # fsync per commit is tested by the kill -9 test
            "ping_interval": None,
            # points pushes would interleave with what chat tests assert; the
            # points tests turn the worker on (the events are recorded anyway)
            "points": False,
            # creation quotas and DMs only to users the server has seen have tests
            # of their own (tests/e2e/test_quotas.py); elsewhere a test may create
            # as many circles and DMs as it needs, to users not connected yet
            "circles_per_hour": 0,
            "new_dms_per_hour": 0,
            "dm_unknown_users": True,
        }
        cfg.update(overrides)
        app = App(Config(**cfg))
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        with contextlib.suppress(Exception):
            await stop_app(app)


@pytest.fixture
async def server(make_server: ServerFactory) -> App:
    return await make_server()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[WsClient]]]:
    """``await clients(app, "alice")``: a client of ``app`` authenticated as alice.

    ``user=None`` gives an unauthenticated socket; ``encoding="json"`` the JSON
    subprotocol; ``type``, ``name``, ``badges``, ``roles``, ``ttl`` go into the token.
    Every client is closed at teardown, and none may have received a frame that
    does not decode.
    """
    made: list[WsClient] = []

    async def make(
        app: App | int,
        user: str | None = None,
        type: str = "owner",
        *,
        encoding: str = "msgpack",
        **token_kw: Any,
    ) -> WsClient:
        c = await WsClient.connect(url(app), encoding)
        made.append(c)
        if user is not None:
            await c.auth(token(user, type, **token_kw))
        return c

    yield make
    for c in made:
        await c.close()
    for c in made:
        assert not c.bad_frames, f"the server sent undecodable frames: {c.bad_frames}"


@pytest.fixture
def connect(server: App, clients: ClientFactory) -> ClientFactory:
    """``await connect("alice")``: a client of the default ``server``."""

    async def make(user: str | None = None, type: str = "owner", **kw: Any) -> WsClient:
        return await clients(server, user, type, **kw)

    return make


@pytest.fixture(params=["msgpack", "json"])
def encoding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    yield FakeClock()
