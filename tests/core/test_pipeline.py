"""Group commit: commit callbacks in commit order, before the writer's future;
a stopped pipeline refuses; output corked around a batch's callbacks."""

from __future__ import annotations

import asyncio

import pytest
from chatd_protocol import Err, RequestError
from storekit import new_circle, text

from chatd.core.pipeline import Pipeline
from chatd.metrics import Metrics
from chatd.store.sqlite import SqliteStore


class Cork:
    def __init__(self) -> None:
        self.corked = False
        self.log: list[str] = []

    def cork(self) -> None:
        self.corked = True
        self.log.append("cork")

    def uncork(self) -> None:
        self.corked = False
        self.log.append("uncork")


async def test_on_commit_runs_in_commit_order_before_the_future(store: SqliteStore) -> None:
    conv = await new_circle(store)
    pipeline = Pipeline(store, Metrics(), max_batch=3)
    pipeline.start()
    seen: list[int] = []
    try:
        futs = [
            asyncio.ensure_future(pipeline.write(text(store, conv, "alice", f"o{i}"), lambda r: seen.append(r.seq)))
            for i in range(10)
        ]
        first = await futs[0]
        assert seen and seen[0] == first.seq
        await asyncio.gather(*futs)
    finally:
        await pipeline.stop()
    assert seen == list(range(2, 12))


async def test_callbacks_run_corked(store: SqliteStore) -> None:
    conv = await new_circle(store)
    cork = Cork()
    pipeline = Pipeline(store, Metrics(), cork)
    pipeline.start()
    corked_during: list[bool] = []
    try:
        await pipeline.write(text(store, conv, "alice", "c1"), lambda r: corked_during.append(cork.corked))
    finally:
        await pipeline.stop()
    assert corked_during == [True] and cork.log == ["cork", "uncork"]


async def test_refusals_reach_the_writer_and_others_commit(store: SqliteStore) -> None:
    conv = await new_circle(store)
    pipeline = Pipeline(store, Metrics())
    pipeline.start()
    try:
        ok, refused = await asyncio.gather(
            pipeline.write(text(store, conv, "alice", "fine")),
            pipeline.write(text(store, "c:404", "alice", "lost")),
            return_exceptions=True,
        )
    finally:
        await pipeline.stop()
    assert not isinstance(ok, BaseException) and ok.seq == 2
    assert isinstance(refused, RequestError) and refused.code == Err.NOT_FOUND


async def test_pipeline_refuses_after_stop(store: SqliteStore) -> None:
    pipeline = Pipeline(store, Metrics())
    pipeline.start()
    await pipeline.stop()
    with pytest.raises(RequestError) as info:
        pipeline.submit(text(store, "c:1", "alice", "x"))
    assert info.value.code == Err.UNAVAILABLE
