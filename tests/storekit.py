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


def join(s: Store, conv: str, user: str) -> Write[tuple[ConvRecord, SystemMessage]]:
    return s.members.join(conv, user, AUTHOR, TS, lambda kind: KINDS.circle.require(conv, kind))


async def seqs(s: Store, conv: str) -> list[int]:
    msgs, _ = await s.messages.history(conv, None, 100)
    return [m["seq"] for m in msgs]
