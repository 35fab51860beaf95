"""Store fixtures: one store per engine in ENGINES (storekit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from storekit import ENGINES

from chatd.store import Store


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Callable[[Path, str], Store]:
    """A factory of stores of one engine: ``engine(tmp_path, name)`` (unopened).
    Two stores made with the same name share one database, as two processes do."""
    return ENGINES[str(request.param)]


@pytest.fixture
async def store(engine: Callable[[Path, str], Store], tmp_path: Path) -> AsyncIterator[Store]:
    s = engine(tmp_path, "chatd.db")
    await s.open()
    yield s
    await s.close()
