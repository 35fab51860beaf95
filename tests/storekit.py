"""What store tests share: the engines the contract suite runs against, on real
files (a PostgreSQL engine will add itself to ENGINES, started as a real
server), and helpers that write through the repository interfaces only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatd.kinds import default_kinds
from chatd.store import Store, Write
from chatd.store.records import SENDER_READS, Appended, ConvRecord, SystemMessage, pack
from chatd.store.sqlite import SqliteStore

AUTHOR = {"name": "Alice", "type": "owner", "badges": [], "roles": []}
TS = 1_763_900_000_000
KINDS = default_kinds()


def sqlite_engine(tmp: Path, name: str = "chatd.db") -> Store:
    return SqliteStore(str(tmp / name), sync="normal")


ENGINES: dict[str, Callable[[Path, str], Store]] = {"sqlite": sqlite_engine}


def text(s: Store, conv: str, sender: str, cid: str | None, body: str = "hi", ts: int = TS) -> Write[Appended]:
    return s.messages.append(conv, sender, cid, ts, pack({"a": AUTHOR, "t": body}), (SENDER_READS,))


async def one(s: Store, op: Write[Any]) -> Any:
    (result,), _ = await s.run_batch([op])
    if isinstance(result, BaseException):
        raise result
    return result


async def new_circle(s: Store, owner: str = "alice", name: str = "EV owners") -> str:
    circle = KINDS.circle
    rec, _ = await one(
        s,
        s.conversations.create(
            circle.name, circle.prefix, owner, AUTHOR, name, {"category": "city", "description": ""}, TS
        ),
    )
    assert isinstance(rec, ConvRecord)
    return rec.conv


def join(s: Store, conv: str, user: str) -> Write[tuple[ConvRecord, SystemMessage, int]]:
    return s.members.join(conv, user, AUTHOR, TS, lambda kind: KINDS.circle.require(conv, kind))


async def seqs(s: Store, conv: str) -> list[int]:
    msgs, _ = await s.messages.history(conv, None, 100)
    return [m["seq"] for m in msgs]


async def concurrent_sends(s: Store, n: int = 400) -> tuple[str, str, list[Appended], int]:
    """``n`` texts to two new circles, submitted at once through a pipeline of
    small batches: (circle a, circle b, the acks in submit order, the
    pipeline's head after them)."""
    import asyncio

    from chatd.core.pipeline import Pipeline
    from chatd.metrics import Metrics

    a = await new_circle(s)
    b = await new_circle(s)
    pipeline = Pipeline(s, Metrics(), max_batch=7)  # many small batches
    pipeline.start()
    try:
        results = await asyncio.gather(*(pipeline.write(text(s, a if i % 3 else b, f"u{i % 5}", f"c{i}")) for i in range(n)))
    finally:
        await pipeline.stop()
    return a, b, list(results), pipeline.head
